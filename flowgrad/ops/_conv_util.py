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
import threading
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import AttrError
from ..op import Attr, ShapeError, format_shape

#: Target size (in elements) of one chunk of the unfolded input: small enough to stay in the
#: L2/L3 cache between the copy that builds it and the matrix product that reads it.
CHUNK_ELEMENTS = 1 << 20

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


_SCRATCH = threading.local()
def scratch(name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """A reusable per-thread buffer for a transient array (an unfolded chunk).

    Fresh multi-megabyte arrays cost page faults on every call (glibc returns large freed
    blocks to the system); the unfolded chunks never leave the op, so one buffer per thread and
    purpose is reused across chunks and calls.  Bounded by :data:`CHUNK_ELEMENTS`-sized chunks.
    """
    pool = getattr(_SCRATCH, "pool", None)
    if pool is None:
        pool = _SCRATCH.pool = {}
    dtype = np.dtype(dtype)
    size = math.prod(shape)
    buf = pool.get((name, dtype))
    if buf is None or buf.size < size:
        buf = pool[(name, dtype)] = np.empty(size, dtype=dtype)
    return buf[:size].reshape(shape)


def pad_spatial(x: np.ndarray, g: Geometry, value: float = 0.0,
                out: np.ndarray | None = None) -> np.ndarray:
    """``x`` with its spatial axes padded by ``g.begin`` / ``g.end`` (no copy if nothing to pad),
    written into ``out`` (a scratch buffer of the padded shape) when given."""
    if not g.padded:
        return x
    nd = g.nd
    shape = x.shape[:-nd] + tuple(n + b + e for n, b, e in zip(x.shape[-nd:], g.begin, g.end))
    if out is None:
        out = np.full(shape, value, dtype=x.dtype) if value else np.zeros(shape, dtype=x.dtype)
    else:
        out.fill(value)
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
    """Copy windows ``view[start:stop]`` (N, C, *out, *kernel) to (C, *kernel, n, *out).

    Channel-and-tap major, so that for each group the unfolded chunk is one
    (C/group * taps, n * positions) matrix and a whole chunk is a single BLAS product.
    """
    part = view[start:stop]
    perm = (1,) + tuple(range(2 + nd, 2 + 2 * nd)) + (0,) + tuple(range(2, 2 + nd))
    part = part.transpose(perm)
    cols = scratch("cols", part.shape, part.dtype)
    np.copyto(cols, part)
    return cols


def col2im_add(target: np.ndarray, cols: np.ndarray, g: Geometry) -> None:
    """Scatter-add ``cols`` (C, *kernel, n, *out) into the padded ``target`` (n, C, *padded).

    The adjoint of :func:`im2col`; one strided, vectorised add per kernel tap.
    """
    target = target.swapaxes(0, 1)
    for tap in np.ndindex(*g.kernel):
        add_into(target[tap_slices(g, tap, target.ndim)], cols[(slice(None),) + tap])


def add_into(view: np.ndarray, values: np.ndarray) -> None:
    """``view += values`` without the copy-back that ``a[index] += values`` costs."""
    np.add(view, values, out=view)


def spatial_check(op, x, min_spatial: int = 1, max_spatial: int | None = None) -> int:
    """Number of spatial axes of an (N, C, *spatial) input, or a clear ShapeError."""
    nd = x.ndim - 2
    if nd < min_spatial or (max_spatial is not None and nd > max_spatial):
        raise ShapeError(f"{op.type} needs an input (N, C, *spatial) with "
                         f"{min_spatial}..{max_spatial or 'any'} spatial axes, got "
                         f"{format_shape(x.shape)}")
    return nd


class WindowUnfold:
    """im2col for any window geometry, from a zero-copy sliding-window view.

    The interface shared with :class:`WideRows`: ``source`` pads the input, ``im2col`` copies
    a batch chunk to (C, taps, n, positions), ``col2im_add`` is its adjoint, and ``to_output`` /
    ``from_output`` convert between the computed grid (n, O, positions) and (n, O, *out).
    """

    def __init__(self, g: Geometry, shape: tuple[int, ...]):
        self.g = g
        self.shape = shape
        self.positions = math.prod(g.out)

    def source(self, x: np.ndarray, reuse: bool = False) -> np.ndarray:
        """The padded input; with ``reuse``, in a scratch buffer (valid until the next call)."""
        if not reuse or not self.g.padded:
            return pad_spatial(x, self.g)
        g = self.g
        shape = x.shape[:2] + tuple(n + b + e for n, b, e in zip(x.shape[2:], g.begin, g.end))
        return pad_spatial(x, g, out=scratch("source", shape, x.dtype))

    def grad_buffer(self, src: np.ndarray) -> np.ndarray:
        return np.zeros(src.shape, dtype=src.dtype)

    def input_grad(self, gsrc: np.ndarray) -> np.ndarray:
        g = self.g
        return gsrc[interior(self.shape[2:], g, len(self.shape))] if g.padded else gsrc

    def im2col(self, src: np.ndarray, start: int, stop: int) -> np.ndarray:
        return im2col(windows(src, self.g), start, stop, self.g.nd)

    def col2im_add(self, gsrc: np.ndarray, cols: np.ndarray, start: int, stop: int) -> None:
        g = self.g
        col2im_add(gsrc[start:stop], cols.reshape((cols.shape[0],) + g.kernel
                                                  + (stop - start,) + g.out), g)

    def to_output(self, values: np.ndarray) -> np.ndarray:
        return values.reshape(values.shape[:2] + self.g.out)

    def from_output(self, gy: np.ndarray, start: int, stop: int) -> np.ndarray:
        return gy[start:stop].reshape(stop - start, gy.shape[1], -1)


class WideRows(WindowUnfold):
    """The im2col layout for stride-1 windows: every tap is one contiguous run per image.

    With unit strides, output position ``(o0, o1, ...)`` reads input cell ``(o0 + t0 d0,
    o1 + t1 d1, ...)``.  Computing the output on a grid as wide as the *padded* input in every
    axis but the first (the extra columns are garbage, cropped afterwards) makes the cells one
    tap reads, in flattened order, a single contiguous range: the unfolding is ``taps``
    memcpy-like slices instead of a gather of short rows.  It costs ``padded width / output
    width`` more arithmetic, and pays off when rows are short (small images), as numpy copies
    short strided rows slowly.  Gradients entering on the wide grid are zero in the garbage
    columns, so those columns add nothing to any gradient.
    """

    def __init__(self, g: Geometry, shape: tuple[int, ...]):
        super().__init__(g, shape)
        self.padded = tuple(n + b + e for n, b, e in zip(shape[2:], g.begin, g.end))
        self.flat = math.prod(self.padded)
        steps = [math.prod(self.padded[i + 1:]) for i in range(len(self.padded))]
        self.offsets = [sum(t * d * s for t, d, s in zip(tap, g.dilations, steps))
                        for tap in np.ndindex(*g.kernel)]
        self.wide = (g.out[0],) + self.padded[1:]          # the output grid computed
        self.positions = math.prod(self.wide)
        self.length = max(self.flat, max(self.offsets) + self.positions)

    @staticmethod
    def worthwhile(g: Geometry, shape: tuple[int, ...], rows: int) -> bool:
        """Unit strides, and extra work the faster copy pays for.

        Per unfolded value the product does ``rows`` (output channels per group)
        multiply-adds, so the copy's share of the cost is about 1/rows — but a gather of short
        rows costs several times a memcpy per value, so the extra arithmetic allowed is
        40/rows, at most 1.5x.  Measured layer by layer: LeNet's 14×14 layer (32 rows, +29 %)
        and ResNet's 14×14 ones (256 rows, +14 %: 7 % faster at batch 1) are faster wide,
        ResNet's 7×7 ones (512 rows, +29 %) 16 % faster without.
        """
        if any(s != 1 for s in g.strides) or g.nd < 2:
            return False
        padded = tuple(n + b + e for n, b, e in zip(shape[2:], g.begin, g.end))
        extra = min(1.5, 1 + 40 / rows)
        return g.out[0] * math.prod(padded[1:]) <= extra * math.prod(g.out)

    def source(self, x: np.ndarray, reuse: bool = False) -> np.ndarray:
        """(N, C, length): the padded input flattened, zero past its end; with ``reuse``, in a
        scratch buffer (valid until the next call)."""
        shape = x.shape[:2] + (self.length,)
        if reuse:
            out = scratch("source", shape, x.dtype)
            out.fill(0)
        else:
            out = np.zeros(shape, dtype=x.dtype)
        grid = out[..., :self.flat].reshape(x.shape[:2] + self.padded)
        grid[interior(x.shape[2:], self.g, x.ndim)] = x
        return out

    def input_grad(self, gsrc: np.ndarray) -> np.ndarray:
        grid = gsrc[..., :self.flat].reshape(gsrc.shape[:2] + self.padded)
        return grid[interior(self.shape[2:], self.g, len(self.shape))]

    def im2col(self, src: np.ndarray, start: int, stop: int) -> np.ndarray:
        part = src[start:stop].swapaxes(0, 1)
        cols = scratch("cols", (src.shape[1], len(self.offsets), stop - start, self.positions),
                       src.dtype)
        for t, off in enumerate(self.offsets):
            cols[:, t] = part[..., off:off + self.positions]
        return cols

    def col2im_add(self, gsrc: np.ndarray, cols: np.ndarray, start: int, stop: int) -> None:
        target = gsrc[start:stop].swapaxes(0, 1)
        cols = cols.reshape(cols.shape[0], len(self.offsets), stop - start, self.positions)
        for t, off in enumerate(self.offsets):
            add_into(target[..., off:off + self.positions], cols[:, t])

    def to_output(self, values: np.ndarray) -> np.ndarray:
        grid = values.reshape(values.shape[:2] + self.wide)
        return grid[(slice(None),) * 2 + tuple(slice(0, o) for o in self.g.out)]

    def from_output(self, gy: np.ndarray, start: int, stop: int) -> np.ndarray:
        out = scratch("wide", (stop - start, gy.shape[1]) + self.wide, gy.dtype)
        out[...] = 0
        out[(slice(None),) * 2 + tuple(slice(0, o) for o in self.g.out)] = gy[start:stop]
        return out.reshape(out.shape[:2] + (-1,))


def unfolder(g: Geometry, shape: tuple[int, ...], rows: int) -> WindowUnfold:
    """The faster im2col strategy for this geometry, input shape and number of output channels
    per group."""
    return WideRows(g, shape) if WideRows.worthwhile(g, shape, rows) else WindowUnfold(g, shape)
