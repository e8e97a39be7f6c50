"""Tensor creation and inspection (flowgrad.ops.tensor): Constant, Shape, Size, Cast,
ConstantOfShape, Range, Expand, Tile, EyeLike, and the random tensors (RandomNormal(Like),
RandomUniform(Like), Bernoulli, Multinomial).  Whatever only depends on constants folds at load
time, except random draws."""
from __future__ import annotations

import numpy as np
from onnx import helper, numpy_helper

from ..access import scalar
from ..builder import ImportProblem, check_size
from ..tensors import DTYPES, check_elem_type
from ..translations import Translations, node_exporter
from ._common import axis, ints, unchanged

T = Translations("tensor")

T.same("Range", "range")
T.exports("size")(node_exporter("Size"))


@T.imports("Constant")
def constant(b, a, ins):
    readers = (("value", a.tensor, None), ("value_float", a.float, np.float32),
               ("value_floats", a.floats, np.float32), ("value_int", a.int, np.int64),
               ("value_ints", a.ints, np.int64))
    for key, read, dtype in readers:
        if key in a:
            return [b.const(np.asarray(read(key), dtype))]
    raise ImportProblem(f"Constant with attribute(s) {', '.join(a) or 'none'} is not "
                        "supported (flowgrad reads value, value_float(s) and value_int(s))")


@T.imports("Shape")
def shape(b, a, ins):
    """A static shape is a constant; one with the batch axis (or another free dim) is
    computed per run, its static dims recorded as known elements so that the arithmetic on
    them folds (:class:`~flowgrad.onnx.builder.Value`)."""
    x = ins.need(0, "data")
    start, end = a.int("start", None), a.int("end", None)
    if x.is_const:
        return [b.const(np.asarray(x.const.shape[slice(start, end)], dtype=np.int64))]
    axes = range(x.ndim)[slice(start, end)]
    elements = tuple((x.node, x.port, i) if x.shape[i] is None else int(x.shape[i])
                     for i in axes)
    attrs = {}
    if start is not None:
        attrs["start"] = int(start)
    if end is not None:
        attrs["end"] = int(end)
    return b.known(elements, (len(elements),), lambda: b.final("shape", [x], **attrs))


@T.exports("shape")
def _shape(c):
    attrs = {"start": c.op.start} if c.op.start else {}
    if c.op.end is not None:
        attrs["end"] = c.op.end
    c.node("Shape", c.ins, c.outs, **attrs)


@T.imports("Size")
def size(b, a, ins):
    x = ins.need(0, "data")
    if x.is_const or None not in x.shape:
        return [b.const(np.asarray(int(np.prod(x.shape if not x.is_const else x.const.shape)),
                                   dtype=np.int64))]
    return b.final("size", [x])


@T.imports("Cast")
def cast(b, a, ins):
    to, x = a.int("to"), ins.need(0, "input")
    why = check_elem_type(to)
    if why:
        raise ImportProblem(f"the target type 'to' {why}")
    if x.dtype == DTYPES[to]:
        return unchanged(b, x)
    return b.final("cast", [x], to=DTYPES[to].name)


@T.exports("cast")
def _cast(c):
    c.node("Cast", c.ins, c.outs, to=helper.np_dtype_to_tensor_dtype(np.dtype(c.op.to)))


@T.imports("CastLike")
def cast_like(b, a, ins):
    x, like = ins.need(0, "input"), ins.need(1, "target_type")
    if x.dtype == like.dtype:
        return unchanged(b, x)
    return b.final("cast", [x], to=like.dtype.name)


@T.imports("ConstantOfShape")
def constant_of_shape(b, a, ins):
    value = a.tensor("value", np.zeros(1, np.float32)).reshape(-1)
    if value.size != 1:
        raise ImportProblem(f"attribute 'value' must hold one element, not {value.size}")
    shape = ins.need(0, "input")
    if shape.is_const:
        dims = ints(shape.const, "ConstantOfShape shape")
        if min(dims, default=0) < 0:
            raise ImportProblem(f"ConstantOfShape shape {dims} has negative dims")
        check_size(dims, value.dtype, "ConstantOfShape's output")
        return [b.const(np.full(dims, value[0], dtype=value.dtype))]
    return b.final("constant_of_shape", [shape], value=value[0].item(),
                   dtype=value.dtype.name)


@T.exports("constant_of_shape")
def _constant_of_shape(c):
    value = numpy_helper.from_array(np.asarray([c.op.value], dtype=c.op.dtype))
    shape = c.ins[0] if c.ins and c.ins[0] else c.const(c.op.shape)
    c.node("ConstantOfShape", [shape], c.outs, value=value)


@T.imports("Expand")
def expand(b, a, ins):
    x, shape = ins.need(0, "input"), ins.need(1, "shape")
    if shape.is_const or shape.initial is not None:
        return b.final("expand", [x], shape=ints(b.static(shape, "Expand shape"),
                                                 "Expand shape"))
    return b.final("expand", [x, shape])


@T.imports("Tile", static=(1, 2))
def tile_1(b, a, ins):
    x = ins.need(0, "input")
    tiles = scalar(b.static(ins.need(1, "tiles"), "Tile tiles"), "Tile tiles", int)
    at = axis(scalar(b.static(ins.need(2, "axis"), "Tile axis"), "Tile axis", int), x.ndim)
    reps = [1] * x.ndim
    reps[at] = tiles
    return b.final("tile", [x], repeats=reps)


@T.imports("Tile", since=6, static=(1,))
def tile_6(b, a, ins):
    repeats = b.static(ins.need(1, "repeats"), "Tile repeats")
    return b.final("tile", [ins.need(0, "input")], repeats=ints(repeats, "Tile repeats"))


def _shape_input(onnx_type: str, attr: str):
    """An exporter for Expand/Tile: the shape input as given, or the attribute as a constant."""
    def exporter(c) -> None:
        given = c.ins[1] if len(c.ins) > 1 and c.ins[1] else None
        c.node(onnx_type, [c.ins[0], given or c.const(getattr(c.op, attr))], c.outs)
    return exporter


T.exports("expand")(_shape_input("Expand", "shape"))
T.exports("tile")(_shape_input("Tile", "repeats"))


@T.imports("EyeLike", since=9)
def eye_like(b, a, ins):
    x = ins.need(0, "input")
    if x.ndim != 2:
        raise ImportProblem(f"EyeLike needs a 2-d input, got {x.ndim}-d")
    attrs = {"k": a.int("k", 0)}
    if "dtype" in a:
        attrs["dtype"] = _dtype_name(a.int("dtype"), "dtype")
    return b.final("eye_like", [x], **attrs)


@T.exports("eye_like")
def _eye_like(c):
    attrs = {"k": c.op.k} if c.op.k else {}
    if c.op.dtype:
        attrs["dtype"] = helper.np_dtype_to_tensor_dtype(np.dtype(c.op.dtype))
    c.node("EyeLike", c.ins, c.outs, **attrs)


# -- random tensors: never folded at load time (flowgrad.onnx.builder.Builder.RANDOM_OPS) --------

def _dtype_name(elem_type: int, what: str, allowed=None) -> str:
    """The numpy dtype name of ONNX element type ``elem_type``; an ImportProblem if flowgrad
    has no such dtype or the op does not take it."""
    why = check_elem_type(elem_type)
    if why:
        raise ImportProblem(f"the type '{what}' {why}")
    name = DTYPES[elem_type].name
    if allowed is not None and name not in allowed:
        raise ImportProblem(f"'{what}' is {name}; this op produces {' or '.join(allowed)}")
    return name


def _seed(a) -> dict:
    """ONNX's float ``seed`` as the int flowgrad's ops take (RandomState truncates it too)."""
    if "seed" not in a:
        return {}
    seed = a.float("seed")
    if not np.isfinite(seed) or not 0 <= seed < 2**32:
        raise ImportProblem(f"attribute 'seed' must be in [0, 2**32), got {seed}")
    return {"seed": int(seed)}


_FLOATS = ("float16", "float32", "float64")


def _random(fg_type: str, params: tuple[str, ...], defaults: dict, like: bool):
    def handler(b, a, ins):
        attrs = {k: a.float(k, defaults[k]) for k in params}
        attrs.update(_seed(a))
        if like:
            x = ins.need(0, "input")
            if "dtype" in a:
                attrs["dtype"] = _dtype_name(a.int("dtype"), "dtype", _FLOATS)
            elif x.dtype.kind != "f":
                attrs["dtype"] = "float32"       # ONNX: the output type is a float
            return b.final(fg_type, [x], **attrs)
        shape = ints(a.ints("shape"), "shape")
        if min(shape, default=0) < 0:
            raise ImportProblem(f"attribute 'shape' {shape} has negative dims")
        check_size(shape, np.float64, f"{fg_type}'s output")
        attrs["dtype"] = _dtype_name(a.int("dtype", 1), "dtype", _FLOATS)
        return b.final(fg_type, [], shape=shape, **attrs)
    return handler


for _onnx, _fg, _params, _defaults in (
        ("RandomNormal", "random_normal", ("mean", "scale"), {"mean": 0.0, "scale": 1.0}),
        ("RandomUniform", "random_uniform", ("low", "high"), {"low": 0.0, "high": 1.0})):
    T.imports(_onnx)(_random(_fg, _params, _defaults, like=False))
    T.imports(_onnx + "Like")(_random(_fg, _params, _defaults, like=True))


def _random_exporter(onnx_type: str, params: tuple[str, ...]):
    def exporter(c) -> None:
        attrs = {k: getattr(c.op, k) for k in params}
        if c.op.seed is not None:
            attrs["seed"] = float(c.op.seed)
        if c.op.dtype:
            attrs["dtype"] = helper.np_dtype_to_tensor_dtype(np.dtype(c.op.dtype))
        if c.ins and c.ins[0]:
            c.node(onnx_type + "Like", c.ins[:1], c.outs, **attrs)
        else:
            c.node(onnx_type, [], c.outs, shape=list(c.op.shape), **attrs)
    return exporter


T.exports("random_normal")(_random_exporter("RandomNormal", ("mean", "scale")))
T.exports("random_uniform")(_random_exporter("RandomUniform", ("low", "high")))


@T.imports("Bernoulli", since=15)
def bernoulli(b, a, ins):
    attrs = _seed(a)
    if "dtype" in a:
        attrs["dtype"] = _dtype_name(a.int("dtype"), "dtype")
    return b.final("bernoulli", [ins.need(0, "input")], **attrs)


@T.imports("Multinomial", since=7)
def multinomial(b, a, ins):
    attrs = _seed(a)
    attrs["dtype"] = _dtype_name(a.int("dtype", 6), "dtype", ("int32", "int64"))
    return b.final("multinomial", [ins.need(0, "input")],
                   sample_size=a.int("sample_size", 1), **attrs)


@T.exports("bernoulli", "multinomial")
def _draws(c):
    attrs = {"seed": float(c.op.seed)} if c.op.seed is not None else {}
    if c.op.dtype:
        attrs["dtype"] = helper.np_dtype_to_tensor_dtype(np.dtype(c.op.dtype))
    if c.op.type == "multinomial":
        c.node("Multinomial", c.ins, c.outs, sample_size=c.op.sample_size, **attrs)
    else:
        c.node("Bernoulli", c.ins, c.outs, **attrs)
