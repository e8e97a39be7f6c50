"""More pointwise math (ONNX Floor, Ceil, Round, Sign, Sin, Cos, Mod) and the variadic
broadcasting Min, Max and Mean.

Floor, ceil, round and sign are piecewise constant: their gradient is zero almost everywhere,
and they return zeros rather than refusing, so a graph that rounds somewhere still trains
(like ``step``).  Min and max send each gradient element to the input that supplied the
extreme value; on ties, to the first such input, so gradients are never double counted.
"""
from __future__ import annotations

import numpy as np

from ..op import Attr, Op, Spec, broadcast_shapes, result_dtype, unbroadcast


class _Pointwise(Op):
    """One input, same shape and dtype out."""

    def infer(self, x):
        return (Spec(x.shape, x.dtype),)


class _Flat(_Pointwise):
    """A piecewise-constant function: backward returns zeros of the input's shape."""

    fn = staticmethod(np.floor)

    def forward(self, ctx, x):
        ctx.save(x.shape, x.dtype)
        return (self.fn(x),)

    def backward(self, ctx, gy):
        shape, dtype = ctx.saved
        return (np.zeros(shape, dtype) if ctx.needs_input_grad[0] else None,)


class Floor(_Flat):
    """Largest integer <= x (as a float); zero gradient."""

    type = "floor"
    fn = staticmethod(np.floor)


class Ceil(_Flat):
    """Smallest integer >= x (as a float); zero gradient."""

    type = "ceil"
    fn = staticmethod(np.ceil)


class Round(_Flat):
    """Nearest integer, halves to even (ONNX Round, numpy ``round``); zero gradient."""

    type = "round"
    fn = staticmethod(np.round)


class Sign(_Flat):
    """-1, 0 or 1 in the input's dtype; zero gradient."""

    type = "sign"
    fn = staticmethod(np.sign)


class Sin(_Pointwise):
    """sin(x); gradient cos(x)."""

    type = "sin"

    def forward(self, ctx, x):
        ctx.save(x)
        return (np.sin(x),)

    def backward(self, ctx, gy):
        (x,) = ctx.saved
        return (gy * np.cos(x),)


class Cos(_Pointwise):
    """cos(x); gradient -sin(x)."""

    type = "cos"

    def forward(self, ctx, x):
        ctx.save(x)
        return (np.cos(x),)

    def backward(self, ctx, gy):
        (x,) = ctx.saved
        return (-gy * np.sin(x),)


class Mod(Op):
    """Remainder of a / b with broadcasting (ONNX Mod).

    ``fmod: false`` (the default) gives the sign of the divisor, like Python's ``%``
    (``np.mod``); ``fmod: true`` the sign of the dividend, like C's ``fmod`` (ONNX requires it
    for floats).  Gradients: 1 for a, and -floor(a/b) (or -trunc(a/b) with fmod) for b.
    """

    type = "mod"
    inputs = ("a", "b")
    attrs = {"fmod": Attr("bool", False, doc="sign of the dividend (C fmod) instead of divisor")}

    def infer(self, a, b):
        return (Spec(broadcast_shapes(a.shape, b.shape), result_dtype(a, b)),)

    def forward(self, ctx, a, b):
        ctx.save(a, b)
        with np.errstate(invalid="ignore"):   # x mod 0 and inf mod x are NaN, as in ONNX
            return ((np.fmod if self.fmod else np.mod)(a, b),)

    def backward(self, ctx, gy):
        a, b = ctx.saved
        need_a, need_b = ctx.needs_input_grad
        ga = unbroadcast(gy, a.shape).astype(a.dtype, copy=False) if need_a else None
        gb = None
        if need_b:
            q = (np.trunc if self.fmod else np.floor)(a / b)
            gb = unbroadcast(-gy * q, b.shape).astype(b.dtype, copy=False)
        return ga, gb


class _Variadic(Op):
    """Any number of inputs combined elementwise with broadcasting."""

    inputs = ("xs",)
    variadic = True
    merge = True

    def infer(self, *xs):
        return (Spec(broadcast_shapes(*(x.shape for x in xs)), result_dtype(*xs)),)


class _Extreme(_Variadic):
    """Elementwise min or max of the inputs (``fn`` is ``np.minimum`` or ``np.maximum``)."""

    fn = staticmethod(np.maximum)

    def forward(self, ctx, *xs):
        y = xs[0]
        for x in xs[1:]:
            y = self.fn(y, x)
        if len(xs) == 1:
            y = np.array(y, copy=True)
        ctx.save(xs, y)
        return (y,)

    def backward(self, ctx, gy):
        xs, y = ctx.saved
        grads = []
        taken = np.zeros(y.shape, bool)     # elements already credited to an earlier input
        for x, need in zip(xs, ctx.needs_input_grad):
            wins = (x == y) & ~taken
            taken |= wins
            grads.append(unbroadcast(np.where(wins, gy, 0), x.shape).astype(x.dtype, copy=False)
                         if need else None)
        return tuple(grads)


class Max(_Extreme):
    """Elementwise maximum of any number of inputs (ONNX Max); ties credit the first input."""

    type = "max"
    fn = staticmethod(np.maximum)


class Min(_Extreme):
    """Elementwise minimum of any number of inputs (ONNX Min); ties credit the first input."""

    type = "min"
    fn = staticmethod(np.minimum)


class Mean(_Variadic):
    """Elementwise mean of any number of inputs (ONNX Mean); each gets gradient / n."""

    type = "mean"

    def forward(self, ctx, *xs):
        total = xs[0]
        for x in xs[1:]:
            total = total + x
        ctx.save(tuple((x.shape, x.dtype) for x in xs))
        return ((total / len(xs)).astype(result_dtype(*map(Spec.of, xs)), copy=False),)

    def backward(self, ctx, gy):
        (meta,) = ctx.saved
        g = gy / len(meta)
        return tuple(unbroadcast(g, s).astype(d, copy=False) if need else None
                     for (s, d), need in zip(meta, ctx.needs_input_grad))
