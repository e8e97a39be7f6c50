"""The op contract: what every layer, built-in or plugin, supplies.

An op is a class with a registry name (``type``), named input and output ports, declared
attributes, and three methods::

    class Dense(Op):
        type = "dense"
        inputs = ("x", "W", "b?")       # "?" marks an optional port; params are inputs too
        outputs = ("y",)
        def infer(self, x, W, b):        # Specs in, tuple of Specs out (None = batch/unknown dim)
        def forward(self, ctx, x, W, b): # arrays in, tuple of arrays out; ctx.save(...) for backward
        def backward(self, ctx, gy):     # one gradient per input; None where not needed

Rules that keep the scheduler simple and fast:

* State between forward and backward lives in ``ctx``, never on ``self``: one op object serves
  many batches.
* Values and gradients are read-only by convention: never modify in place an array you did not
  allocate in this call.  The same array may be read by several consumers (branches pass it on
  without copying) and a gradient may be passed through unchanged (``add`` returns its incoming
  gradient for both inputs), so aliasing is expected and cheap.
* ``backward`` receives one gradient per output, ``None`` for an output nothing downstream used
  (this only happens for ops with several outputs), and returns one entry per input: an array of
  that input's shape, or ``None`` where ``ctx.needs_input_grad[i]`` is False.
* Broadcasting ops reduce gradients back to each input's shape (:func:`unbroadcast`).

Optional *declarations* tell the plan what it may do for speed; an op never calls into its
neighbours (see :mod:`flowgrad.plan.fusion`, which runs chains such as conv → batch_norm → relu as one
step, block by block, when evaluating without gradient):

* ``rowwise = True``: when evaluating, each batch row of the output depends only on the same
  row of the inputs that have a batch axis (conv, dense, pooling, elementwise ops);
* ``inplace = True``: ``forward`` allocates its output with ``ctx.backend.empty`` and is correct
  when that output is its first input's memory (it reads each element before writing it) — the
  plan may then run it in place;
* ``commutative = True``: the inputs may come in any order (add, sum);
* ``affine(ctx, *rest) -> (scale, shift)``: in evaluation the op is ``scale * x + shift`` per
  channel of axis 1, ``rest`` being its other inputs (batch norm);
* ``channel_weights = {input: axis}`` with ``channel_axis``: output channel ``c`` (on
  ``channel_axis``) is linear in slice ``c`` of these inputs along their axes — the weight
  first, then the bias (conv: ``{"W": 0, "b": 0}``) — so a following ``affine`` folds into them;
* ``pointwise() -> steps | None``: in evaluation, on float inputs of the plan's dtype, the op
  is these scalar steps applied to its first input — ``("add" | "sub" | "mul" | "div",
  operand)``, ``("max", operand)``, ``("clip", low, high)``, ``("sigmoid",)``, ``("tanh",)``,
  an operand being an input port (int) or a constant (float) — computing what its forward's
  ufuncs compute, rounding for rounding; a fused region of such ops runs in one pass
  (:mod:`flowgrad.plan.pointwise`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .backend import DEFAULT as DEFAULT_BACKEND
from .errors import AttrError, ShapeError, did_you_mean

Dim = int | None  # None: the batch axis, or a dimension known only at run time


@dataclass(frozen=True)
class Spec:
    """The static description of a value: its shape (``None`` for unknown dims) and dtype."""

    shape: tuple[Dim, ...]
    dtype: np.dtype

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(None if d is None else int(d) for d in self.shape))
        object.__setattr__(self, "dtype", np.dtype(self.dtype))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __str__(self) -> str:
        dims = ", ".join("N" if d is None else str(d) for d in self.shape)
        return f"{self.dtype.name}[{dims}]"

    @classmethod
    def of(cls, array: np.ndarray) -> "Spec":
        return cls(np.shape(array), np.asarray(array).dtype)


_REQUIRED = object()

_KINDS = ("int", "float", "bool", "str", "ints", "floats", "array", "any")


@dataclass(frozen=True)
class Attr:
    """A declared op attribute: its kind, default, allowed choices and a one-line doc.

    Kinds: ``int``, ``float``, ``bool``, ``str``, ``ints`` / ``floats`` (a list, stored as a
    tuple; a single number is accepted as a one-element list), ``array`` (anything numpy can make
    an array of) and ``any``.  An attribute without a default is required.
    """

    kind: str
    default: Any = _REQUIRED
    choices: tuple | None = None
    doc: str = ""

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown attribute kind {self.kind!r}; use one of {_KINDS}")

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED

    def coerce(self, name: str, value: Any) -> Any:
        """Check ``value`` against this declaration and return it in canonical form."""
        kind = self.kind
        if value is None and self.default is None:
            return None
        try:
            if kind == "int":
                if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                    raise TypeError
                value = int(value)
            elif kind == "float":
                if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
                    raise TypeError
                value = float(value)
            elif kind == "bool":
                if not isinstance(value, (bool, np.bool_)):
                    raise TypeError
                value = bool(value)
            elif kind == "str":
                if not isinstance(value, str):
                    raise TypeError
            elif kind in ("ints", "floats"):
                items = value if isinstance(value, (list, tuple, np.ndarray)) else [value]
                one = Attr("int" if kind == "ints" else "float")
                value = tuple(one.coerce(name, v) for v in items)
            elif kind == "array":
                value = np.asarray(value)
                if value.dtype == object:
                    raise TypeError
        except (TypeError, AttrError):
            raise AttrError(f"attribute '{name}' must be {_describe(kind)}, got {value!r}",
                            attr=name) from None
        if self.choices is not None and value not in self.choices:
            options = ", ".join(repr(c) for c in self.choices)
            raise AttrError(f"attribute '{name}' must be one of {options}, got {value!r}"
                            f"{did_you_mean(str(value), map(str, self.choices))}", attr=name)
        return value


def _describe(kind: str) -> str:
    return {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
            "ints": "a list of integers", "floats": "a list of numbers",
            "array": "a numeric array", "any": "a value"}[kind]


class Context:
    """Per-call scratch space shared by one node's forward and backward.

    ``save`` keeps what backward needs (and nothing else is kept). ``needs_input_grad`` is set by
    the scheduler before backward; ``grad_enabled`` tells forward whether a backward may follow,
    so an op can skip expensive saves at inference.  ``training`` is the plan's train/eval mode and
    ``rng`` its seeded generator (for dropout and other random ops).  ``backend`` is how an op
    allocates outputs (``ctx.backend.empty``: recycled plan memory) and reaches compiled kernels
    (``ctx.backend.kernels``); see :mod:`flowgrad.backend`.
    """

    __slots__ = ("saved", "needs_input_grad", "grad_enabled", "training", "rng", "state",
                 "backend")

    def __init__(self, grad_enabled: bool = True, training: bool = False,
                 rng: np.random.Generator | None = None, backend: Any = None):
        self.backend = DEFAULT_BACKEND if backend is None else backend
        self.saved: tuple = ()
        self.needs_input_grad: tuple[bool, ...] = ()
        self.grad_enabled = grad_enabled
        self.training = training
        self.rng = rng
        self.state: dict[int, np.ndarray] | None = None

    def save(self, *values: Any) -> None:
        self.saved = values

    def update_state(self, port: int, value: np.ndarray) -> None:
        """Replace the value of the state leaf (a non-trainable param) feeding input ``port``.

        Used by ops with running statistics (batch norm).  Only ops that set
        ``updates_state = True`` may call it; the scheduler applies the update after forward.
        """
        if self.state is None:
            self.state = {}
        self.state[port] = value


class Op:
    """Base class of every op.  Subclasses declare ``type``, ports and ``attrs``; see module doc.

    Class attributes:

    ``type``            the registry name used in YAML (``op: dense``)
    ``inputs``          input port names; a trailing ``?`` marks an optional port
    ``outputs``         output port names
    ``variadic``        if True, ``inputs`` holds one name and the op takes ``min_inputs`` or more
    ``attrs``           ``{name: Attr}``
    ``no_grad_inputs``  ports that never take a gradient (labels, indices, shapes)
    ``differentiable``  False for forward-only ops (argmax, comparisons)
    ``updates_state``   True if forward may call ``ctx.update_state``
    ``merge``           True if the op joins several activations into one (concat, add, sum,
                        mul…): the graph marks such nodes as merges (``Graph.is_merge``)
    ``branch``          True only for the fan-out op the ``insert_branches`` pass inserts
    ``rowwise``, ``inplace``, ``commutative``, ``affine``, ``channel_weights``, ``channel_axis``
                        optional declarations for fusion (module doc)
    """

    type: ClassVar[str] = ""
    inputs: ClassVar[tuple[str, ...]] = ("x",)
    outputs: ClassVar[tuple[str, ...]] = ("y",)
    variadic: ClassVar[bool] = False
    min_inputs: ClassVar[int] = 1
    attrs: ClassVar[dict[str, Attr]] = {}
    no_grad_inputs: ClassVar[frozenset[str]] = frozenset()
    differentiable: ClassVar[bool] = True
    updates_state: ClassVar[bool] = False
    rowwise: ClassVar[bool] = False
    inplace: ClassVar[bool] = False
    commutative: ClassVar[bool] = False
    merge: ClassVar[bool] = False
    branch: ClassVar[bool] = False
    affine: ClassVar[Any] = None
    channel_weights: ClassVar[dict[str, int]] = {}
    channel_axis: ClassVar[int] = 1

    # derived in __init_subclass__
    input_names: ClassVar[tuple[str, ...]] = ("x",)
    optional_inputs: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.input_names = tuple(p.rstrip("?") for p in cls.inputs)
        cls.optional_inputs = frozenset(p.rstrip("?") for p in cls.inputs if p.endswith("?"))
        if cls.variadic and len(cls.inputs) != 1:
            raise TypeError(f"{cls.__name__}: a variadic op declares exactly one input name")

    def __init__(self, **attrs: Any):
        unknown = [k for k in attrs if k not in self.attrs]
        if unknown:
            name = unknown[0]
            raise AttrError(f"op '{self.type}' has no attribute '{name}'"
                            f"{did_you_mean(name, self.attrs)}"
                            f" (attributes: {', '.join(self.attrs) or 'none'})", attr=name)
        values = {}
        for name, decl in self.attrs.items():
            if name in attrs:
                values[name] = decl.coerce(name, attrs[name])
            elif decl.required:
                raise AttrError(f"op '{self.type}' needs attribute '{name}'", attr=name)
            else:
                values[name] = decl.default
        self._attr_values = values
        for name, value in values.items():
            setattr(self, name, value)
        self.check()

    def check(self) -> None:
        """Validate combinations of attributes; raise :class:`AttrError`. Override as needed."""

    def pointwise(self) -> tuple | None:
        """The op as scalar steps, for fusion (module doc); None: not declared."""
        return None

    def config(self) -> dict[str, Any]:
        """The attributes that differ from their defaults: ``type(op)(**op.config())`` equals op."""
        out = {}
        for name, decl in self.attrs.items():
            value = self._attr_values[name]
            if decl.required or not _same(value, decl.default):
                out[name] = value.tolist() if isinstance(value, np.ndarray) else value
        return out

    def __eq__(self, other: object) -> bool:
        return (type(self) is type(other)
                and all(_same(self._attr_values[k], other._attr_values[k]) for k in self.attrs))

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    # -- ports --------------------------------------------------------------------------
    def num_outputs(self, num_inputs: int) -> int:
        """How many outputs a node with ``num_inputs`` inputs has (override for e.g. split)."""
        return len(self.outputs)

    def output_names(self, num_inputs: int) -> tuple[str, ...]:
        return self.outputs

    # -- the three methods --------------------------------------------------------------
    def infer(self, *specs: Spec | None) -> tuple[Spec, ...]:
        """Shapes and dtypes of the outputs.

        The default runs ``forward`` on zeros twice, with unknown dims set to 1 and to 2, and
        marks as unknown the output dims that differ.  Built-ins override it with a shape rule;
        a plugin may rely on the default.
        """
        outs = []
        for size in (1, 2):
            arrays = [None if s is None else
                      np.zeros(tuple(size if d is None else d for d in s.shape), s.dtype)
                      for s in specs]
            try:
                outs.append(self.forward(Context(grad_enabled=False), *arrays))
            except (ValueError, IndexError, TypeError) as e:
                raise ShapeError(str(e)) from None
        return tuple(Spec(tuple(a if a == b else None for a, b in zip(np.shape(x), np.shape(y))),
                          np.asarray(x).dtype) for x, y in zip(*outs))

    def forward(self, ctx: Context, *inputs: Any) -> tuple:
        raise NotImplementedError

    def backward(self, ctx: Context, *grads: Any) -> tuple:
        raise NotImplementedError(f"op '{self.type}' has no backward")


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and np.array_equal(a, b)
    return a == b


# -- helpers for op authors -------------------------------------------------------------

def unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum ``grad`` over the axes that broadcasting added or stretched, giving ``shape``."""
    if grad.shape == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(
        i + extra for i, n in enumerate(shape) if n == 1 and grad.shape[i + extra] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad.reshape(shape)


def broadcast_shapes(*shapes: tuple[Dim, ...]) -> tuple[Dim, ...]:
    """numpy's broadcasting rule on static shapes, where ``None`` is an unknown dim."""
    ndim = max(len(s) for s in shapes)
    out: list[Dim] = []
    for axis in range(ndim):
        dims = {s[axis - ndim + len(s)] for s in shapes if axis - ndim + len(s) >= 0}
        known = {d for d in dims if d is not None and d != 1}
        if len(known) > 1:
            raise ShapeError("shapes " + " and ".join(_fmt(s) for s in shapes)
                             + " cannot be broadcast together")
        if known:
            out.append(known.pop())
        elif None in dims:
            out.append(None)
        else:
            out.append(1)
    return tuple(out)


def result_dtype(*specs: Spec) -> np.dtype:
    return np.result_type(*(s.dtype for s in specs))


def normalize_axis(axis: int, ndim: int) -> int:
    """Turn a possibly negative axis into 0..ndim-1, or raise ShapeError."""
    if not -ndim <= axis < ndim:
        raise ShapeError(f"axis {axis} is out of range for a {ndim}-d input")
    return axis % ndim


def _fmt(shape: tuple[Dim, ...]) -> str:
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")"


def format_shape(shape: tuple[Dim, ...]) -> str:
    """``(N, 64)`` style, used in messages."""
    return _fmt(tuple(shape))


def prod(dims) -> int:
    return math.prod(dims)
