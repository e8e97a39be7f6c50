"""Pooling in the ONNX layout ``(N, C, *spatial)``: max, average, and their global forms.

Windows follow :mod:`._conv_util` (kernel, strides, dilations, pads, auto_pad, ceil_mode).  Each
pool is a loop over the *kernel taps* only: tap ``t`` of every window, for every image and
channel, is one strided slice of the padded input, so each step is a single vectorised numpy
operation (a 2×2 pool is four ``np.maximum`` calls, whatever the batch size).

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
from ._conv_util import (WINDOW_ATTRS, add_into, check_window_attrs, chunks, geometry,
                         interior, pad_spatial, scratch, spatial_check, tap_slices, windows)


class _Pool(Op):
    rowwise = True
    attrs = {**WINDOW_ATTRS,
             "ceil_mode": Attr("int", 0, choices=(0, 1),
                               doc="1: round the output size up (a last, partial window)")}

    def check(self):
        check_window_attrs(self)
        if not self.kernel_shape:
            raise AttrError(f"{self.type} needs 'kernel_shape'", attr="kernel_shape")

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
    """Largest value of each window; padding never wins (it is -inf).

    With ``indices: true`` the op has a second output, ONNX MaxPool's ``Indices``: the position
    of each maximum as a flat index into the whole input (batch and channel included), in
    row-major order, or with ``storage_order=1`` with the spatial axes in column-major order.
    It is off by default because tracking which tap wins costs about three times the pooling
    itself (the ONNX importer turns it on only where a model reads it).  Either way the gradient
    goes to the first maximum of each window, the tap ``indices`` names.
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

    def forward(self, ctx, x):
        g = self._geometry(x.shape)
        low = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
        if not self.indices:
            y = ctx.backend.empty(x.shape[:2] + g.out, x.dtype)
            if ctx.grad_enabled:                  # backward finds the winners in xp
                xp = pad_spatial(x, g, low)
                _window_max(xp, g, y)
                ctx.save(xp, y, None, g, x.shape, x.dtype)
                return (y,)
            padded = tuple(n + b + e for n, b, e in zip(x.shape[2:], g.begin, g.end))
            for start, stop in chunks(x.shape[0], x.shape[1] * math.prod(padded)):
                part = x[start:stop]
                xp = part if not g.padded else pad_spatial(
                    part, g, low, out=scratch("pool", part.shape[:2] + padded, x.dtype))
                _window_max(xp, g, y[start:stop])
            return (y,)
        xp = pad_spatial(x, g, low)
        y = arg = None
        for t, tap in enumerate(np.ndindex(*g.kernel)):
            part = xp[tap_slices(g, tap, x.ndim)]
            if y is None:
                y = part.copy()
                if self.indices:
                    arg = np.zeros(y.shape, dtype=np.int32)
                continue
            if self.indices:
                np.copyto(arg, t, where=part > y)         # strict: the first maximum stays
            np.maximum(y, part, out=y)
        ctx.save(None, None, arg, g, x.shape, x.dtype)
        return y, self._flat_indices(arg, g, x.shape)

    def _flat_indices(self, arg, g, shape):
        """ONNX's flat input index of each window's winning tap."""
        spatial = shape[2:]
        taps = np.unravel_index(arg, g.kernel)
        coords = []
        for i in range(g.nd):
            pos = np.arange(g.out[i]).reshape((-1,) + (1,) * (g.nd - 1 - i))
            coords.append(pos * g.strides[i] + taps[i] * g.dilations[i] - g.begin[i])
        # only a window whose real cells are all -inf (or iinfo.min) can pick a padding cell;
        # clipping keeps its index inside the input
        coords = [np.clip(c, 0, n - 1) for c, n in zip(coords, spatial)]
        flat = np.ravel_multi_index(coords, spatial, order="F" if self.storage_order else "C")
        planes = np.arange(shape[0] * shape[1], dtype=np.int64).reshape(
            shape[:2] + (1,) * g.nd) * int(np.prod(spatial))
        return (planes + flat).astype(np.int64)

    def backward(self, ctx, gy, gindices=None):
        xp, y, arg, g, shape, dtype = ctx.saved
        if gy is None:                            # only the (integer) indices were used
            return (np.zeros(shape, dtype) if ctx.needs_input_grad[0] else None,)
        padded = tuple(n + b + e for n, b, e in zip(shape[2:], g.begin, g.end))
        gxp = np.zeros(shape[:2] + padded, dtype=gy.dtype)
        # windows that do not overlap write their taps straight into the gradient
        disjoint = all(s >= (k - 1) * d + 1 for s, k, d in zip(g.strides, g.kernel, g.dilations))
        free = None                               # windows whose max is not claimed yet
        taps = list(np.ndindex(*g.kernel))
        for i, tap in enumerate(taps):
            where = tap_slices(g, tap, len(shape))
            if arg is not None:
                hit = arg == i
            else:                                 # the first tap equal to the max wins
                hit = np.equal(xp[where], y)
                if free is None:
                    free = ~hit
                else:
                    hit &= free
                    if i < len(taps) - 1:
                        np.logical_xor(free, hit, out=free)
            if disjoint:
                np.multiply(gy, hit, out=gxp[where])
            else:
                add_into(gxp[where], gy * hit)
        return (gxp[interior(shape[2:], g, len(shape))] if g.padded else gxp,)


def _window_max(xp: np.ndarray, g, out: np.ndarray) -> None:
    """Each window's max into ``out``, one spatial axis at a time: k₀ + k₁ + … vectorised steps
    instead of k₀·k₁·…, and exact, as a max of maxes is the max.  The last axis goes first,
    reading rows while they are contiguous; intermediates live in reused scratch buffers."""
    v = xp
    for axis in reversed(range(g.nd)):
        at = xp.ndim - g.nd + axis
        k, s, d, o = g.kernel[axis], g.strides[axis], g.dilations[axis], g.out[axis]
        taps = [v[(slice(None),) * at + (slice(t * d, t * d + s * (o - 1) + 1, s),)]
                for t in range(k)]
        r = out if axis == 0 else scratch(f"max_pool{axis}", taps[0].shape, v.dtype)
        if k == 1:
            np.copyto(r, taps[0])
        else:
            np.maximum(taps[0], taps[1], out=r)
        for tap in taps[2:]:
            np.maximum(r, tap, out=r)
        v = r


class AvgPool(_Pool):
    """Mean of each window over its counted cells (see the module doc for which cells count)."""

    type = "avg_pool"
    attrs = {**_Pool.attrs,
             "count_include_pad": Attr("int", 0, choices=(0, 1),
                                       doc="1: explicit pads count in the divisor")}

    def _counts(self, shape, g, dtype):
        """How many cells each window averages over, shape ``out`` (broadcasts over N, C)."""
        padded = tuple(n + b + e for n, b, e in zip(shape[2:], g.begin, g.end))
        mask = np.zeros(padded, dtype=dtype)
        if self.count_include_pad:
            mask[tuple(slice(0, p - x) for p, x in zip(padded, g.extra))] = 1
        else:
            mask[interior(shape[2:], g, g.nd)] = 1
        counts = windows(mask, g).sum(axis=tuple(range(g.nd, 2 * g.nd)))
        return np.maximum(counts, 1)

    def forward(self, ctx, x):
        g = self._geometry(x.shape)
        xp = pad_spatial(x, g)
        y = None
        for tap in np.ndindex(*g.kernel):
            part = xp[tap_slices(g, tap, x.ndim)]
            if y is None:
                y = ctx.backend.empty(part.shape, part.dtype)
                np.copyto(y, part)
            else:
                np.add(y, part, out=y)
        counts = self._counts(x.shape, g, x.dtype)
        y /= counts
        ctx.save(g, x.shape, counts, xp.shape)
        return (y,)

    def backward(self, ctx, gy):
        g, shape, counts, padded_shape = ctx.saved
        share = gy / counts
        gxp = np.zeros(padded_shape, dtype=gy.dtype)
        for tap in np.ndindex(*g.kernel):
            add_into(gxp[tap_slices(g, tap, len(shape))], share)
        return (gxp[interior(shape[2:], g, len(shape))] if g.padded else gxp,)


class _GlobalPool(Op):
    rowwise = True

    def infer(self, x):
        nd = spatial_check(self, x)
        return (Spec(x.shape[:2] + (1,) * nd, x.dtype),)


class GlobalAvgPool(_GlobalPool):
    """Mean over all spatial axes, keeping them with size 1 (ONNX GlobalAveragePool)."""

    type = "global_avg_pool"

    def forward(self, ctx, x):
        axes = tuple(range(2, x.ndim))
        ctx.save(x.shape)
        return (x.mean(axis=axes, keepdims=True, dtype=x.dtype),)

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
