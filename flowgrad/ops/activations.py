"""Nonlinearities.  Each backward multiplies the incoming gradient by f'(x).

Forms are chosen to be stable over the whole float range: sigmoid and softplus go through
``logaddexp``, softmax subtracts the max, elu/selu use ``expm1`` of the negative part only (no
overflow warnings for large positive x).  Constants are Python floats, so float32 stays float32.
"""
from __future__ import annotations

import math

import numpy as np

from ..op import Attr, Op, ShapeError, Spec, broadcast_shapes, normalize_axis, result_dtype, \
    unbroadcast
from .elementwise import Unary, float_dtype

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
_INV_SQRT_PI = 1.0 / math.sqrt(math.pi)


class _SameDtype(Unary):
    """Pointwise op whose output has its input's dtype (also for integer inputs)."""

    def infer(self, x):
        return (x,)


class Relu(_SameDtype):
    """max(x, 0); gradient 1 where x > 0."""

    type = "relu"
    rowwise = inplace = True

    def forward(self, ctx, x):
        y = np.maximum(x, 0, out=ctx.backend.empty(x.shape, x.dtype))
        ctx.save(y)
        return (y,)

    def backward(self, ctx, gy):
        (y,) = ctx.saved
        return (gy * (y > 0),)


class LeakyRelu(Unary):
    """x for x > 0, alpha·x otherwise: a small slope keeps negative units trainable."""

    type = "leaky_relu"
    attrs = {"alpha": Attr("float", 0.01, doc="slope for x <= 0")}
    rowwise = inplace = True

    def forward(self, ctx, x):
        positive = x > 0
        ctx.save(positive)
        y = ctx.backend.empty(x.shape, float_dtype(x.dtype))
        np.multiply(x, self.alpha, out=y, where=~positive)
        np.copyto(y, x, where=positive)
        return (y,)

    def backward(self, ctx, gy):
        (positive,) = ctx.saved
        return (np.where(positive, gy, self.alpha * gy),)


def _elu(x: np.ndarray, alpha: float):
    """alpha·(e^x - 1) for x <= 0, x otherwise; also returns the derivative."""
    neg = alpha * np.expm1(np.minimum(x, 0))
    positive = x > 0
    y = np.where(positive, x, neg)
    dy = np.where(positive, 1.0, neg + alpha).astype(y.dtype, copy=False)
    return y, dy


class Elu(Unary):
    """Exponential linear unit: x for x > 0, alpha·(e^x − 1) otherwise."""

    type = "elu"
    attrs = {"alpha": Attr("float", 1.0, doc="saturation value for large negative x is -alpha")}

    def forward(self, ctx, x):
        y, dy = _elu(x, self.alpha)
        ctx.save(dy)
        return (y,)

    def backward(self, ctx, gy):
        (dy,) = ctx.saved
        return (gy * dy,)


class Selu(Unary):
    """Scaled ELU, gamma·elu(x, alpha), with ONNX's self-normalising constants as defaults."""

    type = "selu"
    attrs = {"alpha": Attr("float", 1.67326319217681884765625),
             "gamma": Attr("float", 1.05070102214813232421875)}

    def forward(self, ctx, x):
        y, dy = _elu(x, self.alpha)
        ctx.save(dy)
        return (self.gamma * y,)

    def backward(self, ctx, gy):
        (dy,) = ctx.saved
        return (gy * (self.gamma * dy),)


class Sigmoid(Unary):
    """1 / (1 + e^-x), computed without overflow; gradient y (1 - y)."""

    type = "sigmoid"
    rowwise = inplace = True

    def forward(self, ctx, x):
        y = _sigmoid(x, out=ctx.backend.empty(x.shape, float_dtype(x.dtype)))
        ctx.save(y)
        return (y,)

    def backward(self, ctx, gy):
        (y,) = ctx.saved
        return (gy * y * (1 - y),)


def _sigmoid(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """exp(−log(1 + e^−x)): no overflow for any x, full relative precision in both tails."""
    t = np.negative(x, dtype=float_dtype(x.dtype), out=out)
    np.logaddexp(0, t, out=t)
    np.negative(t, out=t)
    return np.exp(t, out=t)


class Tanh(Unary):
    """tanh(x); gradient 1 - y²."""

    type = "tanh"
    rowwise = inplace = True

    def forward(self, ctx, x):
        y = np.tanh(x, out=ctx.backend.empty(x.shape, float_dtype(x.dtype)))
        ctx.save(y)
        return (y,)

    def backward(self, ctx, gy):
        (y,) = ctx.saved
        return (gy * (1 - y * y),)


class Softplus(Unary):
    """log(1 + e^x) via ``logaddexp`` (exact for large |x|); gradient sigmoid(x)."""

    type = "softplus"

    def forward(self, ctx, x):
        ctx.save(x)
        return (np.logaddexp(0, x).astype(float_dtype(x.dtype), copy=False),)

    def backward(self, ctx, gy):
        (x,) = ctx.saved
        return (gy * _sigmoid(x),)


class Softsign(Unary):
    """x / (1 + |x|); gradient 1 / (1 + |x|)²."""

    type = "softsign"

    def forward(self, ctx, x):
        d = 1 + np.abs(x)
        ctx.save(d)
        return (x / d,)

    def backward(self, ctx, gy):
        (d,) = ctx.saved
        return (gy / (d * d),)


class Step(_SameDtype):
    """Hard threshold: 1 where x > 0, else 0 — the perceptron unit.

    Its derivative is 0 almost everywhere, so backward returns zeros rather than refusing:
    a graph mixing threshold units with differentiable ones still runs backward, and the
    threshold units simply pass no signal (as in the lecture notes).
    """

    type = "step"

    def forward(self, ctx, x):
        ctx.save(x.shape, x.dtype)
        return ((x > 0).astype(x.dtype),)

    def backward(self, ctx, gy):
        shape, dtype = ctx.saved
        return (np.zeros(shape, dtype),)


# -- erf and gelu ---------------------------------------------------------------------------

_ERF_SERIES_TERMS = 50      # enough for full float64 precision on |x| < 3
_ERFC_FRACTION_TERMS = 40   # likewise for the continued fraction on |x| >= 3


def erf(x: np.ndarray) -> np.ndarray:
    """The error function, vectorised in numpy to full float64 precision (no scipy needed).

    |x| < 3: erf(x) = 2/√π · e^(−x²) · Σ 2ⁿ x^(2n+1) / (2n+1)!!   (all terms positive, so no
    cancellation); |x| >= 3: erf(x) = 1 − erfc(x) with erfc's continued fraction
    e^(−x²)/√π · 1/(x + ½/(x + 1/(x + 3/2/(x + …)))), evaluated bottom-up.  Both loops run over
    a fixed number of terms, never over elements.
    """
    x = np.asarray(x)
    dtype = float_dtype(x.dtype)
    x = x.astype(np.float64, copy=False)      # the sums need float64 to round to 1 ulp in float32
    a = np.abs(x)
    small = np.minimum(a, 3.0)
    x2 = small * small
    term = small.copy()
    total = small.copy()
    for n in range(_ERF_SERIES_TERMS):
        term *= (2.0 / (2 * n + 3)) * x2
        total += term
    series = _TWO_OVER_SQRT_PI * np.exp(-x2) * total
    large = np.maximum(a, 3.0)
    t = large.copy()
    for k in range(_ERFC_FRACTION_TERMS, 0, -1):
        t = large + (0.5 * k) / t
    fraction = 1 - _INV_SQRT_PI * np.exp(-large * large) / t
    return np.copysign(np.where(a < 3.0, series, fraction), x).astype(dtype, copy=False)


class Erf(Unary):
    """The Gauss error function; gradient 2/√π · e^(−x²)."""

    type = "erf"

    def forward(self, ctx, x):
        ctx.save(x)
        return (erf(x),)

    def backward(self, ctx, gy):
        (x,) = ctx.saved
        return (gy * (_TWO_OVER_SQRT_PI * np.exp(-x * x)),)


class Gelu(Unary):
    """x·Φ(x), exactly (``approximate: none``, via erf) or with the tanh approximation."""

    type = "gelu"
    attrs = {"approximate": Attr("str", "none", choices=("none", "tanh"))}

    def forward(self, ctx, x):
        ctx.save(x)
        if self.approximate == "tanh":
            t = np.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x * x * x))
            return (0.5 * x * (1 + t),)
        return (0.5 * x * (1 + erf(x * _INV_SQRT_2)),)

    def backward(self, ctx, gy):
        (x,) = ctx.saved
        if self.approximate == "tanh":
            t = np.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x * x * x))
            dt = (1 - t * t) * (_SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x))
            return (gy * (0.5 * (1 + t) + 0.5 * x * dt),)
        cdf = 0.5 * (1 + erf(x * _INV_SQRT_2))
        pdf = _INV_SQRT_2PI * np.exp(-0.5 * x * x)
        return (gy * (cdf + x * pdf),)


# -- clipping and hard approximations -------------------------------------------------------

class Clip(_SameDtype):
    """min(max(x, min), max); the gradient passes where min < x < max."""

    type = "clip"
    attrs = {"min": Attr("float", -math.inf, doc="lower bound"),
             "max": Attr("float", math.inf, doc="upper bound")}

    def check(self):
        if self.min > self.max:
            from ..errors import AttrError
            raise AttrError(f"clip needs min <= max, got min={self.min}, max={self.max}",
                            attr="min")

    rowwise = inplace = True

    def forward(self, ctx, x):
        inside = (x > self.min) & (x < self.max)
        ctx.save(inside)
        if x.dtype.kind != "f":
            return (np.clip(x, self.min, self.max).astype(x.dtype, copy=False),)
        return (np.clip(x, self.min, self.max, out=ctx.backend.empty(x.shape, x.dtype)),)

    def backward(self, ctx, gy):
        (inside,) = ctx.saved
        return (gy * inside,)


class HardSigmoid(Unary):
    """max(0, min(1, alpha·x + beta)): a piecewise-linear sigmoid (ONNX defaults)."""

    type = "hard_sigmoid"
    attrs = {"alpha": Attr("float", 0.2), "beta": Attr("float", 0.5)}
    rowwise = inplace = True

    def forward(self, ctx, x):
        z = np.multiply(x, self.alpha, out=ctx.backend.empty(x.shape, float_dtype(x.dtype)))
        np.add(z, self.beta, out=z)
        ctx.save((z > 0) & (z < 1))
        return (np.clip(z, 0, 1, out=z),)

    def backward(self, ctx, gy):
        (inside,) = ctx.saved
        return (gy * inside * self.alpha,)


class HardSwish(Unary):
    """x · hard_sigmoid(x) with alpha = 1/6, beta = 1/2 (ONNX HardSwish, MobileNetV3)."""

    type = "hard_swish"

    def forward(self, ctx, x):
        ctx.save(x)
        return (x * np.clip(x / 6 + 0.5, 0, 1),)

    def backward(self, ctx, gy):
        (x,) = ctx.saved
        d = np.where(x <= -3, 0.0, np.where(x >= 3, 1.0, x / 3 + 0.5)).astype(gy.dtype, copy=False)
        return (gy * d,)


class Prelu(Op):
    """Leaky ReLU with a learned slope: x for x > 0, slope·x otherwise.

    ``slope`` broadcasts against ``x`` (one per channel is typical) and its gradient is summed
    back to its own shape.
    """

    type = "prelu"
    inputs = ("x", "slope")

    def infer(self, x, slope):
        shape = broadcast_shapes(x.shape, slope.shape)
        if len(shape) != x.ndim or any(d is not None and e is not None and d != e
                                       for d, e in zip(shape, x.shape)):
            raise ShapeError(f"prelu slope of shape {slope.shape} must broadcast to x's shape "
                             f"{x.shape} without enlarging it")
        return (Spec(x.shape, result_dtype(x, slope)),)

    def forward(self, ctx, x, slope):
        positive = x > 0
        ctx.save(x, slope, positive)
        return (np.where(positive, x, slope * x),)

    def backward(self, ctx, gy):
        x, slope, positive = ctx.saved
        need_x, need_slope = ctx.needs_input_grad
        gx = gs = None
        if need_x:
            gx = unbroadcast(np.where(positive, gy, gy * slope), x.shape).astype(x.dtype,
                                                                                copy=False)
        if need_slope:
            gs = unbroadcast(np.where(positive, 0, gy * x), slope.shape).astype(slope.dtype,
                                                                                copy=False)
        return gx, gs


# -- normalised exponentials ----------------------------------------------------------------

class _AlongAxis(Unary):
    attrs = {"axis": Attr("int", -1, doc="the axis that sums to one (batch axis is 0)")}

    def infer(self, x):
        normalize_axis(self.axis, x.ndim)
        return (Spec(x.shape, float_dtype(x.dtype)),)


class Softmax(_AlongAxis):
    """exp(x) / Σ exp(x) along ``axis``, with the max subtracted first (no overflow)."""

    type = "softmax"

    def forward(self, ctx, x):
        e = np.exp(x - x.max(axis=self.axis, keepdims=True))
        y = e / e.sum(axis=self.axis, keepdims=True)
        ctx.save(y)
        return (y,)

    def backward(self, ctx, gy):
        (y,) = ctx.saved
        gx = gy * y
        return (gx - y * gx.sum(axis=self.axis, keepdims=True),)


class LogSoftmax(_AlongAxis):
    """x − logsumexp(x) along ``axis``: the stable log of softmax, for likelihood losses."""

    type = "log_softmax"

    def forward(self, ctx, x):
        shifted = x - x.max(axis=self.axis, keepdims=True)
        y = shifted - np.log(np.exp(shifted).sum(axis=self.axis, keepdims=True))
        ctx.save(y)
        return (y,)

    def backward(self, ctx, gy):
        (y,) = ctx.saved
        return (gy - np.exp(y) * gy.sum(axis=self.axis, keepdims=True),)
