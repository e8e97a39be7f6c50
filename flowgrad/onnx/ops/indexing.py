"""Indexing (flowgrad.ops.indexing): gather, slice, split, where, top-k, arg-max/min, one-hot,
and Trilu as a where with a constant mask."""
from __future__ import annotations

import numpy as np

from ..access import scalar
from ..builder import ImportProblem, Value, check_size
from ..translations import Translations, node_exporter
from ._common import ints, present

T = Translations("indexing")

T.exports("gather")(node_exporter("Gather", ("axis",)))
T.same("GatherElements", "gather_elements", attrs=("axis",))
T.same("OneHot", "one_hot", attrs=("axis",), since=9)
T.same("Where", "where")


@T.imports("Gather")
def gather(b, a, ins):
    """Picking static dims from a shape at constant indices folds (``Builder.rearranged``)."""
    return b.rearranged("gather", [ins.need(0, "data"), ins.need(1, "indices")],
                        **present(a, ("axis",)))


@T.imports("Slice")
def slice_1(b, a, ins):
    attrs = {"starts": a.ints("starts"), "ends": a.ints("ends")}
    if "axes" in a:
        attrs["axes"] = a.ints("axes")
    return b.rearranged("slice", [ins.need(0, "data")], **attrs)


@T.imports("Slice", since=10, static=(1, 2, 3, 4))
def slice_10(b, a, ins):
    bounds = [ins.need(1, "starts"), ins.need(2, "ends"), ins.opt(3), ins.opt(4)]
    if any(v is not None and not v.is_const and v.initial is None for v in bounds):
        # bounds computed at run time (a loop body slicing at its iteration number): ports
        return b.final("slice", [ins.need(0, "data")] + bounds)
    attrs = {"starts": ints(b.static(ins.need(1, "starts"), "Slice starts"), "Slice starts"),
             "ends": ints(b.static(ins.need(2, "ends"), "Slice ends"), "Slice ends")}
    for i, key in ((3, "axes"), (4, "steps")):
        value = b.static(ins.opt(i), f"Slice {key}")
        if value is not None:
            attrs[key] = ints(value, f"Slice {key}")
    return b.rearranged("slice", [ins.need(0, "data")], **attrs)


@T.exports("slice")
def _slice(c):
    ins = [c.ins[0]]
    for i, key in enumerate(("starts", "ends", "axes", "steps"), start=1):
        given = c.ins[i] if len(c.ins) > i and c.ins[i] else None
        value = getattr(c.op, key)
        ins.append(given or ("" if value is None else c.const(value)))
    while ins and ins[-1] == "":
        ins.pop()
    c.node("Slice", ins, c.outs)


def _split(b, x: Value, axis: int, sizes, count: int):
    attrs = {"split": ints(sizes, "Split sizes")} if sizes is not None else {"parts": count}
    return b.final("split", [x], axis=axis, **attrs)


@T.imports("Split", static=(1,))
def split_1(b, a, ins):
    """Opset 2 added the sizes as an optional input beside the attribute."""
    sizes = a.ints("split", None)
    if sizes is None and ins.opt(1) is not None:
        sizes = b.static(ins.opt(1), "Split sizes")
    return _split(b, ins.need(0, "input"), a.int("axis", 0), sizes, len(b.current.output))


@T.imports("Split", since=13, static=(1,))
def split_13(b, a, ins):
    sizes = b.static(ins.opt(1), "Split sizes")
    count = a.int("num_outputs", len(b.current.output))
    return _split(b, ins.need(0, "input"), a.int("axis", 0), sizes, count)


@T.exports("split")
def _split_export(c):
    ins = [c.ins[0]]
    attrs = {"axis": c.op.axis}
    if len(c.ins) > 1 and c.ins[1]:
        ins.append(c.ins[1])
    elif c.op.split is not None:
        ins.append(c.const(c.op.split))
    else:
        attrs["num_outputs"] = len(c.outs)
    c.node("Split", ins, c.outs, **attrs)


def _topk(b, a, x, k: int):
    return b.op("topk", [x], k=k, axis=a.int("axis", -1), largest=a.bool("largest", True),
                sorted=a.bool("sorted", True))


@T.imports("TopK")
def topk_1(b, a, ins):
    return _topk(b, a, ins.need(0, "X"), a.int("k"))


@T.imports("TopK", since=10, static=(1,))
def topk_10(b, a, ins):
    return _topk(b, a, ins.need(0, "X"),
                 scalar(b.static(ins.need(1, "K"), "TopK k"), "TopK k", int))


@T.exports("topk")
def _topk_export(c):
    k = c.ins[1] if len(c.ins) > 1 and c.ins[1] else c.const([c.op.k])
    c.node("TopK", [c.ins[0], k], c.outs, axis=c.op.axis, largest=int(c.op.largest),
           sorted=int(c.op.sorted))


def _arg(fg_type: str):
    """ArgMax / ArgMin with ONNX's defaults (axis 0, keepdims)."""
    def handler(b, a, ins):
        return b.final(fg_type, [ins.need(0, "data")], axis=a.int("axis", 0),
                       keepdims=a.bool("keepdims", True),
                       select_last_index=a.bool("select_last_index", False))
    return handler


for _onnx, _fg in (("ArgMax", "argmax"), ("ArgMin", "argmin")):
    T.imports(_onnx)(_arg(_fg))
    T.exports(_fg)(node_exporter(_onnx, ("axis", "keepdims", "select_last_index")))


@T.imports("Trilu", since=14, static=(1,))
def trilu(b, a, ins):
    """A constant lower/upper triangular mask (built at load time) selects the values."""
    x = ins.need(0, "input")
    k = b.static(ins.opt(1), "Trilu k")
    k = 0 if k is None else scalar(k, "Trilu k", int)
    if x.ndim < 2:
        raise ImportProblem(f"Trilu needs an input of 2 or more dims, not {x.ndim}")
    rows, cols = x.shape[-2], x.shape[-1]
    if rows is None or cols is None:
        raise ImportProblem("Trilu needs the last two dims to be static")
    check_size((rows, cols), bool, "Trilu's mask")
    ones = np.ones((rows, cols), bool)
    mask = np.triu(ones, k) if a.bool("upper", True) else np.tril(ones, k)
    return b.final("where", [b.const(mask), x, b.const(np.zeros((), x.dtype))])


# -- scatter, gather_nd, cumulative ops, data-dependent selections ----------------------------

def _reduction(a) -> str:
    value = a.string("reduction", "none")
    if value not in ("none", "add", "mul", "max", "min"):
        raise ImportProblem(f"reduction '{value}' is not one of none, add, mul, max, min")
    return value


@T.imports("Scatter", since=9)
def scatter(b, a, ins):
    """The deprecated Scatter is ScatterElements without a reduction."""
    return b.final("scatter_elements", [ins.need(0, "data"), ins.need(1, "indices"),
                                        ins.need(2, "updates")], axis=a.int("axis", 0))


@T.imports("ScatterElements", since=11)
def scatter_elements(b, a, ins):
    return b.final("scatter_elements", [ins.need(0, "data"), ins.need(1, "indices"),
                                        ins.need(2, "updates")],
                   axis=a.int("axis", 0), reduction=_reduction(a))


@T.imports("ScatterND", since=11)
def scatter_nd(b, a, ins):
    return b.final("scatter_nd", [ins.need(0, "data"), ins.need(1, "indices"),
                                  ins.need(2, "updates")], reduction=_reduction(a))


def _with_reduction(onnx_type: str, names=()):
    def exporter(c):
        attrs = {k: getattr(c.op, k) for k in names}
        if c.op.reduction != "none":
            attrs["reduction"] = c.op.reduction
        c.node(onnx_type, c.ins, c.outs,
               opset=18 if c.op.reduction in ("max", "min") else 1, **attrs)
    return exporter


T.exports("scatter_elements")(_with_reduction("ScatterElements", ("axis",)))
T.exports("scatter_nd")(_with_reduction("ScatterND"))


@T.imports("GatherND", since=11)
def gather_nd(b, a, ins):
    return b.final("gather_nd", [ins.need(0, "data"), ins.need(1, "indices")],
                   batch_dims=a.int("batch_dims", 0))


T.exports("gather_nd")(node_exporter("GatherND", ("batch_dims",)))


def _cumulative(fg_type: str):
    def handler(b, a, ins):
        return b.final(fg_type, [ins.need(0, "x"), ins.need(1, "axis")],
                       exclusive=a.bool("exclusive", False), reverse=a.bool("reverse", False))
    return handler


def _cumulative_export(onnx_type: str, opset: int):
    def exporter(c):
        axis = c.ins[1] if len(c.ins) > 1 and c.ins[1] else c.const(np.array(c.op.axis))
        c.node(onnx_type, [c.ins[0], axis], c.outs, opset=opset,
               exclusive=int(c.op.exclusive), reverse=int(c.op.reverse))
    return exporter


T.imports("CumSum", since=11)(_cumulative("cumsum"))
T.imports("CumProd", since=26)(_cumulative("cumprod"))
T.exports("cumsum")(_cumulative_export("CumSum", 11))
T.exports("cumprod")(_cumulative_export("CumProd", 26))

T.same("NonZero", "nonzero", since=9)


@T.imports("Compress", since=9)
def compress(b, a, ins):
    x = ins.need(0, "input")
    axis = a.int("axis", None)
    if axis is not None and not -x.ndim <= axis < x.ndim:
        raise ImportProblem(f"axis {axis} is out of range for a {x.ndim}-d input")
    return b.final("compress", [x, ins.need(1, "condition")], axis=axis)


@T.exports("compress")
def _compress(c):
    c.node("Compress", c.ins, c.outs, **({} if c.op.axis is None else {"axis": c.op.axis}))


@T.imports("Unique", since=11)
def unique(b, a, ins):
    x = ins.need(0, "X")
    axis = a.int("axis", None)
    if axis is not None and not -x.ndim <= axis < x.ndim:
        raise ImportProblem(f"axis {axis} is out of range for a {x.ndim}-d input")
    return b.final("unique", [x], axis=axis, sorted=a.bool("sorted", True))


@T.exports("unique")
def _unique(c):
    attrs = {"sorted": int(c.op.sorted)}
    if c.op.axis is not None:
        attrs["axis"] = c.op.axis
    c.node("Unique", c.ins, c.outs, **attrs)


@T.imports("ReverseSequence", since=10)
def reverse_sequence(b, a, ins):
    batch_axis, time_axis = a.int("batch_axis", 1), a.int("time_axis", 0)
    if {batch_axis, time_axis} != {0, 1}:
        raise ImportProblem(f"batch_axis {batch_axis} and time_axis {time_axis} must be 0 and "
                            "1 in some order")
    return b.final("reverse_sequence", [ins.need(0, "input"), ins.need(1, "sequence_lens")],
                   batch_axis=batch_axis, time_axis=time_axis)


T.exports("reverse_sequence")(node_exporter("ReverseSequence", ("batch_axis", "time_axis")))


@T.imports("TensorScatter", since=24)
def tensor_scatter(b, a, ins):
    mode = a.string("mode", "linear")
    if mode not in ("linear", "circular"):
        raise ImportProblem(f"mode '{mode}' is not linear or circular")
    return b.final("tensor_scatter", [ins.need(0, "past_cache"), ins.need(1, "update"),
                                      ins.opt(2)], axis=a.int("axis", -2), mode=mode)


@T.exports("tensor_scatter")
def _tensor_scatter(c):
    c.node("TensorScatter", c.ins, c.outs, opset=24, axis=c.op.axis, mode=c.op.mode)


@T.imports("CenterCropPad", since=18, static=(1,))
def center_crop_pad(b, a, ins):
    """The target sizes become an attribute when they are known at load time (the output
    shape is then known); otherwise they stay an input read per run."""
    x, shape = ins.need(0, "input_data"), ins.need(1, "shape")
    attrs = {}
    if "axes" in a:
        attrs["axes"] = a.ints("axes")
        for v in attrs["axes"]:
            if not -x.ndim <= v < x.ndim:
                raise ImportProblem(f"axis {v} is out of range for a {x.ndim}-d input")
    if shape.is_const or shape.initial is not None:
        return b.final("center_crop_pad", [x], shape=ints(b.static(shape, "CenterCropPad "
                                                                          "shape"),
                                                           "CenterCropPad shape"), **attrs)
    return b.final("center_crop_pad", [x, shape], **attrs)


@T.exports("center_crop_pad")
def _center_crop_pad(c):
    shape = c.ins[1] if len(c.ins) > 1 and c.ins[1] else c.const(np.array(c.op.shape))
    attrs = {} if c.op.axes is None else {"axes": list(c.op.axes)}
    c.node("CenterCropPad", [c.ins[0], shape], c.outs, opset=18, **attrs)
