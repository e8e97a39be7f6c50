"""Reductions (flowgrad.ops.reduce), and ReduceL1 / ReduceSumSquare / ReduceLogSum /
ReduceLogSumExp composed of them.  Opset 18 (13 for ReduceSum) moved ``axes`` from an
attribute to an input: one handler per form."""
from __future__ import annotations

from ..translations import Translations
from ._common import axes_input, ints

T = Translations("reduce")


def _attrs(axes, keepdims) -> dict:
    attrs = {"keepdims": bool(keepdims)}
    if axes is not None and len(axes):
        attrs["axes"] = [int(v) for v in axes]
    return attrs


def _reduce(fg_type: str):
    def build(b, x, attrs):
        return b.final(fg_type, [x], **attrs)
    return build


def _composite(kind: str):
    """ReduceL1 / ReduceSumSquare / ReduceLogSum / ReduceLogSumExp from flowgrad ops."""
    def build(b, x, attrs):
        if kind == "l1":
            return b.final("reduce_sum", [b.op("abs", [x])[0]], **attrs)
        if kind == "sum_square":
            return b.final("reduce_sum", [b.op("mul", [x, x])[0]], **attrs)
        if kind == "log_sum":
            return b.final("log", [b.op("reduce_sum", [x], **attrs)[0]])
        # log-sum-exp, shifted by the max so large inputs do not overflow
        m = b.op("reduce_max", [x], **{**attrs, "keepdims": True})[0]
        s = b.op("reduce_sum", [b.op("exp", [b.op("sub", [x, m])[0]])[0]], **attrs)[0]
        m_out = m if attrs["keepdims"] else b.op("reduce_max", [x], **attrs)[0]
        return b.final("add", [b.op("log", [s])[0], m_out])
    return build


def _versions(build):
    """The attribute form and the input form (with ``noop_with_empty_axes``) of a reduction."""
    def with_attr(b, a, ins):
        return build(b, ins.need(0, "data"), _attrs(a.ints("axes", None), a.int("keepdims", 1)))

    def with_input(b, a, ins):
        axes = b.static(ins.opt(1), "reduction axes")
        axes = [] if axes is None else ints(axes, "reduction axes")
        if not axes and a.int("noop_with_empty_axes", 0):
            return b.final("identity", [ins.need(0, "data")])
        return build(b, ins.need(0, "data"), _attrs(axes, a.int("keepdims", 1)))
    return with_attr, with_input


for _onnx, _build, _fg in (
        ("ReduceMean", _reduce("reduce_mean"), "reduce_mean"),
        ("ReduceSum", _reduce("reduce_sum"), "reduce_sum"),
        ("ReduceMax", _reduce("reduce_max"), "reduce_max"),
        ("ReduceMin", _reduce("reduce_min"), "reduce_min"),
        ("ReduceL2", _reduce("reduce_l2"), "reduce_l2"),
        ("ReduceProd", _reduce("reduce_prod"), "reduce_prod"),
        ("ReduceL1", _composite("l1"), None),
        ("ReduceSumSquare", _composite("sum_square"), None),
        ("ReduceLogSum", _composite("log_sum"), None),
        ("ReduceLogSumExp", _composite("log_sum_exp"), None)):
    _attr_form, _input_form = _versions(_build)
    T.imports(_onnx)(_attr_form)
    T.imports(_onnx, since=13 if _onnx == "ReduceSum" else 18, static=(1,))(_input_form)
    if _fg:
        T.exports(_fg)(axes_input(_onnx, lambda op: {"keepdims": int(op.keepdims)}))
