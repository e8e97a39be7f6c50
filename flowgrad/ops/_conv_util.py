"""Window geometry, im2col and col2im shared by the convolution and pooling families.

Why one module: conv, conv_transpose, max/avg pooling and their backwards all walk the same
windows — ``kernel`` taps spaced ``dilations`` apart, windows ``strides`` apart, over an input
padded by ONNX-style ``pads`` (all begins, then all ends) or by ``auto_pad``.  Getting the output
size and the SAME_UPPER / SAME_LOWER / ceil_mode arithmetic right once keeps the ops short.

Speed: the unfolded ("im2col") buffer is built by a compiled kernel
(``ctx.backend.kernels.im2col``, :mod:`flowgrad.kernels.conv`) straight from the unpadded input,
one batch *chunk* at a time, in the layout the following matrix product wants, so that BLAS does
the arithmetic while the buffer stays small enough to live in cache (a chunk is about
:data:`CHUNK_ELEMENTS` values).  Its adjoint (col2im) gathers each input row of the gradient
from the unfolded rows that read it and writes it once.  Kernels see every input as three
spatial axes (:meth:`Geometry.as3d`, :func:`as5d`).
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

from ..errors import AttrError
from ..op import Attr, ShapeError, format_shape

#: Target size (in elements) of one chunk of the unfolded input: small enough to stay in the
#: L2/L3 cache between the copy that builds it and the matrix product that reads it.
CHUNK_ELEMENTS = 1 << 18

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

    def as3d(self) -> tuple[tuple[int, int, int], ...]:
        """``(kernel, strides, dilations, begin)`` on three spatial axes, as the kernels take
        them: missing leading axes have size 1, stride 1, dilation 1, no padding."""
        lead = 3 - self.nd
        return ((1,) * lead + self.kernel, (1,) * lead + self.strides,
                (1,) * lead + self.dilations, (0,) * lead + self.begin)

    @property
    def out3(self) -> tuple[int, int, int]:
        return (1,) * (3 - self.nd) + self.out


#: resolved geometries by (op type, window attributes, sizes, kernel, ceil_mode): a forward at
#: batch 1 resolves the same few geometries on every call, and resolving one costs ~9 us (a
#: mobile net's 60 convs: half a millisecond a forward)
_GEOMETRIES: dict = {}


def geometry(op, sizes: tuple[int | None, ...], kernel: tuple[int, ...],
             ceil_mode: bool = False) -> Geometry:
    """Resolve pads and output sizes of a windowed op on spatial ``sizes`` (None = unknown);
    memoised on everything it reads (an attribute changed later gives a new key)."""
    key = (op.type, op.auto_pad, tuple(op.strides), tuple(op.dilations), tuple(op.pads),
           tuple(sizes), tuple(kernel), bool(ceil_mode))
    g = _GEOMETRIES.get(key)
    if g is None:
        g = _resolve(op, tuple(sizes), tuple(kernel), ceil_mode)
        if len(_GEOMETRIES) >= 4096:
            _GEOMETRIES.clear()
        _GEOMETRIES[key] = g
    return g


def _resolve(op, sizes: tuple[int | None, ...], kernel: tuple[int, ...],
             ceil_mode: bool) -> Geometry:
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
    The view of each shape asked for is kept too: the chunk loops ask for the same few shapes
    hundreds of times per step, and building a view costs more than the lookup.
    """
    views = getattr(_SCRATCH, "views", None)
    if views is None:
        views = _SCRATCH.views = {}
        _SCRATCH.buffers = {}
    key = (name, shape, dtype)
    view = views.get(key)
    if view is not None:
        return view
    dtype = np.dtype(dtype)
    size = math.prod(shape)
    buf = _SCRATCH.buffers.get((name, dtype))
    if buf is None or buf.size < size:
        buf = _SCRATCH.buffers[(name, dtype)] = np.empty(size, dtype=dtype)
        for k in [k for k in views if k[0] == name and np.dtype(k[2]) == dtype]:
            del views[k]                        # views of the buffer replaced
    if len(views) > 256:                        # (shapes of many different models)
        views.clear()
    view = views[key] = buf[:size].reshape(shape)
    return view


def as5d(a: np.ndarray) -> np.ndarray:
    """``(N, C, *spatial)`` as ``(N, C, D, H, W)`` (leading spatial axes of size 1), C-contiguous:
    the form every kernel takes.  A view when ``a`` is already contiguous."""
    a = np.ascontiguousarray(a)
    return a.reshape(a.shape[:2] + (1,) * (5 - a.ndim) + a.shape[2:])


def compute_dtype(*dtypes) -> np.dtype:
    """The dtype the kernels compute in: the arrays' common dtype if it is float32 or float64
    (or, for pooling, an integer type), float32 for float16."""
    dtype = np.result_type(*dtypes)
    return np.dtype(np.float32) if dtype == np.float16 else dtype


def interior(sizes, g: Geometry, ndim: int) -> tuple:
    """The index of the unpadded region inside a padded array."""
    return (slice(None),) * (ndim - g.nd) + tuple(
        slice(b, b + n) for b, n in zip(g.begin, sizes))


def chunks(n: int, per_item: int):
    """Batch ranges ``(start, stop)`` whose unfolded size is about :data:`CHUNK_ELEMENTS`."""
    step = max(1, CHUNK_ELEMENTS // max(1, per_item))
    return [(i, min(n, i + step)) for i in range(0, n, step)]


def spatial_check(op, x, min_spatial: int = 1, max_spatial: int | None = None) -> int:
    """Number of spatial axes of an (N, C, *spatial) input, or a clear ShapeError."""
    nd = x.ndim - 2
    if nd < min_spatial or (max_spatial is not None and nd > max_spatial):
        raise ShapeError(f"{op.type} needs an input (N, C, *spatial) with "
                         f"{min_spatial}..{max_spatial or 'any'} spatial axes, got "
                         f"{format_shape(x.shape)}")
    return nd


class WindowUnfold:
    """im2col and col2im for any window geometry, on the compiled kernels.

    The unfolded chunk is ``(C, taps, n, *out)`` — per group one ``(C/group · taps,
    n · positions)`` matrix — built from the unpadded input (``source``: the input as five
    axes); ``col2im`` writes the rows ``start:stop`` of the input gradient ``gx`` (five axes,
    unpadded) whole.  ``to_output`` / ``from_output`` convert between the computed grid
    ``(n, O, positions)`` and ``(n, O, *out)``; ``input_grad`` gives the gradient its shape.
    """

    def __init__(self, g: Geometry, shape: tuple[int, ...]):
        self.g = g
        self.shape = tuple(shape)
        self.shape5 = as5d_shape(self.shape)       # the input on five axes, as kernels take it
        self.taps = g.taps
        self.positions = math.prod(g.out)
        self.grid = g.out3                         # the output grid computed, on three axes
        self.args = g.as3d()

    def source(self, x: np.ndarray) -> np.ndarray:
        """``x`` (of ``shape``) on five axes: :func:`as5d` with the shape worked out once (a
        conv keeps its unfolder across calls)."""
        return np.ascontiguousarray(x).reshape(self.shape5)

    def grad_buffer(self, empty, dtype) -> np.ndarray:
        """The input gradient on the source's axes, from ``empty`` (``ctx.backend.empty``):
        col2im writes every element."""
        return empty(self.shape, dtype).reshape(self.shape5)

    def input_grad(self, gsrc: np.ndarray) -> np.ndarray:
        return gsrc.reshape(self.shape)

    def im2col(self, kernels, src: np.ndarray, start: int, stop: int) -> np.ndarray:
        cols = scratch("cols", (src.shape[1], self.taps, stop - start) + self.grid, src.dtype)
        kernels.im2col(src[start:stop], cols, *self.args)
        return cols

    def col2im(self, kernels, gsrc: np.ndarray, cols: np.ndarray, start: int, stop: int) -> None:
        """``cols`` (the chunk's unfolded gradient) into rows ``start:stop`` of ``gsrc``."""
        cols = cols.reshape((gsrc.shape[1], self.taps, stop - start) + self.grid)
        kernels.col2im(cols, gsrc[start:stop], *self.args)

    def to_output(self, values: np.ndarray) -> np.ndarray:
        return values.reshape(values.shape[:2] + self.g.out)

    def from_output(self, gy: np.ndarray, start: int, stop: int) -> np.ndarray:
        return gy[start:stop].reshape(stop - start, gy.shape[1], -1)


def as5d_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(shape[:2]) + (1,) * (5 - len(shape)) + tuple(shape[2:])


class WideRows(WindowUnfold):
    """Stride-1 windows computed on a grid as wide as the *padded* input (extra columns cropped).

    The source is a padded copy of the input; on it every kernel tap reads one contiguous range
    of each flattened plane, the case the im2col kernel copies in one loop per plane.  It costs
    ``padded width / output width`` more arithmetic, and a padded copy.  The kernels copy
    convolutions whose output is as wide as their input (the usual "same" padding) that way
    without any of this, and copy short rows nearly as fast, so :func:`unfolder` no longer
    picks this layout; it stays as the second strategy the tests check the first against.
    Gradients entering on the wide grid are zero in the garbage columns, so those columns add
    nothing to any gradient.
    """

    def __init__(self, g: Geometry, shape: tuple[int, ...]):
        super().__init__(g, shape)
        self.padded = tuple(n + b + e for n, b, e in zip(shape[2:], g.begin, g.end))
        lead = 3 - g.nd
        self.wide = (g.out[:-1] + self.padded[-1:])              # the output grid computed
        self.grid = (1,) * lead + self.wide
        self.positions = math.prod(self.wide)
        kernel, strides, dilations, _ = g.as3d()
        self.args = (kernel, strides, dilations, (0, 0, 0))

    @staticmethod
    def worthwhile(g: Geometry, shape: tuple[int, ...], rows: int) -> bool:
        """Unit strides, two or more spatial axes, and at most ``min(1.5, 1 + 40/rows)`` times
        the arithmetic (the old criterion of the numpy unfolding)."""
        if any(s != 1 for s in g.strides) or g.nd < 2:
            return False
        padded = tuple(n + b + e for n, b, e in zip(shape[2:], g.begin, g.end))
        extra = min(1.5, 1 + 40 / rows)
        return math.prod(g.out[:-1]) * padded[-1] <= extra * math.prod(g.out)

    def source(self, x: np.ndarray) -> np.ndarray:
        out = np.zeros(as5d_shape(x.shape[:2] + self.padded), dtype=x.dtype)
        out.reshape(x.shape[:2] + self.padded)[interior(x.shape[2:], self.g, x.ndim)] = x
        return out

    def grad_buffer(self, empty, dtype) -> np.ndarray:
        return np.empty(as5d_shape(self.shape[:2] + self.padded), dtype=dtype)

    def input_grad(self, gsrc: np.ndarray) -> np.ndarray:
        grid = gsrc.reshape(self.shape[:2] + self.padded)
        return np.ascontiguousarray(grid[interior(self.shape[2:], self.g, len(self.shape))])

    def to_output(self, values: np.ndarray) -> np.ndarray:
        grid = values.reshape(values.shape[:2] + self.wide)
        return grid[(slice(None),) * 2 + tuple(slice(0, o) for o in self.g.out)]

    def from_output(self, gy: np.ndarray, start: int, stop: int) -> np.ndarray:
        out = scratch("wide", (stop - start, gy.shape[1]) + self.wide, gy.dtype)
        out[...] = 0
        out[(slice(None),) * 2 + tuple(slice(0, o) for o in self.g.out)] = gy[start:stop]
        return out.reshape(out.shape[:2] + (-1,))


def unfolder(g: Geometry, shape: tuple[int, ...], rows: int) -> WindowUnfold:
    """The unfolding strategy for this geometry, input shape and number of output channels per
    group: the kernels' exact layout (see :class:`WideRows` for the one it replaced)."""
    return WindowUnfold(g, shape)
