"""Tensor creation and inspection (flowgrad.ops.tensor): Constant, Shape, Size, Cast,
ConstantOfShape, Range, Expand, Tile.  Whatever only depends on constants folds at load time."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..builder import ImportProblem
from ..translations import Translations, node_exporter
from ._common import ints

T = Translations("tensor")

T.same("Range", "range")
T.exports("size")(node_exporter("Size"))


@T.imports("Constant")
def constant(b, a, ins):
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if key in a:
            value = np.asarray(a[key])
            if key in ("value_float", "value_floats"):
                value = value.astype(np.float32)
            elif key in ("value_int", "value_ints"):
                value = value.astype(np.int64)
            return [b.const(value)]
    raise ImportProblem(f"Constant with attribute(s) {', '.join(a)} is not supported")


@T.imports("Shape")
def shape(b, a, ins):
    """A static shape is a constant; one with the batch axis is computed per batch."""
    x = ins[0]
    start, end = a.get("start"), a.get("end")
    dims = x.shape[slice(start, end)]
    if x.is_const or None not in dims:
        return [b.const(np.asarray(dims if not x.is_const else x.const.shape[slice(start, end)],
                                   dtype=np.int64))]
    attrs = {}
    if start is not None:
        attrs["start"] = int(start)
    if end is not None:
        attrs["end"] = int(end)
    return b.final("shape", [x], **attrs)


@T.exports("shape")
def _shape(c):
    attrs = {"start": c.op.start} if c.op.start else {}
    if c.op.end is not None:
        attrs["end"] = c.op.end
    c.node("Shape", c.ins, c.outs, **attrs)


@T.imports("Size")
def size(b, a, ins):
    x = ins[0]
    if x.is_const or None not in x.shape:
        return [b.const(np.asarray(int(np.prod(x.shape if not x.is_const else x.const.shape)),
                                   dtype=np.int64))]
    return b.final("size", [x])


@T.imports("Cast")
def cast(b, a, ins):
    dtype = onnx.helper.tensor_dtype_to_np_dtype(int(a["to"]))
    if ins[0].dtype == dtype:
        return b.final("identity", [ins[0]])
    return b.final("cast", [ins[0]], to=np.dtype(dtype).name)


@T.exports("cast")
def _cast(c):
    c.node("Cast", c.ins, c.outs, to=helper.np_dtype_to_tensor_dtype(np.dtype(c.op.to)))


@T.imports("CastLike")
def cast_like(b, a, ins):
    if ins[0].dtype == ins[1].dtype:
        return b.final("identity", [ins[0]])
    return b.final("cast", [ins[0]], to=ins[1].dtype.name)


@T.imports("ConstantOfShape")
def constant_of_shape(b, a, ins):
    value = a.get("value")
    value = np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(-1)
    if ins[0].is_const:
        return [b.const(np.full(ints(ins[0].const), value[0], dtype=value.dtype))]
    return b.final("constant_of_shape", [ins[0]], value=value[0].item(),
                   dtype=value.dtype.name)


@T.exports("constant_of_shape")
def _constant_of_shape(c):
    value = numpy_helper.from_array(np.asarray([c.op.value], dtype=c.op.dtype))
    shape = c.ins[0] if c.ins and c.ins[0] else c.const(c.op.shape)
    c.node("ConstantOfShape", [shape], c.outs, value=value)


@T.imports("Expand")
def expand(b, a, ins):
    shape = ins[1]
    if shape.is_const or shape.initial is not None:
        return b.final("expand", [ins[0]], shape=ints(b.static(shape, "Expand shape")))
    return b.final("expand", [ins[0], shape])


@T.imports("Tile", static=(1, 2))
def tile_1(b, a, ins):
    tiles = int(b.static(ins[1], "Tile tiles"))
    axis = int(b.static(ins[2], "Tile axis"))
    reps = [1] * ins[0].ndim
    reps[axis] = tiles
    return b.final("tile", [ins[0]], repeats=reps)


@T.imports("Tile", since=6, static=(1,))
def tile_6(b, a, ins):
    return b.final("tile", [ins[0]], repeats=ints(b.static(ins[1], "Tile repeats")))


def _shape_input(onnx_type: str, attr: str):
    """An exporter for Expand/Tile: the shape input as given, or the attribute as a constant."""
    def exporter(c) -> None:
        given = c.ins[1] if len(c.ins) > 1 and c.ins[1] else None
        c.node(onnx_type, [c.ins[0], given or c.const(getattr(c.op, attr))], c.outs)
    return exporter


T.exports("expand")(_shape_input("Expand", "shape"))
T.exports("tile")(_shape_input("Tile", "repeats"))
