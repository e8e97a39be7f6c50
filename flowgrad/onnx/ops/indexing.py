"""Indexing (flowgrad.ops.indexing): gather, slice, split, where, top-k, arg-max/min, one-hot,
and Trilu as a where with a constant mask."""
from __future__ import annotations

import numpy as np

from ..access import scalar
from ..builder import ImportProblem, Value, check_size
from ..translations import Translations, node_exporter
from ._common import ints

T = Translations("indexing")

T.same("Gather", "gather", attrs=("axis",))
T.same("GatherElements", "gather_elements", attrs=("axis",))
T.same("OneHot", "one_hot", attrs=("axis",), since=9)
T.same("Where", "where")


@T.imports("Slice")
def slice_1(b, a, ins):
    attrs = {"starts": a.ints("starts"), "ends": a.ints("ends")}
    if "axes" in a:
        attrs["axes"] = a.ints("axes")
    return b.final("slice", [ins.need(0, "data")], **attrs)


@T.imports("Slice", since=10, static=(1, 2, 3, 4))
def slice_10(b, a, ins):
    attrs = {"starts": ints(b.static(ins.need(1, "starts"), "Slice starts"), "Slice starts"),
             "ends": ints(b.static(ins.need(2, "ends"), "Slice ends"), "Slice ends")}
    for i, key in ((3, "axes"), (4, "steps")):
        value = b.static(ins.opt(i), f"Slice {key}")
        if value is not None:
            attrs[key] = ints(value, f"Slice {key}")
    return b.final("slice", [ins.need(0, "data")], **attrs)


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
