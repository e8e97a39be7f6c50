"""Elementwise math, comparisons and logic (flowgrad.ops.elementwise, compare, math_extra), the
variadic merges Sum, Mean, Min, Max, the trigonometric functions, the float tests IsNaN/IsInf,
the integer bit operations, and TfIdfVectorizer's n-gram counts."""
from __future__ import annotations

import numpy as np

from onnx import helper

from ..builder import ImportProblem, Value
from ..tensors import DTYPES, check_elem_type
from ..translations import Translations, node_exporter, node_importer
from ._common import axis as checked_axis, unchanged

T = Translations("elementwise")

for _onnx, _fg in (("Neg", "neg"), ("Exp", "exp"), ("Log", "log"), ("Sqrt", "sqrt"),
                   ("Abs", "abs"), ("Reciprocal", "reciprocal"), ("Floor", "floor"),
                   ("Ceil", "ceil"), ("Not", "not"), ("Sin", "sin"), ("Cos", "cos"),
                   ("Round", "round"), ("Sign", "sign")):
    T.same(_onnx, _fg)
T.same("Mod", "mod", attrs=("fmod",))
T.exports("identity")(node_exporter("Identity"))


@T.imports("Identity")
def identity(b, a, ins):
    """No step for an op's value (:func:`~._common.unchanged`)."""
    return unchanged(b, ins.need(0, "input"))


def _legacy_broadcast(b, a, x: Value, y: Value) -> Value:
    """Opset < 7 ``broadcast=1, axis=k``: align ``y`` with ``x`` starting at axis ``k``."""
    if a.int("broadcast", 0) and "axis" in a and y.ndim:
        axis = checked_axis(a.int("axis"), x.ndim)
        trailing = x.ndim - axis - y.ndim
        if trailing > 0:
            shape = list(y.shape) + [1] * trailing
            y = b.op("reshape", [y], shape=[-1 if d is None else d for d in shape])[0]
    return y


def _binary(fg_type: str):
    def handler(b, a, ins):
        x = ins.need(0, "A")
        return b.final(fg_type, [x, _legacy_broadcast(b, a, x, ins.need(1, "B"))])
    return handler


for _onnx, _fg in (("Add", "add"), ("Sub", "sub"), ("Mul", "mul"), ("Equal", "equal"),
                   ("Less", "less"), ("Greater", "greater"), ("And", "and"), ("Or", "or"),
                   ("Xor", "xor"), ("LessOrEqual", "less_or_equal"),
                   ("GreaterOrEqual", "greater_or_equal")):
    T.imports(_onnx)(_binary(_fg))
    T.exports(_fg)(node_exporter(_onnx))
T.exports("pow")(node_exporter("Pow"))
T.exports("div")(node_exporter("Div"))


@T.imports("Pow")
def pow_(b, a, ins):
    """The result has the base's type, also for an integer base and a float exponent."""
    x = ins.need(0, "X")
    y = _legacy_broadcast(b, a, x, ins.need(1, "Y"))
    if x.dtype.kind in "iu" and y.dtype.kind == "f":
        p = b.op("pow", [b.op("cast", [x], to="float64")[0], y])[0]
        return b.final("cast", [p], to=x.dtype.name)
    return b.final("pow", [x, y])


@T.imports("Div")
def div(b, a, ins):
    x = ins.need(0, "A")
    y = _legacy_broadcast(b, a, x, ins.need(1, "B"))
    if x.dtype.kind in "iu" and y.dtype.kind in "iu":
        q = b.op("div", [x, y])[0]            # ONNX integer division truncates toward zero
        return b.final("cast", [q], to=x.dtype.name)
    return b.final("div", [x, y])


def _variadic(fg_type: str):
    def handler(b, a, ins):
        xs = [v for v in ins if v is not None]
        if not xs:
            raise ImportProblem("needs at least one input; connect a value to it")
        if len(xs) == 1:
            return b.final("identity", xs)
        return b.final(fg_type, xs)
    return handler


for _onnx, _fg in (("Sum", "sum"), ("Mean", "mean"), ("Min", "min"), ("Max", "max")):
    T.imports(_onnx)(_variadic(_fg))
    T.exports(_fg)(node_exporter(_onnx))


def _hyperbolic(sign: float):
    def handler(b, a, ins):
        x = ins.need(0, "input")
        e_pos = b.op("exp", [x])[0]
        e_neg = b.op("exp", [b.op("neg", [x])[0]])[0]
        both = b.op("add" if sign > 0 else "sub", [e_pos, e_neg])[0]
        return b.final("mul", [both, b.const(np.asarray(0.5, x.dtype))])
    return handler


T.imports("Cosh", since=9)(_hyperbolic(1.0))
T.imports("Sinh", since=9)(_hyperbolic(-1.0))


# trigonometric and hyperbolic functions (flowgrad.ops.math_extra)
for _onnx, _fg in (("Tan", "tan"), ("Asin", "asin"), ("Acos", "acos"), ("Atan", "atan"),
                   ("Asinh", "asinh"), ("Acosh", "acosh"), ("Atanh", "atanh")):
    T.same(_onnx, _fg)

# float tests and integer bit operations (forward-only)
T.same("IsNaN", "is_nan")
T.same("IsInf", "is_inf", attrs=("detect_positive", "detect_negative"))
for _onnx, _fg in (("BitwiseAnd", "bitwise_and"), ("BitwiseOr", "bitwise_or"),
                   ("BitwiseXor", "bitwise_xor"), ("BitwiseNot", "bitwise_not")):
    T.same(_onnx, _fg)
T.imports("BitShift", since=11)(node_importer("bit_shift", ("direction",)))


@T.exports("bit_shift")
def _bit_shift(c):
    """Signed integers need BitShift-28 (unsigned ones have had it since 11)."""
    signed = np.dtype(c.model.dtypes.get(c.ins[0], np.uint8)).kind == "i"
    c.node("BitShift", c.ins, c.outs, opset=28 if signed else 11, direction=c.op.direction)


@T.imports("BitCast", since=26)
def bit_cast(b, a, ins):
    """The bytes of the input read as type ``to`` (same width; checked by the op)."""
    to = a.int("to")
    why = check_elem_type(to)
    if why:
        raise ImportProblem(f"the target type 'to' {why}")
    x = ins.need(0, "input")
    if DTYPES[to].itemsize != x.dtype.itemsize:
        raise ImportProblem(f"BitCast from {x.dtype} ({8 * x.dtype.itemsize} bits) to "
                            f"{DTYPES[to]} ({8 * DTYPES[to].itemsize} bits): the two types "
                            "must have the same width")
    return b.final("bit_cast", [x], to=DTYPES[to].name)


@T.exports("bit_cast")
def _bit_cast(c):
    c.node("BitCast", c.ins, c.outs, opset=26,
           to=helper.np_dtype_to_tensor_dtype(np.dtype(c.op.to)))


@T.imports("TfIdfVectorizer", since=9)
def tfidf_vectorizer(b, a, ins):
    """Integer pools only: flowgrad has no string tensors (pool_strings is refused)."""
    if "pool_strings" in a:
        raise ImportProblem("TfIdfVectorizer with pool_strings needs string tensors, which "
                            "flowgrad does not have; tokenize to integer ids and use "
                            "pool_int64s")
    attrs = {k: a.int(k) for k in ("min_gram_length", "max_gram_length", "max_skip_count")}
    attrs.update(mode=a.string("mode"), ngram_counts=a.ints("ngram_counts"),
                 ngram_indexes=a.ints("ngram_indexes"), pool=a.ints("pool_int64s"))
    if "weights" in a:
        attrs["weights"] = a.floats("weights")
    return b.final("tfidf_vectorizer", [ins.need(0, "X")], **attrs)


@T.exports("tfidf_vectorizer")
def _tfidf_vectorizer(c):
    op = c.op
    attrs = dict(mode=op.mode, min_gram_length=op.min_gram_length,
                 max_gram_length=op.max_gram_length, max_skip_count=op.max_skip_count,
                 ngram_counts=list(op.ngram_counts), ngram_indexes=list(op.ngram_indexes),
                 pool_int64s=list(op.pool))
    if op.weights is not None:
        attrs["weights"] = list(op.weights)
    c.node("TfIdfVectorizer", c.ins, c.outs, **attrs)
