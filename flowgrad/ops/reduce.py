"""Reductions over axes: sum, mean, max, min, product and the L2 norm.

All share the attributes ``axes`` (default: every axis, giving a scalar) and ``keepdims``.
Backward first restores the reduced axes as size 1, then broadcasts the gradient back over them.
(The variadic elementwise ``sum`` merge of several inputs lives in ``merge.py``.)
"""
from __future__ import annotations

import numpy as np

from ..op import Attr, Op, ShapeError, Spec, prod
from .elementwise import float_dtype


class _Reduce(Op):
    attrs = {"axes": Attr("ints", None, doc="axes to reduce (batch axis is 0); default all"),
             "keepdims": Attr("bool", False, doc="keep reduced axes with size 1")}

    def _axes(self, ndim: int) -> tuple[int, ...]:
        if self.axes is None:
            return tuple(range(ndim))
        out = []
        for a in self.axes:
            if not -ndim <= a < ndim:
                raise ShapeError(f"{self.type} axis {a} is out of range for a {ndim}-d input")
            out.append(a % ndim)
        if len(set(out)) != len(out):
            raise ShapeError(f"{self.type} axes {list(self.axes)} name the same axis twice")
        return tuple(sorted(out))

    def _dtype(self, dtype: np.dtype) -> np.dtype:
        return dtype

    def infer(self, x):
        axes = self._axes(x.ndim)
        if self.keepdims:
            shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
        else:
            shape = tuple(d for i, d in enumerate(x.shape) if i not in axes)
        return (Spec(shape, self._dtype(x.dtype)),)

    def forward(self, ctx, x):
        axes = self._axes(x.ndim)
        y = np.asarray(self._reduce(ctx, x, axes))
        return (y if self.keepdims else y.reshape(tuple(d for i, d in enumerate(x.shape)
                                                        if i not in axes)),)

    def _reduce(self, ctx, x, axes):
        """The reduction with keepdims=True; ``ctx.save`` what backward needs."""
        raise NotImplementedError

    @staticmethod
    def _kept(gy: np.ndarray, shape: tuple[int, ...], axes: tuple[int, ...]) -> np.ndarray:
        """``gy`` reshaped so that it broadcasts against the input (reduced axes of size 1)."""
        return gy.reshape(tuple(1 if i in axes else d for i, d in enumerate(shape)))


class ReduceSum(_Reduce):
    """Σ over ``axes``; every input element gets the gradient of its sum."""

    type = "reduce_sum"

    def _reduce(self, ctx, x, axes):
        ctx.save(x.shape, axes)
        return x.sum(axis=axes, keepdims=True)

    def backward(self, ctx, gy):
        shape, axes = ctx.saved
        return (np.broadcast_to(self._kept(gy, shape, axes), shape).copy(),)


class ReduceMean(_Reduce):
    """Mean over ``axes``; gradient 1/count to every element."""

    type = "reduce_mean"

    def _dtype(self, dtype):
        return float_dtype(dtype)

    def _reduce(self, ctx, x, axes):
        ctx.save(x.shape, axes)
        return x.mean(axis=axes, keepdims=True)

    def backward(self, ctx, gy):
        shape, axes = ctx.saved
        scale = 1.0 / prod(shape[a] for a in axes)
        return (np.broadcast_to(self._kept(gy, shape, axes) * scale, shape).copy(),)


class _ReduceExtreme(_Reduce):
    """Max or min: the gradient goes to the extreme elements, split evenly among ties."""

    def _reduce(self, ctx, x, axes):
        y = self._extreme(x, axes)
        ctx.save(x, y, axes)
        return y

    def backward(self, ctx, gy):
        x, y, axes = ctx.saved
        hit = x == y
        share = self._kept(gy, x.shape, axes) / hit.sum(axis=axes, keepdims=True)
        return ((hit * share).astype(x.dtype, copy=False),)


def _lowest(dtype: np.dtype):
    """The identity of max for ``dtype`` (ONNX: the max of an empty set is the lowest value)."""
    if dtype.kind == "f":
        return -np.inf
    if dtype.kind == "b":
        return False
    return np.iinfo(dtype).min


def _highest(dtype: np.dtype):
    if dtype.kind == "f":
        return np.inf
    if dtype.kind == "b":
        return True
    return np.iinfo(dtype).max


class ReduceMax(_ReduceExtreme):
    """Largest element over ``axes`` (−inf, or the lowest integer, over an empty set)."""

    type = "reduce_max"

    @staticmethod
    def _extreme(x, axes):
        if x.size == 0:
            return x.max(axis=axes, keepdims=True, initial=_lowest(x.dtype))
        return x.max(axis=axes, keepdims=True)


class ReduceMin(_ReduceExtreme):
    """Smallest element over ``axes`` (+inf, or the highest integer, over an empty set)."""

    type = "reduce_min"

    @staticmethod
    def _extreme(x, axes):
        if x.size == 0:
            return x.min(axis=axes, keepdims=True, initial=_highest(x.dtype))
        return x.min(axis=axes, keepdims=True)


class ReduceL2(_Reduce):
    """√(Σ x²) over ``axes``; gradient x / ‖x‖ (taken as 0 where the norm is 0)."""

    type = "reduce_l2"

    def _dtype(self, dtype):
        return float_dtype(dtype)

    def _reduce(self, ctx, x, axes):
        y = np.sqrt(np.square(x).sum(axis=axes, keepdims=True))
        ctx.save(x, y, axes)
        return y

    def backward(self, ctx, gy):
        x, y, axes = ctx.saved
        safe = np.where(y > 0, y, 1)
        return (x * (self._kept(gy, x.shape, axes) / safe),)


class ReduceProd(_Reduce):
    """Product over ``axes`` (1 over an empty set; integers stay integers, as ONNX ReduceProd).

    The gradient of a product with respect to one factor is the product of the others.  It is
    computed without dividing by the factor, so zeros are exact: a slice with no zero gives
    y / x; with one zero, that element gets the product of the rest and the others 0; with two
    or more, every element gets 0.
    """

    type = "reduce_prod"

    def _reduce(self, ctx, x, axes):
        y = x.prod(axis=axes, keepdims=True)
        ctx.save(x, axes)
        return y

    def backward(self, ctx, gy):
        x, axes = ctx.saved
        zero = x == 0
        zeros = zero.sum(axis=axes, keepdims=True)
        rest = np.where(zero, 1, x).prod(axis=axes, keepdims=True)   # product of the nonzeros
        with np.errstate(divide="ignore", invalid="ignore"):
            others = np.where(zeros == 0, rest / np.where(zero, 1, x),
                              np.where((zeros == 1) & zero, rest, 0))
        return ((others * self._kept(gy, x.shape, axes)).astype(x.dtype, copy=False),)
