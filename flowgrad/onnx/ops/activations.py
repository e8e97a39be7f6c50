"""Activations (flowgrad.ops.activations): pointwise nonlinearities, softmax and compositions
of them that ONNX names (Celu, Mish, Shrink, ThresholdedRelu, Hardmax)."""
from __future__ import annotations

import numpy as np
from onnx import helper

from ..access import scalar
from ..builder import ImportProblem
from ..export import as_function
from ..translations import Translations
from ._common import axis as checked_axis

T = Translations("activations")

for _onnx, _fg in (("Relu", "relu"), ("Sigmoid", "sigmoid"), ("Tanh", "tanh"),
                   ("Softplus", "softplus"), ("Softsign", "softsign"), ("Erf", "erf"),
                   ("HardSwish", "hard_swish")):
    T.same(_onnx, _fg)
T.same("LeakyRelu", "leaky_relu", attrs=("alpha",))
T.same("Elu", "elu", attrs=("alpha",))
T.same("Selu", "selu", attrs=("alpha", "gamma"))
T.same("HardSigmoid", "hard_sigmoid", attrs=("alpha", "beta"))
T.same("Gelu", "gelu", attrs=("approximate",), since=20)


@T.imports("PRelu")
def prelu(b, a, ins):
    """A 1-d slope with one value per channel (axis 1) is aligned to that axis, as exporters
    that predate numpy broadcasting meant it."""
    x, slope = ins.need(0, "X"), ins.need(1, "slope")
    if (slope.ndim == 1 and x.ndim > 2 and slope.shape[0] not in (1, x.shape[-1])
            and slope.shape[0] == x.shape[1]):
        slope = b.op("reshape", [slope], shape=[-1] + [1] * (x.ndim - 2))[0]
    return b.final("prelu", [x, slope])


@T.exports("prelu")
def _prelu(c):
    c.node("PRelu", c.ins, c.outs)


@T.imports("Clip")
def clip_1(b, a, ins):
    return b.final("clip", [ins.need(0, "input")], min=a.float("min", -np.inf),
                   max=a.float("max", np.inf))


@T.imports("Clip", since=11, static=(1, 2))
def clip_11(b, a, ins):
    lo, hi = b.static(ins.opt(1), "Clip min"), b.static(ins.opt(2), "Clip max")
    lo = None if lo is None else scalar(lo, "Clip min")
    hi = None if hi is None else scalar(hi, "Clip max")
    attrs = {}
    if lo is not None and hi is not None and lo > hi:
        lo = hi                                 # ONNX: min > max sets everything to max
    if lo is not None:
        attrs["min"] = lo
    if hi is not None:
        attrs["max"] = hi
    return b.final("clip", [ins.need(0, "input")], **attrs)


@T.exports("clip")
def _clip(c):
    dtype = c.model.dtypes.get(c.ins[0], np.float32)
    lo = "" if np.isneginf(c.op.min) else c.const(c.op.min, dtype)
    hi = "" if np.isposinf(c.op.max) else c.const(c.op.max, dtype)
    c.node("Clip", [c.ins[0], lo, hi], c.outs)


def _coerced_softmax(fg_type: str):
    """Softmax before opset 13: flatten to 2-d at ``axis``, normalise rows, reshape back."""
    def handler(b, a, ins):
        x = ins.need(0, "input")
        axis = checked_axis(a.int("axis", 1), max(x.ndim, 1))
        if axis == x.ndim - 1:
            return b.final(fg_type, [x], axis=-1)
        flat = b.op("flatten", [x], axis=axis)[0]
        y = b.op(fg_type, [flat], axis=-1)[0]
        shape = b.op("shape", [x])[0]
        return b.final("reshape", [y, shape])
    return handler


for _onnx, _fg in (("Softmax", "softmax"), ("LogSoftmax", "log_softmax")):
    T.imports(_onnx)(_coerced_softmax(_fg))
    T.same(_onnx, _fg, attrs=("axis",), since=13)


@T.exports("step")
@as_function
def _step(c):
    """The perceptron's threshold: a model-local function (x > 0, cast back to x's type)."""
    dtype = np.dtype(c.model.dtypes.get(c.ins[0], np.float32))
    positive = c.node("Greater", [c.ins[0], c.const(0.0, dtype)])
    c.node("Cast", positive, c.outs, to=helper.np_dtype_to_tensor_dtype(dtype))


@T.imports("Celu", since=12)
def celu(b, a, ins):
    """alpha * elu(x / alpha)."""
    alpha = a.float("alpha", 1.0)
    x = ins.need(0, "X")
    if alpha == 1.0:
        return b.final("elu", [x], alpha=1.0)
    scaled = b.op("div", [x, b.const(np.asarray(alpha, x.dtype))])[0]
    e = b.op("elu", [scaled], alpha=1.0)[0]
    return b.final("mul", [e, b.const(np.asarray(alpha, x.dtype))])


@T.imports("Mish", since=18)
def mish(b, a, ins):
    """x * tanh(softplus(x))."""
    x = ins.need(0, "X")
    t = b.op("tanh", [b.op("softplus", [x])[0]])[0]
    return b.final("mul", [x, t])


@T.imports("Shrink", since=9)
def shrink(b, a, ins):
    """x + bias below -lambd, x - bias above lambd, 0 in between."""
    x = ins.need(0, "input")
    bias, lambd = a.float("bias", 0.0), a.float("lambd", 0.5)
    c = lambda v: b.const(np.asarray(v, x.dtype))  # noqa: E731
    low = b.op("less", [x, c(-lambd)])[0]
    high = b.op("greater", [x, c(lambd)])[0]
    inner = b.op("where", [high, b.op("sub", [x, c(bias)])[0], c(0)])[0]
    return b.final("where", [low, b.op("add", [x, c(bias)])[0], inner])


@T.imports("ThresholdedRelu", since=10)
def thresholded_relu(b, a, ins):
    x = ins.need(0, "X")
    alpha = b.const(np.asarray(a.float("alpha", 1.0), x.dtype))
    return b.final("where", [b.op("greater", [x, alpha])[0], x, b.const(np.asarray(0, x.dtype))])


@T.imports("Hardmax", since=13)
def hardmax(b, a, ins):
    """one_hot(argmax(x)) along ``axis`` (the first maximum wins, as in ONNX)."""
    x = ins.need(0, "input")
    axis = checked_axis(a.int("axis", -1), x.ndim)
    depth = x.shape[axis]
    if depth is None:
        raise ImportProblem("Hardmax needs a static size along its axis")
    idx = b.op("argmax", [x], axis=axis, keepdims=False)[0]
    hot = b.op("one_hot", [idx, b.const(np.asarray(depth, np.int64)),
                           b.const(np.asarray([0, 1], x.dtype))], axis=axis)[0]
    return b.final("identity", [hot])


@T.imports("Swish", since=24)
def swish(b, a, ins):
    """x * sigmoid(alpha * x) (alpha = 1 is SiLU), from flowgrad ops."""
    x = ins.need(0, "X")
    alpha = a.float("alpha", 1.0)
    scaled = x if alpha == 1.0 else b.op("mul", [x, b.const(np.asarray(alpha, x.dtype))])[0]
    return b.final("mul", [x, b.op("sigmoid", [scaled])[0]])
