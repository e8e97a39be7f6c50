"""Making and reshaping-by-repetition whole tensors: expand, tile, shape, size, cast,
constant_of_shape and range, with ONNX semantics.

These are the ops ONNX exporters use for "shape arithmetic" (Shape → Gather → Concat → Reshape,
ConstantOfShape, Range).  Integer tensors stay int64 throughout: nothing here turns a shape
into floats.  Inputs that are usually constants (a target shape, repeat counts) are optional
ports with an attribute of the same name as fallback, so YAML can write them as attributes and
``infer`` then knows the exact output shape; a connected port overrides the attribute.
"""
from __future__ import annotations

import numpy as np

from ..errors import AttrError
from ..op import Attr, Op, ShapeError, Spec, format_shape, unbroadcast

#: dtype names ``cast`` and ``constant_of_shape`` accept: every ONNX tensor type numpy has
DTYPES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8",
          "uint16", "uint32", "uint64", "bool")


def _ints(value) -> tuple[int, ...]:
    return tuple(int(v) for v in np.asarray(value).reshape(-1))


def _shape_input(spec: Spec | None, attr, op: str, port: str) -> int | None:
    """How many entries a shape-like input has, or ``None`` if it is given as an attribute.

    A shape-like input must be a 1-d integer tensor of static length: the output's rank
    depends on it.
    """
    if spec is None:
        if attr is None:
            raise ShapeError(f"{op} needs '{port}', as an input or an attribute")
        return None
    if spec.dtype.kind not in "iu" or spec.ndim != 1:
        raise ShapeError(f"{op}: '{port}' must be a 1-d integer tensor, got {spec}")
    if spec.shape[0] is None:
        raise ShapeError(f"{op}: the length of '{port}' must be known when the graph is built "
                         "(feed it from a constant or a param, not a batched input)")
    return spec.shape[0]


class Expand(Op):
    """Broadcasts ``input`` to ``shape`` (ONNX Expand: two-way, so a 1 in ``shape`` keeps the
    input's dim).  The output is a read-only broadcast view; backward sums the gradient back.
    """

    type = "expand"
    inputs = ("input", "shape?")
    attrs = {"shape": Attr("ints", None, doc="target shape (used if the input is absent)")}
    no_grad_inputs = frozenset({"shape"})

    def infer(self, x, shape):
        length = _shape_input(shape, self.shape, "expand", "shape")
        if length is None:
            target = tuple(self.shape)
        else:
            target = (None,) * length
        ndim = max(x.ndim, len(target))
        dims = (None,) * (ndim - x.ndim) + x.shape
        target = (1,) * (ndim - len(target)) + target
        out = []
        for d, t in zip(dims, target):
            if d is not None and t is not None:
                if d != t and 1 not in (d, t):
                    raise ShapeError(f"expand: input {format_shape(x.shape)} cannot be "
                                     f"broadcast to {format_shape(tuple(self.shape))}")
                out.append(max(d, t) if 0 not in (d, t) else 0)
            elif d is not None and d != 1:
                out.append(d)          # the unknown target dim must be 1 or d
            elif d is None:
                out.append(t if t not in (None, 1) else None)   # d must be 1 or t
            else:
                out.append(t)          # d == 1: the target decides
        return (Spec(tuple(out), x.dtype),)

    def forward(self, ctx, x, shape):
        target = self.shape if shape is None else _ints(shape)
        ctx.save(x.shape)
        return (np.broadcast_to(x, np.broadcast_shapes(x.shape, tuple(target))),)

    def backward(self, ctx, gy):
        (shape,) = ctx.saved
        return (unbroadcast(gy, shape) if ctx.needs_input_grad[0] else None, None)


class Tile(Op):
    """Repeats ``input`` ``repeats[i]`` times along each axis i (ONNX Tile, numpy ``tile``).

    Backward views the gradient as (r0, d0, r1, d1, ...) and sums over the repeat axes.
    """

    type = "tile"
    inputs = ("input", "repeats?")
    attrs = {"repeats": Attr("ints", None, doc="repeat count per axis (if the input is absent)")}
    no_grad_inputs = frozenset({"repeats"})

    def infer(self, x, repeats):
        length = _shape_input(repeats, self.repeats, "tile", "repeats")
        if (length if length is not None else len(self.repeats)) != x.ndim:
            raise ShapeError(f"tile: repeats needs one entry per axis of the input "
                             f"{format_shape(x.shape)}")
        if length is not None:
            return (Spec((None,) * x.ndim, x.dtype),)
        return (Spec(tuple(None if d is None else d * r for d, r in zip(x.shape, self.repeats)),
                     x.dtype),)

    def forward(self, ctx, x, repeats):
        reps = self.repeats if repeats is None else _ints(repeats)
        if len(reps) != x.ndim or min(reps, default=0) < 0:
            raise ShapeError(f"tile: repeats {list(reps)} must be one count >= 0 per axis of "
                             f"the input {x.shape}")
        ctx.save(x.shape, reps)
        return (np.tile(x, reps),)

    def backward(self, ctx, gy):
        shape, reps = ctx.saved
        if not ctx.needs_input_grad[0]:
            return None, None
        split = [n for r, d in zip(reps, shape) for n in (r, d)]
        return gy.reshape(split).sum(axis=tuple(range(0, 2 * len(shape), 2))), None


class Shape(Op):
    """The input's shape as an int64 vector, ``shape[start:end]`` (ONNX Shape-15 clamping)."""

    type = "shape"
    attrs = {"start": Attr("int", 0, doc="first axis to report (negative counts from the end)"),
             "end": Attr("int", None, doc="one past the last axis (default: all)")}
    differentiable = False

    def infer(self, x):
        return (Spec((len(range(x.ndim)[self.start:self.end]),), np.int64),)

    def forward(self, ctx, x):
        return (np.array(np.shape(x)[self.start:self.end], dtype=np.int64),)


class Size(Op):
    """The number of elements of the input, an int64 scalar."""

    type = "size"
    differentiable = False

    def infer(self, x):
        return (Spec((), np.int64),)

    def forward(self, ctx, x):
        return (np.array(np.size(x), dtype=np.int64),)


class Cast(Op):
    """Converts to dtype ``to`` (numpy ``astype``: floats truncate toward zero when cast to
    integers, nonzero is true).  The gradient passes through between float types and is zero
    otherwise (an integer or bool result is piecewise constant).
    """

    type = "cast"
    attrs = {"to": Attr("str", choices=DTYPES, doc="target dtype name")}

    def infer(self, x):
        return (Spec(x.shape, np.dtype(self.to)),)

    def forward(self, ctx, x):
        x = np.asarray(x)
        ctx.save(x.shape, x.dtype)
        return (x.astype(self.to, copy=False),)

    def backward(self, ctx, gy):
        shape, dtype = ctx.saved
        if not ctx.needs_input_grad[0]:
            return (None,)
        if gy is None or dtype.kind != "f" or gy.dtype.kind != "f":
            return (np.zeros(shape, dtype),)
        return (gy.astype(dtype, copy=False),)


class ConstantOfShape(Op):
    """A tensor of the given shape filled with ``value`` of type ``dtype`` (ONNX
    ConstantOfShape; its one-element ``value`` tensor maps to these two attributes).
    """

    type = "constant_of_shape"
    inputs = ("shape?",)
    attrs = {"value": Attr("float", 0.0, doc="fill value"),
             "dtype": Attr("str", "float32", choices=DTYPES, doc="output dtype"),
             "shape": Attr("ints", None, doc="output shape (if the input is absent)")}
    no_grad_inputs = frozenset({"shape"})
    differentiable = False

    def check(self):
        if self.shape is not None and min(self.shape, default=0) < 0:
            raise AttrError(f"constant_of_shape: dims must be >= 0, got {list(self.shape)}",
                            attr="shape")

    def infer(self, shape):
        length = _shape_input(shape, self.shape, "constant_of_shape", "shape")
        out = tuple(self.shape) if length is None else (None,) * length
        return (Spec(out, np.dtype(self.dtype)),)

    def forward(self, ctx, shape):
        dims = self.shape if shape is None else _ints(shape)
        return (np.full(dims, self.value, dtype=self.dtype),)


class Range(Op):
    """start, start + delta, ... up to (not including) limit: ceil((limit-start)/delta) values
    of start's dtype (ONNX Range).  Differentiable in start and delta (y_i = start + i·delta).
    """

    type = "range"
    inputs = ("start", "limit", "delta")
    no_grad_inputs = frozenset({"limit"})

    def infer(self, start, limit, delta):
        for name, spec in (("start", start), ("limit", limit), ("delta", delta)):
            if spec.ndim not in (0, 1) or spec.shape not in ((), (1,), (None,)):
                raise ShapeError(f"range: '{name}' must be a scalar, got {spec}")
        return (Spec((None,), start.dtype),)

    def forward(self, ctx, start, limit, delta):
        dtype = np.asarray(start).dtype
        s, l, d = (np.asarray(v).reshape(()) for v in (start, limit, delta))
        if d == 0:
            raise ShapeError("range: delta cannot be 0")
        n = max(int(np.ceil((l - s) / d)), 0)
        steps = np.arange(n, dtype=dtype)
        ctx.save(steps, np.shape(start), np.shape(delta))
        return ((s + steps * d).astype(dtype, copy=False),)

    def backward(self, ctx, gy):
        steps, start_shape, delta_shape = ctx.saved
        need_start, _, need_delta = ctx.needs_input_grad
        dtype = gy.dtype
        gs = np.full(start_shape, gy.sum(), dtype=dtype) if need_start else None
        gd = np.full(delta_shape, (steps * gy).sum(), dtype=dtype) if need_delta else None
        return gs, None, gd
