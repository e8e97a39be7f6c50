"""Window geometry, im2col and col2im shared by the convolution and pooling families.

Why one module: conv, conv_transpose, max/avg pooling and their backwards all walk the same
windows — ``kernel`` taps spaced ``dilations`` apart, windows ``strides`` apart, over an input
padded by ONNX-style ``pads`` (all begins, then all ends) or by ``auto_pad``.  Getting the output
size and the SAME_UPPER / SAME_LOWER / ceil_mode arithmetic right once keeps the ops short.

Speed: the unfolded ("im2col") buffer is built from a zero-copy
:func:`~numpy.lib.stride_tricks.sliding_window_view` and copied one batch *chunk* at a time, in
the layout the following matrix product wants, so that BLAS does the arithmetic while the buffer
stays small enough to live in cache (a chunk is about :data:`CHUNK_ELEMENTS` floats).  The
scatter-add back (col2im) loops only over the kernel taps, each step a vectorised strided add.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import AttrError
from ..op import Attr, ShapeError, format_shape

#: Target size (in elements) of one chunk of the unfolded input: small enough to stay in the
#: L2/L3 cache between the copy that builds it and the matrix product that reads it.
CHUNK_ELEMENTS = 1 << 19

AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")

WINDOW_ATTRS = {
    "kernel_shape": Attr("ints", (), doc="window size per spatial axis (conv: taken from W)"),
    "strides": Attr("ints", (), doc="step between windows per spatial axis (default 1)"),
    "dilations": Attr("ints", (), doc="spacing of the taps inside a window (default 1)"),
    "pads": Attr("ints", (), doc="ONNX order: all begins, then all ends (default 0)"),
    "auto_pad": Attr("str", "NOTSET", choices=AUTO_PADS,
                     doc="SAME_UPPER / SAME_LOWER: output = ceil(input / stride), the odd pad "
                         "at the end (UPPER) or the beginning (LOWER); VALID: no padding"),
}


def check_window_attrs(op) -> None:
    """Attribute checks common to windowed ops (positivity; explicit pads vs auto_pad)."""
    for name in ("kernel_shape", "strides", "dilations"):
        if any(v < 1 for v in getattr(op, name)):
            raise AttrError(f"{op.type}: every entry of '{name}' must be >= 1, got "
                            f"{list(getattr(op, name))}", attr=name)
    if any(p < 0 for p in op.pads):
        raise AttrError(f"{op.type}: 'pads' must be >= 0, got {list(op.pads)}", attr="pads")
    if len(op.pads) % 2:
        raise AttrError(f"{op.type}: 'pads' holds all begins then all ends, so it needs an even "
                        f"number of entries; got {list(op.pads)}", attr="pads")
    if op.pads and any(op.pads) and op.auto_pad != "NOTSET":
        raise AttrError(f"{op.type}: give either 'pads' or auto_pad={op.auto_pad!r}, not both",
                        attr="pads")


def per_axis(op, name: str, nd: int, fill: int) -> tuple[int, ...]:
    """Attribute ``name`` with one entry per spatial axis (``fill`` when not given)."""
    value = tuple(getattr(op, name))
    if not value:
        return (fill,) * nd
    if len(value) != nd:
        raise ShapeError(f"{op.type}: '{name}' has {len(value)} entries but the input has "
                         f"{nd} spatial axes")
    return value


@dataclass(frozen=True)
class Geometry:
    """Everything about one windowed op on one input shape.

    ``begin`` / ``end`` are the pads actually applied (``end`` includes the extra room a
    ceil_mode window needs past the declared pads, ``extra``), ``out`` the output sizes.
    """

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    begin: tuple[int, ...]
    end: tuple[int, ...]
    extra: tuple[int, ...]
    out: tuple[int, ...]

    @property
    def nd(self) -> int:
        return len(self.kernel)

    @property
    def taps(self) -> int:
        return math.prod(self.kernel)

    @property
    def padded(self) -> bool:
        return any(self.begin) or any(self.end)


def geometry(op, sizes: tuple[int | None, ...], kernel: tuple[int, ...],
             ceil_mode: bool = False) -> Geometry:
    """Resolve pads and output sizes of a windowed op on spatial ``sizes`` (None = unknown)."""
    nd = len(sizes)
    strides = per_axis(op, "strides", nd, 1)
    dilations = per_axis(op, "dilations", nd, 1)
    pads = tuple(op.pads) if op.pads else (0,) * (2 * nd)
    if len(pads) != 2 * nd:
        raise ShapeError(f"{op.type}: 'pads' needs {2 * nd} entries (begins then ends) for "
                         f"{nd} spatial axes, got {list(pads)}")
    begin, end, extra, out = [], [], [], []
    for i, n in enumerate(sizes):
        k, s, d = kernel[i], strides[i], dilations[i]
        eff = (k - 1) * d + 1
        if op.auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            if n is None:
                begin.append(0), end.append(0), extra.append(0), out.append(None)
                continue
            o = -(-n // s)
            total = max(0, (o - 1) * s + eff - n)
            small, big = total // 2, total - total // 2
            b, e = (small, big) if op.auto_pad == "SAME_UPPER" else (big, small)
        else:
            b, e = (0, 0) if op.auto_pad == "VALID" else (pads[i], pads[i + nd])
            if n is None:
                begin.append(b), end.append(e), extra.append(0), out.append(None)
                continue
            span = n + b + e - eff
            if span < 0:
                raise ShapeError(f"{op.type}: the window (kernel {k}, dilation {d}) is larger "
                                 f"than spatial axis {i} of size {n} padded by {b}+{e}")
            if ceil_mode:
                o = -(-span // s) + 1
                if (o - 1) * s >= n + b:   # the last window would start in the end padding
                    o -= 1
            else:
                o = span // s + 1
        need = (o - 1) * s + eff - (n + b + e)
        begin.append(b), end.append(e + max(0, need)), extra.append(max(0, need)), out.append(o)
    return Geometry(tuple(kernel), strides, dilations, tuple(begin), tuple(end), tuple(extra),
                    tuple(out))


def pad_spatial(x: np.ndarray, g: Geometry, value: float = 0.0) -> np.ndarray:
    """``x`` with its spatial axes padded by ``g.begin`` / ``g.end`` (no copy if nothing to pad)."""
    if not g.padded:
        return x
    nd = g.nd
    shape = x.shape[:-nd] + tuple(n + b + e for n, b, e in zip(x.shape[-nd:], g.begin, g.end))
    out = np.full(shape, value, dtype=x.dtype) if value else np.zeros(shape, dtype=x.dtype)
    out[interior(x.shape[-nd:], g, x.ndim)] = x
    return out


def interior(sizes, g: Geometry, ndim: int) -> tuple:
    """The index of the unpadded region inside a padded array."""
    return (slice(None),) * (ndim - g.nd) + tuple(
        slice(b, b + n) for b, n in zip(g.begin, sizes))


def tap_slices(g: Geometry, tap: tuple[int, ...], ndim: int) -> tuple:
    """The index, into the padded input, of kernel tap ``tap`` for every output position."""
    return (slice(None),) * (ndim - g.nd) + tuple(
        slice(t * d, t * d + s * (o - 1) + 1, s)
        for t, d, s, o in zip(tap, g.dilations, g.strides, g.out))


def windows(xp: np.ndarray, g: Geometry) -> np.ndarray:
    """Zero-copy view ``(..., *out, *kernel)`` of the windows of padded ``xp``."""
    nd = g.nd
    eff = tuple((k - 1) * d + 1 for k, d in zip(g.kernel, g.dilations))
    view = sliding_window_view(xp, eff, axis=tuple(range(xp.ndim - nd, xp.ndim)))
    index = (slice(None),) * (xp.ndim - nd) + tuple(
        slice(0, s * (o - 1) + 1, s) for s, o in zip(g.strides, g.out)) + tuple(
        slice(None, None, d) for d in g.dilations)
    return view[index]


def chunks(n: int, per_item: int):
    """Batch ranges ``(start, stop)`` whose unfolded size is about :data:`CHUNK_ELEMENTS`."""
    step = max(1, CHUNK_ELEMENTS // max(1, per_item))
    return [(i, min(n, i + step)) for i in range(0, n, step)]


def im2col(view: np.ndarray, start: int, stop: int, nd: int) -> np.ndarray:
    """Copy windows ``view[start:stop]`` (N, C, *out, *kernel) to (n, C, *kernel, *out)."""
    part = view[start:stop]
    c_axes = part.ndim - 2 * nd
    perm = tuple(range(c_axes)) + tuple(range(c_axes + nd, c_axes + 2 * nd)) + tuple(
        range(c_axes, c_axes + nd))
    return np.ascontiguousarray(part.transpose(perm))


def col2im_add(target: np.ndarray, cols: np.ndarray, g: Geometry) -> None:
    """Scatter-add ``cols`` (n, C, *kernel, *out) into the padded ``target`` (n, C, *padded).

    The adjoint of :func:`im2col`; one strided, vectorised add per kernel tap.
    """
    lead = cols.ndim - 2 * g.nd
    for tap in np.ndindex(*g.kernel):
        target[tap_slices(g, tap, target.ndim)] += cols[(slice(None),) * lead + tap]


def spatial_check(op, x, min_spatial: int = 1, max_spatial: int | None = None) -> int:
    """Number of spatial axes of an (N, C, *spatial) input, or a clear ShapeError."""
    nd = x.ndim - 2
    if nd < min_spatial or (max_spatial is not None and nd > max_spatial):
        raise ShapeError(f"{op.type} needs an input (N, C, *spatial) with "
                         f"{min_spatial}..{max_spatial or 'any'} spatial axes, got "
                         f"{format_shape(x.shape)}")
    return nd
