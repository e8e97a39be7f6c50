"""Indexing (flowgrad.ops.indexing): gather, slice, split, where, top-k, arg-max/min, one-hot,
and Trilu as a where with a constant mask."""
from __future__ import annotations

import numpy as np

from ..builder import ImportProblem, Value
from ..translations import Translations, node_exporter
from ._common import ints

T = Translations("indexing")

T.same("Gather", "gather", attrs=("axis",))
T.same("GatherElements", "gather_elements", attrs=("axis",))
T.same("OneHot", "one_hot", attrs=("axis",), since=9)
T.same("Where", "where")


@T.imports("Slice")
def slice_1(b, a, ins):
    attrs = {"starts": ints(a["starts"]), "ends": ints(a["ends"])}
    if "axes" in a:
        attrs["axes"] = ints(a["axes"])
    return b.final("slice", [ins[0]], **attrs)


@T.imports("Slice", since=10, static=(1, 2, 3, 4))
def slice_10(b, a, ins):
    attrs = {"starts": ints(b.static(ins[1], "Slice starts")),
             "ends": ints(b.static(ins[2], "Slice ends"))}
    for i, key in ((3, "axes"), (4, "steps")):
        value = b.static(ins[i] if len(ins) > i else None, f"Slice {key}")
        if value is not None:
            attrs[key] = ints(value)
    return b.final("slice", [ins[0]], **attrs)


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
    attrs = {"split": [int(s) for s in sizes]} if sizes is not None else {"parts": count}
    return b.final("split", [x], axis=axis, **attrs)


@T.imports("Split", static=(1,))
def split_1(b, a, ins):
    """Opset 2 added the sizes as an optional input beside the attribute."""
    sizes = a.get("split")
    if sizes is None and len(ins) > 1 and ins[1] is not None:
        sizes = b.static(ins[1], "Split sizes")
    return _split(b, ins[0], int(a.get("axis", 0)), sizes, len(b.current.output))


@T.imports("Split", since=13, static=(1,))
def split_13(b, a, ins):
    sizes = b.static(ins[1] if len(ins) > 1 else None, "Split sizes")
    count = int(a.get("num_outputs", len(b.current.output)))
    return _split(b, ins[0], int(a.get("axis", 0)), None if sizes is None else ints(sizes), count)


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


def _topk(b, a, x, k):
    return b.op("topk", [x], k=int(k), axis=int(a.get("axis", -1)),
                largest=bool(a.get("largest", 1)), sorted=bool(a.get("sorted", 1)))


@T.imports("TopK")
def topk_1(b, a, ins):
    return _topk(b, a, ins[0], a["k"])


@T.imports("TopK", since=10, static=(1,))
def topk_10(b, a, ins):
    return _topk(b, a, ins[0], np.asarray(b.static(ins[1], "TopK k")).reshape(-1)[0])


@T.exports("topk")
def _topk_export(c):
    k = c.ins[1] if len(c.ins) > 1 and c.ins[1] else c.const([c.op.k])
    c.node("TopK", [c.ins[0], k], c.outs, axis=c.op.axis, largest=int(c.op.largest),
           sorted=int(c.op.sorted))


def _arg(fg_type: str):
    """ArgMax / ArgMin with ONNX's defaults (axis 0, keepdims)."""
    def handler(b, a, ins):
        return b.final(fg_type, [ins[0]], axis=int(a.get("axis", 0)),
                       keepdims=bool(a.get("keepdims", 1)),
                       select_last_index=bool(a.get("select_last_index", 0)))
    return handler


for _onnx, _fg in (("ArgMax", "argmax"), ("ArgMin", "argmin")):
    T.imports(_onnx)(_arg(_fg))
    T.exports(_fg)(node_exporter(_onnx, ("axis", "keepdims", "select_last_index")))


@T.imports("Trilu", since=14, static=(1,))
def trilu(b, a, ins):
    """A constant lower/upper triangular mask (built at load time) selects the values."""
    x = ins[0]
    k = b.static(ins[1] if len(ins) > 1 else None, "Trilu k")
    k = 0 if k is None else int(np.asarray(k).reshape(-1)[0])
    rows, cols = x.shape[-2], x.shape[-1]
    if rows is None or cols is None:
        raise ImportProblem("Trilu needs the last two dims to be static")
    ones = np.ones((rows, cols), bool)
    mask = np.triu(ones, k) if a.get("upper", 1) else np.tril(ones, k)
    return b.final("where", [b.const(mask), x, b.const(np.zeros((), x.dtype))])
