"""Elementwise arithmetic: binary ops with numpy broadcasting, and simple unary functions.

Binary ops follow numpy's broadcasting, so their backward sums each gradient back to its input's
shape (:func:`~flowgrad.op.unbroadcast`) and casts it to that input's dtype: a float32 input
gets a float32 gradient even when its partner is float64.  Unary ops keep their input's shape
and (float) dtype; :class:`Unary` is the base the activation family reuses.
"""
from __future__ import annotations

import functools

import numpy as np

from ..op import Op, Spec, broadcast_shapes, result_dtype, unbroadcast


@functools.lru_cache(maxsize=None)
def float_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype numpy's float functions give for ``dtype``: floats stay, integers promote.
    (Cached: it is asked on every call of an activation, and numpy's answer costs microseconds.)"""
    return np.result_type(dtype, np.float16)


def _grad(g: np.ndarray, like: np.ndarray) -> np.ndarray:
    """``g`` summed to ``like``'s shape and cast to its dtype (a no-op in the common case)."""
    return unbroadcast(g, like.shape).astype(like.dtype, copy=False)


class Unary(Op):
    """Shape-preserving single-input op whose output is floating point."""

    def infer(self, x):
        return (Spec(x.shape, float_dtype(x.dtype)),)


class _Binary(Op):
    """Two-input broadcasting op; output dtype is numpy's promotion of the inputs'."""

    inputs = ("a", "b")
    merge = True

    def infer(self, a, b):
        return (Spec(broadcast_shapes(a.shape, b.shape), result_dtype(a, b)),)


def _into(ctx, ufunc, a, b) -> np.ndarray:
    """``ufunc(a, b)`` written into an output allocated with ``ctx.backend.empty``, so that
    the plan can place it (over ``a`` when fusing: a ufunc reads each element before writing
    it).  Arrays of one dtype skip numpy's general shape and type rules."""
    if type(a) is np.ndarray and type(b) is np.ndarray and a.dtype == b.dtype:
        shape = a.shape if a.shape == b.shape else np.broadcast_shapes(a.shape, b.shape)
        dtype = a.dtype
    else:
        shape = np.broadcast_shapes(np.shape(a), np.shape(b))
        dtype = np.result_type(a, b)
    return ufunc(a, b, out=ctx.backend.empty(shape, dtype))


class Add(_Binary):
    """a + b; the gradient passes through to both inputs (summed over broadcast axes)."""

    type = "add"
    rowwise = inplace = commutative = True

    def pointwise(self):
        return (("add", 1),)

    def forward(self, ctx, a, b):
        ctx.save(a, b)
        return (_into(ctx, np.add, a, b),)

    def backward(self, ctx, gy):
        a, b = ctx.saved
        need_a, need_b = ctx.needs_input_grad
        return (_grad(gy, a) if need_a else None, _grad(gy, b) if need_b else None)


class Sub(_Binary):
    """a - b."""

    type = "sub"
    rowwise = inplace = True

    def pointwise(self):
        return (("sub", 1),)

    def forward(self, ctx, a, b):
        ctx.save(a, b)
        return (_into(ctx, np.subtract, a, b),)

    def backward(self, ctx, gy):
        a, b = ctx.saved
        need_a, need_b = ctx.needs_input_grad
        return (_grad(gy, a) if need_a else None, _grad(-gy, b) if need_b else None)


class Mul(_Binary):
    """a * b (Hadamard product)."""

    type = "mul"
    rowwise = inplace = commutative = True

    def pointwise(self):
        return (("mul", 1),)

    def forward(self, ctx, a, b):
        ctx.save(a, b)
        return (_into(ctx, np.multiply, a, b),)

    def backward(self, ctx, gy):
        a, b = ctx.saved
        need_a, need_b = ctx.needs_input_grad
        return (_grad(gy * b, a) if need_a else None, _grad(gy * a, b) if need_b else None)


class Div(_Binary):
    """a / b (true division: integer inputs give a float result)."""

    type = "div"

    def infer(self, a, b):
        return (Spec(broadcast_shapes(a.shape, b.shape), float_dtype(result_dtype(a, b))),)

    rowwise = inplace = True

    def pointwise(self):
        return (("div", 1),)

    def forward(self, ctx, a, b):
        if type(a) is np.ndarray and type(b) is np.ndarray and a.dtype == b.dtype \
                and a.dtype.kind == "f":
            y = _into(ctx, np.true_divide, a, b)
        else:                             # (integers: numpy's own choice of float type)
            y = a / b
        ctx.save(a, b, y)
        return (y,)

    def backward(self, ctx, gy):
        a, b, y = ctx.saved
        need_a, need_b = ctx.needs_input_grad
        ga = gb = None
        gy_b = gy / b
        if need_a:
            ga = _grad(gy_b, a)
        if need_b:
            gb = _grad(-gy_b * y, b)          # d(a/b)/db = -a/b² = -y/b
        return ga, gb


class Pow(Op):
    """base ** exponent, both differentiable; the result has the base's dtype (as ONNX Pow).

    d/d base = exponent · base^(exponent-1), taken as 0 where the exponent is 0 (so 0**0 has a
    finite gradient).  d/d exponent = y · log(base) exists only for base > 0; elsewhere the
    real power is not differentiable in the exponent and its gradient is taken as 0, so that a
    negative base raised to a constant integer power does not poison the backward with NaN.
    """

    type = "pow"
    inputs = ("base", "exponent")

    def infer(self, base, exponent):
        dtype = base.dtype if base.dtype.kind == "f" else result_dtype(base, exponent)
        return (Spec(broadcast_shapes(base.shape, exponent.shape), dtype),)

    def forward(self, ctx, base, exponent):
        e = exponent.astype(base.dtype, copy=False) if base.dtype.kind == "f" else exponent
        y = np.power(base, e)
        ctx.save(base, exponent, e, y)
        return (y,)

    def backward(self, ctx, gy):
        base, exponent, e, y = ctx.saved
        need_base, need_exp = ctx.needs_input_grad
        gb = ge = None
        with np.errstate(divide="ignore", invalid="ignore"):
            if need_base:
                d = np.where(e == 0, 0, e * np.power(base, e - 1))
                gb = _grad(gy * d, base)
            if need_exp:
                positive = base > 0
                log_base = np.log(np.where(positive, base, 1))
                ge = _grad(np.where(positive, gy * y * log_base, 0), exponent)
        return gb, ge


class Neg(Unary):
    """-x."""

    type = "neg"

    def infer(self, x):
        return (x,)

    def forward(self, ctx, x):
        return (-x,)

    def backward(self, ctx, gy):
        return (-gy,)


class Identity(Unary):
    """x unchanged (no copy); useful as a named tap point in a graph."""

    type = "identity"

    def infer(self, x):
        return (x,)

    def forward(self, ctx, x):
        return (x,)

    def backward(self, ctx, gy):
        return (gy,)


class Exp(Unary):
    """e^x; gradient e^x (the saved output)."""

    type = "exp"

    def forward(self, ctx, x):
        y = np.exp(x)
        ctx.save(y)
        return (y,)

    def backward(self, ctx, gy):
        (y,) = ctx.saved
        return (gy * y,)


class Log(Unary):
    """Natural logarithm (x > 0); gradient 1/x."""

    type = "log"

    def forward(self, ctx, x):
        ctx.save(x)
        return (np.log(x),)

    def backward(self, ctx, gy):
        (x,) = ctx.saved
        return (gy / x,)


class Sqrt(Unary):
    """√x (x >= 0); gradient 1 / (2√x), from the saved output."""

    type = "sqrt"

    def forward(self, ctx, x):
        y = np.sqrt(x)
        ctx.save(y)
        return (y,)

    def backward(self, ctx, gy):
        (y,) = ctx.saved
        return (gy * 0.5 / y,)


class Abs(Unary):
    """|x|; gradient sign(x) (0 at the kink x = 0)."""

    type = "abs"

    def infer(self, x):
        return (x,)

    def forward(self, ctx, x):
        ctx.save(x)
        return (np.abs(x),)

    def backward(self, ctx, gy):
        (x,) = ctx.saved
        return (gy * np.sign(x),)


class Reciprocal(Unary):
    """1 / x; gradient -1/x² = -y²."""

    type = "reciprocal"

    def forward(self, ctx, x):
        y = np.reciprocal(x.astype(float_dtype(x.dtype), copy=False))
        ctx.save(y)
        return (y,)

    def backward(self, ctx, gy):
        (y,) = ctx.saved
        return (-gy * y * y,)
