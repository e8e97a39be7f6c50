"""Making and reshaping-by-repetition whole tensors: expand, tile, shape, size, cast, eye_like,
constant_of_shape and range, with ONNX semantics; and random tensors (random_normal,
random_uniform, bernoulli, multinomial).

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
    value = np.asarray(value).reshape(-1)
    if value.dtype.kind in "iu":        # the usual case: one C call
        return tuple(value.tolist())
    return tuple(int(v) for v in value)


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
    rowwise = True      # (a fused region may follow it: a quantized model's dequantization)

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


class EyeLike(Op):
    """A 2-d tensor of the input's shape with ones on diagonal ``k`` (0 the main one, > 0
    above, < 0 below) and zeros elsewhere (ONNX EyeLike).  Only the input's shape matters, so
    the op is forward-only, like ``shape``.  ``dtype`` defaults to the input's."""

    type = "eye_like"
    attrs = {"k": Attr("int", 0, doc="which diagonal holds the ones"),
             "dtype": Attr("str", None, choices=DTYPES,
                           doc="output dtype (default: the input's)")}
    differentiable = False

    def infer(self, x):
        if x.ndim != 2:
            raise ShapeError(f"eye_like needs a 2-d input, got {format_shape(x.shape)}")
        return (Spec(x.shape, np.dtype(self.dtype) if self.dtype else x.dtype),)

    def forward(self, ctx, x):
        rows, cols = np.shape(x)
        dtype = np.dtype(self.dtype) if self.dtype else np.asarray(x).dtype
        return (np.eye(rows, cols, k=self.k, dtype=dtype),)


# -- random tensors ---------------------------------------------------------------------------

#: dtype names a random normal or uniform tensor may have (ONNX allows the float types)
FLOAT_DTYPES = ("float16", "float32", "float64")


def _seed_attr() -> Attr:
    return Attr("int", None, doc="draw from numpy.random.RandomState(seed): the same values at "
                                 "every call (default: the plan's generator)")


def _check_seed(op) -> None:
    if op.seed is not None and not 0 <= op.seed < 2**32:
        raise AttrError(f"{op.type}: 'seed' must be in [0, 2**32), got {op.seed}", attr="seed")


class _Random(Op):
    """A random tensor, drawn afresh at every call (forward-only).

    Its shape comes from the ``like`` input when connected (ONNX Random*Like), otherwise from
    the ``shape`` attribute; its dtype from ``dtype``, else ``like``'s (which must then be a
    float), else float32.  Without ``seed`` the draw comes from the plan's seeded generator
    (``compile(..., seed=)``), so a run is reproducible as a whole; with ``seed`` it comes from
    ``numpy.random.RandomState(seed)``, as ONNX's reference does, and is the same at every call.
    The ONNX importer never folds these ops on constant inputs: a draw is not a constant.
    """

    inputs = ("like?",)
    differentiable = False
    no_grad_inputs = frozenset({"like"})

    def check(self):
        _check_seed(self)
        if self.shape is not None and min(self.shape, default=0) < 0:
            raise AttrError(f"{self.type}: dims must be >= 0, got {list(self.shape)}",
                            attr="shape")

    def _dtype(self, like: np.dtype | None) -> np.dtype:
        if self.dtype is not None:
            return np.dtype(self.dtype)
        if like is None:
            return np.dtype(np.float32)
        if like.kind != "f":
            raise ShapeError(f"{self.type}: 'like' is {like}; a random tensor is a float, so "
                             "set 'dtype' to float16, float32 or float64")
        return like

    def infer(self, like):
        if like is None:
            if self.shape is None:
                raise ShapeError(f"{self.type} needs a 'shape' attribute or a 'like' input")
            return (Spec(tuple(self.shape), self._dtype(None)),)
        return (Spec(like.shape, self._dtype(like.dtype)),)

    def forward(self, ctx, like):
        if like is None:
            shape, dtype = tuple(self.shape), self._dtype(None)
        else:
            like = np.asarray(like)
            shape, dtype = like.shape, self._dtype(like.dtype)
        if self.seed is not None:
            unit = self._legacy(np.random.RandomState(self.seed), shape)
        else:
            unit = self._draw(ctx.rng if ctx.rng is not None else np.random.default_rng(), shape)
        return (self._scale(np.asarray(unit).astype(dtype)),)


class RandomNormal(_Random):
    """Normal samples of mean ``mean`` and standard deviation ``scale`` (ONNX RandomNormal and
    RandomNormalLike)."""

    type = "random_normal"
    attrs = {"shape": Attr("ints", None, doc="output shape (if 'like' is not connected)"),
             "dtype": Attr("str", None, choices=FLOAT_DTYPES, doc="output dtype"),
             "mean": Attr("float", 0.0, doc="mean of the distribution"),
             "scale": Attr("float", 1.0, doc="standard deviation"),
             "seed": _seed_attr()}

    @staticmethod
    def _legacy(state, shape):
        return state.randn(*shape)

    @staticmethod
    def _draw(rng, shape):
        return rng.standard_normal(shape)

    def _scale(self, unit):
        return unit * unit.dtype.type(self.scale) + unit.dtype.type(self.mean)


class RandomUniform(_Random):
    """Uniform samples in [low, high) (ONNX RandomUniform and RandomUniformLike)."""

    type = "random_uniform"
    attrs = {"shape": Attr("ints", None, doc="output shape (if 'like' is not connected)"),
             "dtype": Attr("str", None, choices=FLOAT_DTYPES, doc="output dtype"),
             "low": Attr("float", 0.0, doc="lower bound (included)"),
             "high": Attr("float", 1.0, doc="upper bound (excluded)"),
             "seed": _seed_attr()}

    @staticmethod
    def _legacy(state, shape):
        return state.rand(*shape)

    @staticmethod
    def _draw(rng, shape):
        return rng.random(shape)

    def _scale(self, unit):
        t = unit.dtype.type
        return unit * t(self.high - self.low) + t(self.low)


class Bernoulli(Op):
    """1 with probability p, else 0, elementwise (ONNX Bernoulli); ``dtype`` defaults to p's.

    Seeding as the random tensors: the plan's generator, or ``numpy.random.RandomState(seed)``
    (``binomial(1, p)``, as ONNX's reference draws it).  Forward-only.
    """

    type = "bernoulli"
    inputs = ("p",)
    attrs = {"dtype": Attr("str", None, choices=DTYPES,
                           doc="output dtype (default: p's)"),
             "seed": _seed_attr()}
    differentiable = False

    def check(self):
        _check_seed(self)

    def infer(self, p):
        if p.dtype.kind != "f":
            raise ShapeError(f"bernoulli: 'p' holds probabilities, a float tensor, not {p.dtype}")
        return (Spec(p.shape, np.dtype(self.dtype) if self.dtype else p.dtype),)

    def forward(self, ctx, p):
        p = np.asarray(p)
        dtype = np.dtype(self.dtype) if self.dtype else p.dtype
        if np.any((p < 0) | (p > 1)) or np.any(np.isnan(p)):
            raise ShapeError("bernoulli: probabilities must be in [0, 1]")
        if self.seed is not None:
            hits = np.random.RandomState(self.seed).binomial(1, p)
        else:
            rng = ctx.rng if ctx.rng is not None else np.random.default_rng()
            hits = rng.random(p.shape) < p
        return (np.asarray(hits).astype(dtype),)


class Multinomial(Op):
    """``sample_size`` class indices per row of ``logits`` (batch, classes), drawn from
    softmax(logits) (ONNX Multinomial: the input holds unnormalised log-probabilities).

    Each draw inverts the row's cumulative distribution at a uniform number: the rows' cumulative
    sums, shifted by the row number, are one sorted array, searched once for every draw
    (memory O(batch · (samples + classes)), no loop).
    Seeding as the random tensors (``RandomState(seed).random_sample`` for the uniforms).
    Forward-only; ``dtype`` int32 (ONNX's default) or int64.
    """

    type = "multinomial"
    inputs = ("logits",)
    attrs = {"sample_size": Attr("int", 1, doc="draws per row"),
             "dtype": Attr("str", "int32", choices=("int32", "int64"), doc="index dtype"),
             "seed": _seed_attr()}
    differentiable = False

    def check(self):
        _check_seed(self)
        if self.sample_size < 1:
            raise AttrError(f"multinomial: sample_size must be >= 1, got {self.sample_size}",
                            attr="sample_size")

    def infer(self, logits):
        if logits.ndim != 2 or logits.dtype.kind != "f":
            raise ShapeError(f"multinomial needs float logits (batch, classes), got {logits}")
        return (Spec((logits.shape[0], self.sample_size), np.dtype(self.dtype)),)

    def forward(self, ctx, logits):
        x = np.asarray(logits, dtype=np.float64)
        p = np.exp(x - x.max(axis=1, keepdims=True))
        cdf = np.cumsum(p, axis=1)
        cdf /= cdf[:, -1:]
        shape = (x.shape[0], self.sample_size)
        if self.seed is not None:
            u = np.random.RandomState(self.seed).random_sample(shape)
        else:
            u = (ctx.rng if ctx.rng is not None else np.random.default_rng()).random(shape)
        # row r's distribution shifted to [r, r + 1]: one sorted array, one binary search
        rows, classes = x.shape
        offset = np.arange(rows)[:, None]
        found = np.searchsorted((cdf + offset).reshape(-1), (u + offset).reshape(-1),
                                side="right").reshape(shape) - offset * classes
        return (np.clip(found, 0, classes - 1).astype(self.dtype),)
