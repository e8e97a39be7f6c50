"""Sequence and optional values (ONNX's sequence and optional types), forward only.

A graph slot holds any object, so a sequence travels as a 0-d object array boxing a Python
list of arrays, and an optional as one boxing the value or None (Spec ``object[]``, as the ONNX
backend boxes feeds and unboxes results).  These ops build, read and take apart such values;
none modifies a list it was given (values are shared between readers), each returns a new box.

An op that takes a tensor out of a sequence or an optional (``sequence_at``,
``concat_from_sequence``, ``optional_get_element``) cannot infer its shape from an opaque
input, so it carries the Spec of its output (``shape``, with None for unknown dims, and
``dtype``), which the importer knows from the ops that built the sequence or from the model's
declared types.  None of these ops takes a gradient: lists of arrays are not differentiated
through (``differentiable = False``; a gradient that has to pass through one is reported by
the plan as a forward-only op on the path).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import AttrError
from ..op import Attr, Op, ShapeError, Spec
from .control import Body
from .control import _Control as _ControlBase

OPAQUE = Spec((), np.dtype(object))


def box(value: Any) -> np.ndarray:
    """``value`` (a list of arrays, an array, or None) as a 0-d object array."""
    out = np.empty((), dtype=object)
    out[()] = value
    return out


def unbox(value: Any) -> Any:
    value = np.asarray(value)
    return value[()] if value.dtype == object and value.ndim == 0 else value


def _items(value: Any, what: str) -> list:
    items = unbox(value)
    if not isinstance(items, list):
        raise ValueError(f"{what} must be a sequence, got {type(items).__name__}")
    return items


def _position(position: Any, length: int, insert: bool = False) -> int:
    """An ONNX sequence position (negative counts from the end) as an index, checked."""
    p = int(np.asarray(position).reshape(-1)[0])
    high = length if insert else length - 1
    if not -length <= p <= high:
        raise IndexError(f"position {p} is out of range for a sequence of {length}")
    return p + length if p < 0 else p


class _SequenceOp(Op):
    differentiable = False


class _TensorOut(_SequenceOp):
    """An op whose tensor output's Spec is given (``shape``, ``dtype``)."""

    def _spec(self) -> Spec:
        return Spec(tuple(self.shape), np.dtype(self.dtype))

    def check(self) -> None:
        try:
            self._spec()
        except (TypeError, ValueError) as e:
            raise AttrError(f"{self.type}: shape {self.shape!r} / dtype {self.dtype!r} do not "
                            f"describe a tensor: {e}", attr="shape") from None

    def infer(self, *specs):
        return (self._spec(),)


_SPEC_ATTRS = {"shape": Attr("any", doc="output shape, None for unknown dims"),
               "dtype": Attr("str", doc="output dtype")}


class SequenceConstruct(_SequenceOp):
    """A sequence of the inputs, in order."""

    type = "sequence_construct"
    inputs = ("xs",)
    variadic = True

    def infer(self, *specs):
        return (OPAQUE,)

    def forward(self, ctx, *xs):
        return (box(list(xs)),)


class SequenceInsert(_SequenceOp):
    """The sequence with ``tensor`` inserted at ``position`` (default: at the end)."""

    type = "sequence_insert"
    inputs = ("seq", "tensor", "position?")

    def infer(self, seq, tensor, position):
        return (OPAQUE,)

    def forward(self, ctx, seq, tensor, position):
        items = list(_items(seq, "input 'seq'"))
        at = len(items) if position is None else _position(position, len(items), insert=True)
        items.insert(at, tensor)
        return (box(items),)


class SequenceErase(_SequenceOp):
    """The sequence without the element at ``position`` (default: the last)."""

    type = "sequence_erase"
    inputs = ("seq", "position?")

    def infer(self, seq, position):
        return (OPAQUE,)

    def forward(self, ctx, seq, position):
        items = list(_items(seq, "input 'seq'"))
        if not items:
            raise IndexError("cannot erase from an empty sequence")
        del items[-1 if position is None else _position(position, len(items))]
        return (box(items),)


class SequenceLength(_SequenceOp):
    """The number of elements, as an int64 scalar."""

    type = "sequence_length"
    inputs = ("seq",)

    def infer(self, seq):
        return (Spec((), np.int64),)

    def forward(self, ctx, seq):
        return (np.array(len(_items(seq, "input 'seq'")), np.int64),)


class SequenceAt(_TensorOut):
    """The element at ``position`` (negative counts from the end)."""

    type = "sequence_at"
    inputs = ("seq", "position")
    attrs = dict(_SPEC_ATTRS)

    def forward(self, ctx, seq, position):
        items = _items(seq, "input 'seq'")
        return (np.asarray(items[_position(position, len(items))]),)


class ConcatFromSequence(_TensorOut):
    """The elements joined along ``axis`` (stacked along a new one with ``new_axis``)."""

    type = "concat_from_sequence"
    inputs = ("seq",)
    attrs = {"axis": Attr("int", doc="the axis to join along"),
             "new_axis": Attr("bool", False, doc="stack along a new axis instead"),
             **_SPEC_ATTRS}

    def forward(self, ctx, seq):
        items = [np.asarray(v) for v in _items(seq, "input 'seq'")]
        if not items:
            raise ValueError("cannot concatenate an empty sequence")
        if self.new_axis:
            ndim = items[0].ndim + 1
            if not -ndim <= self.axis < ndim:
                raise ShapeError(f"axis {self.axis} is out of range for {ndim - 1}-d elements")
            return (np.stack(items, axis=self.axis),)
        return (np.concatenate(items, axis=self.axis),)


class SplitToSequence(_SequenceOp):
    """``x`` split along ``axis`` into a sequence: into pieces of one (squeezed unless
    ``keepdims``) without ``split``, of ``split`` each (the last shorter) for a scalar, of the
    listed lengths for a 1-d ``split``."""

    type = "split_to_sequence"
    inputs = ("x", "split?")
    attrs = {"axis": Attr("int", 0, doc="the axis to split"),
             "keepdims": Attr("bool", True, doc="keep the axis when split is not given")}
    no_grad_inputs = frozenset({"split"})

    def infer(self, x, split):
        return (OPAQUE,)

    def forward(self, ctx, x, split):
        axis = self.axis % x.ndim if -x.ndim <= self.axis < x.ndim else None
        if axis is None:
            raise ShapeError(f"axis {self.axis} is out of range for a {x.ndim}-d input")
        n = x.shape[axis]
        if split is None:
            pieces = np.split(x, n, axis=axis) if n else []
            if not self.keepdims:
                pieces = [np.squeeze(p, axis=axis) for p in pieces]
            return (box(pieces),)
        split = np.asarray(split)
        if split.ndim == 0:
            size = int(split)
            if size <= 0:
                raise ValueError(f"split size {size} must be positive")
            cuts = list(range(size, n, size))
        else:
            lengths = [int(v) for v in split.reshape(-1)]
            if sum(lengths) != n or any(v < 0 for v in lengths):
                raise ValueError(f"split lengths {lengths} do not add up to {n}")
            cuts = list(np.cumsum(lengths)[:-1])
        return (box(np.split(x, cuts, axis=axis)),)


class Optional(_SequenceOp):
    """An optional holding the input (a tensor or a sequence), or empty without one."""

    type = "optional"
    inputs = ("x?",)

    def infer(self, x):
        return (OPAQUE,)

    def forward(self, ctx, x):
        return (box(None if x is None else unbox(x) if np.asarray(x).dtype == object else x),)


class OptionalHasElement(_SequenceOp):
    """Whether the optional holds a value (a plain tensor always does)."""

    type = "optional_has_element"
    inputs = ("x",)

    def infer(self, x):
        return (Spec((), np.bool_),)

    def forward(self, ctx, x):
        value = np.asarray(x)
        held = unbox(value) is not None if value.dtype == object else True
        return (np.array(held),)


class OptionalGetElement(_SequenceOp):
    """The value an optional holds (an error if it is empty); a tensor or a sequence passes
    through.  ``shape`` and ``dtype`` give the Spec of a tensor value; without them the value
    is a sequence."""

    type = "optional_get_element"
    inputs = ("x",)
    attrs = {"shape": Attr("any", None, doc="the tensor's shape (None: a sequence)"),
             "dtype": Attr("str", None, doc="the tensor's dtype")}

    def infer(self, x):
        if self.shape is None:
            return (OPAQUE,)
        return (Spec(tuple(self.shape), np.dtype(self.dtype)),)

    def forward(self, ctx, x):
        value = np.asarray(x)
        if value.dtype != object:
            return (value,)
        held = unbox(value)
        if held is None:
            raise ValueError("the optional is empty; check it with OptionalHasElement first")
        return (box(held) if isinstance(held, list) else np.asarray(held),)


class SequenceMap(_ControlBase):
    """ONNX SequenceMap: the body run on the i-th element of every sequence input (a tensor
    input is passed whole each time), each body output collected into an output sequence.

    Inputs: the sequence, the additional inputs, then ``num_outer`` outer values the body
    reads.  Forward only."""

    type = "sequence_map"
    inputs = ("seq", "outer")
    differentiable = False
    body_attrs = ("body",)
    attrs = {"body": Attr("any", doc="the graph run per element"),
             "num_outer": Attr("int", 0, doc="outer-scope values the body reads")}

    def _ports(self):
        specs = self.bodies["body"].input_specs
        k = len(specs) - self.num_outer
        names = ["seq"] + [f"x{i}" for i in range(1, k)] + \
            [f"outer{i}" for i in range(self.num_outer)]
        return names, [False] * len(names)

    def num_outputs(self, num_inputs):
        return len(self.body.outputs)

    def output_names(self, num_inputs):
        return tuple(f"y{i}" for i in range(len(self.body.outputs)))

    def infer(self, *specs):
        return (OPAQUE,) * len(self.body.outputs)

    def forward(self, ctx, *xs):
        body = self.bodies["body"]
        k = body.num_inputs - self.num_outer
        mapped, outer = xs[:k], list(xs[k:])
        sequences = {i: _items(x, f"input {i}") for i, x in enumerate(mapped)
                     if np.asarray(x).dtype == object}
        lengths = {len(v) for v in sequences.values()}
        if len(lengths) > 1:
            raise ValueError(f"the sequences have different lengths {sorted(lengths)}")
        count = lengths.pop() if lengths else 0
        results: list[list] = [[] for _ in range(body.num_outputs)]
        for n in range(count):
            feeds = [sequences[i][n] if i in sequences else x for i, x in enumerate(mapped)]
            dtype = Body.dtype_of(feeds + outer)
            outs, _ = body.run(feeds + outer, dtype, False, ctx.training, ctx.rng)
            for r, out in zip(results, outs):
                r.append(out)
        return tuple(box(r) for r in results)
