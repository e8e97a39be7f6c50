"""Pooling in the ONNX layout ``(N, C, *spatial)``: max, average, Lp, their global forms, and
max_unpool.

Windows follow :mod:`._conv_util` (kernel, strides, dilations, pads, auto_pad, ceil_mode).  Max
and average pooling, forward and backward, are compiled kernels (``ctx.backend.kernels``,
:mod:`flowgrad.kernels.pool`) that skip padding cells instead of reading a padded copy; the
global pools are one numpy reduction each.

Max pooling sends the gradient to the first maximum of each window (the tie rule of PyTorch and
onnxruntime).  Average pooling divides by the number of counted cells: with
``count_include_pad`` the explicit pads count but the extra room ceil_mode adds past them does
not (as onnxruntime and PyTorch do); without it only real input cells count.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import AttrError
from ..op import Attr, Op, ShapeError, Spec, format_shape
from ._conv_util import (WINDOW_ATTRS, as5d, as5d_shape, check_window_attrs, compute_dtype,
                         geometry, spatial_check)
from ._recipes import KeepsRecipes


class _Recipe:
    """What max_pool / avg_pool work out from an input's shape and dtype and the attributes:
    the geometry, the output shape, the dtype the kernel computes in, the five-axis shapes
    the kernel sees and the kernel's arguments after the arrays.  Working it out each call
    cost about 7 us of a 15 us max_pool (1x200x2x96, 2x2, a MobileNet's) whose kernel takes
    7 us."""

    __slots__ = ("g", "out", "work", "x5", "y5", "args")

    def __init__(self, g, out, work, x5, y5, args):
        self.g, self.out, self.work, self.x5, self.y5, self.args = g, out, work, x5, y5, args


class _Pool(KeepsRecipes, Op):
    rowwise = True
    attrs = {**WINDOW_ATTRS,
             "ceil_mode": Attr("int", 0, choices=(0, 1),
                               doc="1: round the output size up (a last, partial window)")}

    def check(self):
        check_window_attrs(self)
        if not self.kernel_shape:
            raise AttrError(f"{self.type} needs 'kernel_shape'", attr="kernel_shape")

    def _recipe(self, shape, dtype) -> _Recipe:
        """The :class:`_Recipe` of an input signature (kept: :data:`~._recipes.RECIPES` at most)."""
        r = self._recipes.get((shape, dtype))
        if r is None:
            g = self._geometry(shape)
            work = self._work(dtype)
            out = tuple(shape[:2]) + g.out
            r = self._keep((shape, dtype), _Recipe(
                g, out, work, as5d_shape(shape), as5d_shape(out),
                g.as3d() + self._extra_args(shape, g, work)))
        return r

    def _geometry(self, shape):
        kernel = tuple(self.kernel_shape)
        if len(kernel) != len(shape) - 2:
            raise ShapeError(f"{self.type}: kernel_shape {list(kernel)} has {len(kernel)} axes "
                             f"but the input {format_shape(shape)} has {len(shape) - 2} spatial "
                             f"axes")
        return geometry(self, tuple(shape[2:]), kernel, bool(self.ceil_mode))

    def infer(self, x):
        spatial_check(self, x)
        g = self._geometry(x.shape)
        return (Spec(x.shape[:2] + g.out, x.dtype),)


class MaxPool(_Pool):
    """Largest value of each window; padding never wins (no padding cell is ever read).

    With ``indices: true`` the op has a second output, ONNX MaxPool's ``Indices``: the position
    of each maximum as a flat index into the whole input (batch and channel included), in
    row-major order, or with ``storage_order=1`` with the spatial axes in column-major order.
    Either way the gradient goes to the first maximum of each window, the tap ``indices``
    names: the forward kernel saves it (an int32 index into the input plane) whenever a backward
    may follow.
    """

    type = "max_pool"
    outputs = ("y", "indices")
    attrs = {**_Pool.attrs,
             "indices": Attr("bool", False, doc="add the output 'indices' (int64 flat arg-max)"),
             "storage_order": Attr("int", 0, choices=(0, 1),
                                   doc="layout of 'indices': 0 row-major, 1 column-major "
                                       "spatial axes")}

    @property
    def rowwise(self):
        """``indices`` count across the batch (flat indices into the whole input)."""
        return not self.indices

    def num_outputs(self, num_inputs):
        return 2 if self.indices else 1

    def output_names(self, num_inputs):
        return self.outputs[:self.num_outputs(num_inputs)]

    def infer(self, x):
        (y,) = super().infer(x)
        return (y, Spec(y.shape, np.dtype(np.int64))) if self.indices else (y,)

    @staticmethod
    def _work(dtype):
        return compute_dtype(dtype)

    @staticmethod
    def _extra_args(shape, g, work):
        return (-np.inf if work.kind == "f" else np.iinfo(work).min,)     # ``low``

    def forward(self, ctx, x):
        r = self._recipe(x.shape, x.dtype)
        y = ctx.backend.empty(r.out, x.dtype)     # first: the plan may place it
        work = r.work
        xw = np.ascontiguousarray(x, dtype=work).reshape(r.x5)
        need_arg = self.indices or ctx.grad_enabled
        arg = np.empty(r.y5, np.int32) if need_arg else _NO_ARG
        out = y if y.dtype == work else np.empty(r.out, work)
        y5, kernel = out.reshape(r.y5), ctx.backend.kernels.max_pool
        # each image alone: the threads share parts of the batch (bits unchanged; an image
        # costs about half a nanosecond an input value)
        ctx.backend.batch(xw.shape[0], xw[:1].size // 2, lambda start, stop: kernel(
            xw[start:stop], y5[start:stop], arg[start:stop] if need_arg else arg, *r.args))
        if out is not y:
            y[...] = out
        arg = arg.reshape(r.out) if need_arg else arg
        if ctx.grad_enabled:
            ctx.save(arg, x.shape, work)
        if not self.indices:
            return (y,)
        return y, self._flat_indices(arg, x.shape)

    def _flat_indices(self, arg, shape):
        """ONNX's flat input index of each window's first maximum, from the kernel's index into
        the (row-major) input plane."""
        spatial = shape[2:]
        plane = np.maximum(arg, 0).astype(np.int64)     # -1: a window with no input cell
        if self.storage_order:
            coords = np.unravel_index(plane, spatial)
            plane = np.ravel_multi_index(coords, spatial, order="F")
        planes = np.arange(shape[0] * shape[1], dtype=np.int64).reshape(
            shape[:2] + (1,) * len(spatial)) * math.prod(spatial)
        return planes + plane

    def backward(self, ctx, gy, gindices=None):
        arg, shape, work = ctx.saved
        if gy is None:                            # only the (integer) indices were used
            return (np.zeros(shape, work) if ctx.needs_input_grad[0] else None,)
        gx = ctx.backend.empty(shape, work)
        ctx.backend.kernels.max_pool_backward(as5d(np.asarray(gy, dtype=work)), as5d(arg),
                                              as5d(gx))
        return (gx,)


_NO_ARG = np.empty((0,) * 5, np.int32)      # max_pool's "no arg-max wanted"


class AvgPool(_Pool):
    """Mean of each window over its counted cells (see the module doc for which cells count)."""

    type = "avg_pool"
    attrs = {**_Pool.attrs,
             "count_include_pad": Attr("int", 0, choices=(0, 1),
                                       doc="1: explicit pads count in the divisor")}

    def _counted(self, shape, g):
        """``(begin, end)`` on three axes: the cells a window's divisor counts — the input and
        its explicit pads with ``count_include_pad`` (not the room ceil_mode adds), else the
        input only."""
        lead = 3 - g.nd
        sizes = shape[2:]
        if self.count_include_pad:
            begin = tuple(-b for b in g.begin)
            end = tuple(n + e - x for n, e, x in zip(sizes, g.end, g.extra))
        else:
            begin, end = (0,) * g.nd, tuple(sizes)
        return (0,) * lead + begin, (1,) * lead + end

    @staticmethod
    def _work(dtype):
        return compute_dtype(dtype, np.float32)

    def _extra_args(self, shape, g, work):
        return self._counted(shape, g)

    def forward(self, ctx, x):
        r = self._recipe(x.shape, x.dtype)
        y = ctx.backend.empty(r.out, x.dtype)     # first: the plan may place it
        work = r.work
        out = y if y.dtype == work else np.empty(r.out, work)
        ctx.backend.kernels.avg_pool(np.ascontiguousarray(x, dtype=work).reshape(r.x5),
                                     out.reshape(r.y5), *r.args)
        if out is not y:
            y[...] = out
        if ctx.grad_enabled:
            ctx.save(r.g, x.shape, work)
        return (y,)

    def backward(self, ctx, gy):
        g, shape, work = ctx.saved
        gx = ctx.backend.empty(shape, work)
        ctx.backend.kernels.avg_pool_backward(as5d(np.asarray(gy, dtype=work)), as5d(gx),
                                              *g.as3d(), *self._counted(shape, g))
        return (gx,)


class _GlobalPool(Op):
    rowwise = True

    def infer(self, x):
        nd = spatial_check(self, x)
        return (Spec(x.shape[:2] + (1,) * nd, x.dtype),)


class GlobalAvgPool(_GlobalPool):
    """Mean over all spatial axes, keeping them with size 1 (ONNX GlobalAveragePool)."""

    type = "global_avg_pool"

    def forward(self, ctx, x):
        if ctx.grad_enabled:
            ctx.save(x.shape)
        if x.dtype.kind != "f" or x.dtype.itemsize < 4 or not x.flags.c_contiguous or not x.size:
            return (x.mean(axis=tuple(range(2, x.ndim)), keepdims=True, dtype=x.dtype),)
        # what ``x.mean(axes, dtype=x.dtype)`` computes, bit for bit, without its Python
        # layers (14 -> 10 us on a MobileNet's 1x88x3x96): numpy's sum of each plane
        # (pairwise, in x's dtype) divided as numpy's mean divides, by an intp count (so in
        # float64 for float32, rounded back).  onnx's light SqueezeNet needs that rounding:
        # its logits (~1e10) turn the one-ulp differences a float64 mean keeps between
        # equal channels into a non-uniform softmax.
        n, c = x.shape[:2]
        total = np.add.reduce(x.reshape(n, c, -1), axis=2)
        cells = x.size // (n * c)
        if cells < 1 << 24:     # float32 division rounds as float64's rounded back would
            total /= cells      # (53 >= 2 * 24 + 2 bits), 2 us less than the cast
        else:
            np.true_divide(total, np.intp(cells), out=total, casting="unsafe")
        return (total.reshape(x.shape[:2] + (1,) * (x.ndim - 2)),)

    def backward(self, ctx, gy):
        (shape,) = ctx.saved
        cells = int(np.prod(shape[2:]))
        return (np.broadcast_to(gy / cells, shape),)


class GlobalMaxPool(_GlobalPool):
    """Max over all spatial axes, keeping them with size 1; gradient to the first maximum."""

    type = "global_max_pool"

    def forward(self, ctx, x):
        flat = x.reshape(x.shape[:2] + (-1,))
        arg = flat.argmax(axis=2)
        ctx.save(x.shape, arg)
        y = np.take_along_axis(flat, arg[..., None], axis=2)
        return (y.reshape(x.shape[:2] + (1,) * (x.ndim - 2)),)

    def backward(self, ctx, gy):
        shape, arg = ctx.saved
        gx = np.zeros((shape[0], shape[1], int(np.prod(shape[2:]))), dtype=gy.dtype)
        np.put_along_axis(gx, arg[..., None], gy.reshape(shape[:2] + (1,)), axis=2)
        return (gx.reshape(shape),)


def _tap_slices(g, nd: int):
    """For each tap of the window (every kernel offset), the index into the padded input that
    lines that tap up with the output grid: one strided slice per spatial axis."""
    for offsets in np.ndindex(*g.kernel):
        yield (slice(None), slice(None)) + tuple(
            slice(k * d, k * d + (o - 1) * s + 1, s)
            for k, d, o, s in zip(offsets, g.dilations, g.out, g.strides))


class LpPool(_Pool):
    """ONNX LpPool: ``y = (sum over the window of |x|^p)^(1/p)``; padding cells count as zeros.

    A loop over the kernel's taps, each a strided slice of a zero-padded ``|x|^p`` (windows are
    small; every tap is one vectorised pass).  Backward: ``dx = dy · y^(1-p) · |x|^(p-1) ·
    sign(x)`` summed over the windows reading ``x`` (the same taps, scattered back); a window
    summing to 0 passes no gradient.
    """

    type = "lp_pool"
    attrs = {**_Pool.attrs, "p": Attr("int", 2, doc="the norm's exponent, >= 1")}

    def check(self):
        super().check()
        if self.p < 1:
            raise AttrError(f"lp_pool: 'p' must be >= 1, got {self.p}", attr="p")

    def _padded(self, x, g):
        nd = x.ndim - 2
        work = np.promote_types(x.dtype, np.float32)
        padded = np.zeros(x.shape[:2] + tuple(n + b + e for n, b, e in
                                              zip(x.shape[2:], g.begin, g.end)), work)
        inner = (slice(None), slice(None)) + tuple(slice(b, b + n)
                                                   for b, n in zip(g.begin, x.shape[2:]))
        return padded, inner, nd

    def forward(self, ctx, x):
        g = self._geometry(x.shape)
        padded, inner, nd = self._padded(x, g)
        powered = np.abs(np.asarray(x, dtype=padded.dtype)) ** self.p
        padded[inner] = powered
        total = np.zeros(x.shape[:2] + g.out, padded.dtype)
        for index in _tap_slices(g, nd):
            total += padded[index]
        y = total ** (1.0 / self.p)
        if ctx.grad_enabled:
            ctx.save(x, g, total, y)
        return (y.astype(x.dtype, copy=False),)

    def backward(self, ctx, gy):
        x, g, total, y = ctx.saved
        gtotal = np.where(total > 0, gy * y / (self.p * np.where(total > 0, total, 1)), 0)
        gpadded, inner, nd = self._padded(x, g)
        for index in _tap_slices(g, nd):
            gpadded[index] += gtotal
        xs = np.asarray(x, dtype=gpadded.dtype)
        gx = gpadded[inner] * (self.p * np.abs(xs) ** (self.p - 1) * np.sign(xs)
                               if self.p > 1 else np.sign(xs))
        return (gx.astype(gy.dtype, copy=False),)


class GlobalLpPool(_GlobalPool):
    """ONNX GlobalLpPool: ``y = (sum over all positions of |x|^p)^(1/p)``, spatial axes kept
    with size 1; backward as lp_pool's."""

    type = "global_lp_pool"
    attrs = {"p": Attr("int", 2, doc="the norm's exponent, >= 1")}

    def check(self):
        if self.p < 1:
            raise AttrError(f"global_lp_pool: 'p' must be >= 1, got {self.p}", attr="p")

    def forward(self, ctx, x):
        axes = tuple(range(2, x.ndim))
        xs = np.asarray(x, dtype=np.promote_types(x.dtype, np.float32))
        total = np.sum(np.abs(xs) ** self.p, axis=axes, keepdims=True)
        y = total ** (1.0 / self.p)
        if ctx.grad_enabled:
            ctx.save(xs, total, y)
        return (y.astype(x.dtype, copy=False),)

    def backward(self, ctx, gy):
        xs, total, y = ctx.saved
        gtotal = np.where(total > 0, gy * y / (self.p * np.where(total > 0, total, 1)), 0)
        local = self.p * np.abs(xs) ** (self.p - 1) * np.sign(xs) if self.p > 1 else np.sign(xs)
        return ((gtotal * local).astype(gy.dtype, copy=False),)


class MaxUnpool(Op):
    """ONNX MaxUnpool: the partial inverse of max_pool, scattering each value of ``x`` to the
    position ``indices`` names (a flat index, as MaxPool's ``Indices`` output gives), zeros
    elsewhere.

    The indices address the shape max_pool's input had, ``(in - 1) · stride + kernel - pads``
    per spatial axis; an ``output_shape`` larger than that pads the result with zeros at the end
    of each axis (ONNX's reference; onnxruntime instead reads the indices in ``output_shape``'s
    layout: the two agree when the shapes match, as they do for a model's own pooling).
    Backward gathers the gradient at the same positions (for repeated indices the value
    written last, which is the one kept, takes it).
    """

    type = "max_unpool"
    inputs = ("x", "indices")
    no_grad_inputs = frozenset({"indices"})
    attrs = {"kernel_shape": Attr("ints", doc="the pooling window per spatial axis"),
             "strides": Attr("ints", (), doc="the pooling's strides (default 1)"),
             "pads": Attr("ints", (), doc="the pooling's pads, all begins then all ends"),
             "output_shape": Attr("ints", (), doc="the whole output shape (N, C, *spatial)")}

    def check(self):
        if any(k < 1 for k in self.kernel_shape) or any(s < 1 for s in self.strides) \
                or any(p < 0 for p in self.pads):
            raise AttrError("max_unpool: kernel_shape and strides must be >= 1 and pads >= 0",
                            attr="kernel_shape")

    def _shapes(self, shape):
        nd = len(shape) - 2
        if len(self.kernel_shape) != nd:
            raise ShapeError(f"max_unpool: kernel_shape {list(self.kernel_shape)} has "
                             f"{len(self.kernel_shape)} axes but the input "
                             f"{format_shape(shape)} has {nd} spatial axes")
        strides = tuple(self.strides) or (1,) * nd
        pads = tuple(self.pads) or (0,) * (2 * nd)
        if len(strides) != nd or len(pads) != 2 * nd:
            raise ShapeError(f"max_unpool: strides need {nd} entries and pads {2 * nd}")
        inferred = tuple(shape[:2]) + tuple(
            None if n is None else (n - 1) * s - pads[i] - pads[i + nd] + k
            for i, (n, s, k) in enumerate(zip(shape[2:], strides, self.kernel_shape)))
        if not self.output_shape:
            return inferred, inferred
        out = tuple(self.output_shape)
        if len(out) != len(shape) or any(
                None not in (o, i) and o < i for o, i in zip(out[2:], inferred[2:])):
            raise ShapeError(f"max_unpool: output_shape {list(out)} must be a whole shape "
                             f"(N, C, *spatial) at least {format_shape(inferred)}")
        return inferred, (shape[0], shape[1]) + out[2:]

    def infer(self, x, indices):
        spatial_check(self, x)
        if indices.dtype.kind not in "iu":
            raise ShapeError(f"max_unpool: indices must be integers, got {indices.dtype}")
        return (Spec(self._shapes(x.shape)[1], x.dtype),)

    def forward(self, ctx, x, indices):
        inferred, out_shape = self._shapes(x.shape)
        flat = np.asarray(indices, dtype=np.int64).reshape(-1)
        size = math.prod(inferred)
        if flat.size != x.size:
            raise ValueError(f"max_unpool: {flat.size} indices for {x.size} values")
        if flat.size and (flat.min() < 0 or flat.max() >= size):
            raise ValueError(f"max_unpool: indices must be in [0, {size}) for the unpooled "
                             f"shape {inferred}, got values from {flat.min()} to {flat.max()}")
        y = np.zeros(out_shape, x.dtype)
        corner = tuple(slice(0, n) for n in inferred)
        block = np.zeros(size, x.dtype)
        block[flat] = x.reshape(-1)
        y[corner] = block.reshape(inferred)
        if ctx.grad_enabled:
            order = np.arange(flat.size)
            owner = np.empty(size, np.int64)
            owner[flat] = order                 # the same assignment: the same value wins
            ctx.save(flat, owner[flat] == order, corner, x.shape)
        return (y,)

    def backward(self, ctx, gy):
        flat, kept, corner, shape = ctx.saved
        block = np.ascontiguousarray(gy[corner]).reshape(-1)
        return (np.where(kept, block[flat], 0).reshape(shape), None)
