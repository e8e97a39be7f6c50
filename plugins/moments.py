"""moments: the mean and the (population) variance of x over some axes — an op with two outputs.

In YAML, pick an output with ``node.port``: ``{op: moments, in: h, axes: [1]}`` then ``h_stats.mean``
and ``h_stats.var``.  The backward receives ``None`` for an output nothing downstream used,
and must cope with that.
"""
import math

import numpy as np

import flowgrad
from flowgrad.op import Spec, normalize_axis


class Moments(flowgrad.Op):
    """mean(x) and mean((x - mean(x))^2) over ``axes``."""

    type = "moments"
    inputs = ("x",)
    outputs = ("mean", "var")
    attrs = {"axes": flowgrad.Attr("ints", (-1,), doc="axes to reduce (0 is the batch axis)"),
             "keepdims": flowgrad.Attr("bool", False, doc="keep reduced axes with length 1")}

    def _axes(self, ndim):
        return tuple(sorted({normalize_axis(a, ndim) for a in self.axes}))

    def infer(self, x):
        axes = self._axes(x.ndim)
        shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape)) if self.keepdims \
            else tuple(d for i, d in enumerate(x.shape) if i not in axes)
        return (Spec(shape, x.dtype), Spec(shape, x.dtype))

    def forward(self, ctx, x):
        axes = self._axes(x.ndim)
        mean = x.mean(axis=axes, keepdims=True)
        centered = x - mean
        var = (centered * centered).mean(axis=axes, keepdims=True)
        ctx.save(centered, axes)
        if not self.keepdims:
            mean, var = mean.squeeze(axes), var.squeeze(axes)
        return mean, var

    def backward(self, ctx, gmean, gvar):
        centered, axes = ctx.saved
        count = math.prod(centered.shape[a] for a in axes)  # a Python int: keeps float32
        gx = np.zeros_like(centered)
        if gmean is not None:   # d mean / dx_i = 1/count
            gx += np.expand_dims(gmean, axes) if not self.keepdims else gmean
        if gvar is not None:    # d var / dx_i = 2 (x_i - mean) / count (the mean's terms cancel)
            g = np.expand_dims(gvar, axes) if not self.keepdims else gvar
            gx += 2 * g * centered
        return (gx / count,)


@flowgrad.hookimpl
def flowgrad_register_ops(ops):
    ops.add(Moments)
