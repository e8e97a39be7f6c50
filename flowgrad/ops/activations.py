"""Pointwise nonlinearities.  Each backward multiplies the incoming gradient by f'(x)."""
from __future__ import annotations

import numpy as np

from ..op import Op, Spec


class _Pointwise(Op):
    """Shape-preserving single-input op."""

    def infer(self, x):
        return (Spec(x.shape, x.dtype),)


class Relu(_Pointwise):
    """max(x, 0); gradient 1 where x > 0."""

    type = "relu"

    def forward(self, ctx, x):
        y = np.maximum(x, 0)
        ctx.save(y)
        return (y,)

    def backward(self, ctx, gy):
        (y,) = ctx.saved
        return (gy * (y > 0),)


class Sigmoid(_Pointwise):
    """1 / (1 + e^-x), computed without overflow; gradient y (1 - y)."""

    type = "sigmoid"

    def forward(self, ctx, x):
        y = np.exp(-np.logaddexp(0, -x)).astype(x.dtype, copy=False)
        ctx.save(y)
        return (y,)

    def backward(self, ctx, gy):
        (y,) = ctx.saved
        return (gy * y * (1 - y),)
