"""Comparisons and boolean logic (ONNX Equal, Less, ..., Not, And, Or, Xor): bool outputs.

All broadcast like numpy and are forward-only (``differentiable = False``): their outputs are
piecewise constant, so they pass no gradient.  A comparison feeding ``where``'s condition does
not block training, because that port takes no gradient.
"""
from __future__ import annotations

import numpy as np

from ..op import Op, ShapeError, Spec, broadcast_shapes


class _Compare(Op):
    """Two-input broadcasting comparison; the numpy ufunc is ``fn``."""

    inputs = ("a", "b")
    differentiable = False
    fn = staticmethod(np.equal)
    logical = False

    def infer(self, a, b):
        if self.logical and (a.dtype != np.bool_ or b.dtype != np.bool_):
            raise ShapeError(f"{self.type} needs bool inputs, got {a.dtype} and {b.dtype}")
        return (Spec(broadcast_shapes(a.shape, b.shape), np.bool_),)

    def forward(self, ctx, a, b):
        return (np.asarray(self.fn(a, b)),)


class Equal(_Compare):
    """a == b."""

    type = "equal"
    fn = staticmethod(np.equal)


class Less(_Compare):
    """a < b."""

    type = "less"
    fn = staticmethod(np.less)


class LessOrEqual(_Compare):
    """a <= b."""

    type = "less_or_equal"
    fn = staticmethod(np.less_equal)


class Greater(_Compare):
    """a > b."""

    type = "greater"
    fn = staticmethod(np.greater)


class GreaterOrEqual(_Compare):
    """a >= b."""

    type = "greater_or_equal"
    fn = staticmethod(np.greater_equal)


class And(_Compare):
    """Logical and of two bool tensors."""

    type = "and"
    fn = staticmethod(np.logical_and)
    logical = True


class Or(_Compare):
    """Logical or of two bool tensors."""

    type = "or"
    fn = staticmethod(np.logical_or)
    logical = True


class Xor(_Compare):
    """Logical exclusive or of two bool tensors."""

    type = "xor"
    fn = staticmethod(np.logical_xor)
    logical = True


class Not(Op):
    """Logical negation of a bool tensor."""

    type = "not"
    differentiable = False

    def infer(self, x):
        if x.dtype != np.bool_:
            raise ShapeError(f"not needs a bool input, got {x.dtype}")
        return (Spec(x.shape, np.bool_),)

    def forward(self, ctx, x):
        return (np.logical_not(x),)
