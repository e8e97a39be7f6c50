"""The graph builder ONNX handlers write into: values, eager constant folding, node naming.

An ONNX value is, at import time, either a **constant** (an array known now: an integer
initializer, a ``Constant`` node, or anything computed only from constants) or a **graph value**
(an output port of a flowgrad node, with its inferred :class:`~flowgrad.Spec`).  Handlers call
:meth:`Builder.op` for every flowgrad op they need; when all of an op's inputs are constants the
op runs right away (flowgrad's own forward, so folding and running agree) and its result is a
constant again.  This is how ``Constant`` nodes and shape arithmetic on static shapes fold away
without a separate pass, and why a ``Shape`` of a batch-dependent value stays in the graph and is
recomputed per batch.
"""
from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from ..errors import AttrError, ShapeError
from ..graph import Graph
from ..op import Context, Spec
from ..plugins import Registry
from . import tensors
from .tensors import size_text

_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]")


class ImportProblem(Exception):
    """A handler cannot translate a node (bad attributes, a dynamic value it needs static, ...).

    The loader turns it into a diagnostic naming the ONNX node and its op type.
    """


class Value:
    """One ONNX value: a constant array, or output ``port`` of graph node ``node``.

    ``elements`` is what is known at load time of a small int64 graph value (0-d or 1-d, a
    shape or part of one), None for other values: per element an int (a static dim) or
    ``(node, port, axis)`` (dim ``axis`` of graph value ``(node, port)``, free).  The shape
    handlers (:mod:`~flowgrad.onnx.ops.tensor`, ``indexing``, ``shape``) carry it through the
    shape arithmetic PyTorch exports, so that a part depending only on static dims folds, and
    a ``Reshape`` reading a value's own dims at their places copies them (ONNX's ``0``)
    instead of computing them per run.
    """

    __slots__ = ("const", "node", "port", "spec", "initial", "label", "elements")

    def __init__(self, spec: Spec, const: np.ndarray | None = None, node: str | None = None,
                 port: int = 0, initial: np.ndarray | None = None):
        self.spec, self.const, self.node, self.port = spec, const, node, port
        self.initial = initial   # a param's initial value, for handlers that need it statically
        self.label: str | None = None   # the ONNX name of a constant, for its graph node
        self.elements: tuple | None = None

    @property
    def is_const(self) -> bool:
        return self.const is not None

    @property
    def shape(self):
        return self.spec.shape

    @property
    def ndim(self) -> int:
        return self.spec.ndim

    @property
    def dtype(self) -> np.dtype:
        return self.spec.dtype

    def __repr__(self) -> str:
        return f"Value({'const ' if self.is_const else self.node}{self.spec})"


def check_size(shape, dtype, what: str) -> None:
    """An ImportProblem if a static ``shape`` of ``dtype`` (unknown dims counted as 1) would
    take more than :data:`~flowgrad.onnx.tensors.MAX_BYTES`: checked before a translation
    folds or builds a value, so a model cannot make flowgrad allocate wildly."""
    count = math.prod(1 if d is None else int(d) for d in shape)
    nbytes = count * np.dtype(dtype).itemsize
    if nbytes > tensors.MAX_BYTES:
        raise ImportProblem(f"{what} would have shape {list(shape)} ({size_text(nbytes)}), "
                            f"over flowgrad's bound of {size_text(tensors.MAX_BYTES)}; check the "
                            "model's shapes")


def _prefixed(op_type: str, error: Exception) -> str:
    """``error``'s message, starting with the flowgrad op's name (once)."""
    text = str(error)
    return text if text.startswith(op_type) else f"{op_type}: {text}"


def sanitize(name: str) -> str:
    """An identifier-like version of an ONNX name: ``[A-Za-z0-9_-]`` only, never empty.

    Imported graphs keep the model's own names (see :meth:`Builder.claim`); this form is only
    for places that need plain identifiers: node names in a YAML file (which cannot declare
    ``.`` or ``#``; ``convert`` records the original as an alias), and a name flowgrad had to
    replace.
    """
    out = _UNSAFE.sub("_", name)
    if not out or out[0].isdigit() or out[0] == "-":
        out = "v_" + out
    return out


class Builder:
    """Builds a :class:`Graph` from handler calls; see the module docstring."""

    #: ops never folded even when their inputs are constant (they draw random numbers)
    RANDOM_OPS = frozenset({"dropout", "random_normal", "random_uniform", "bernoulli",
                            "multinomial"})

    def __init__(self, graph: Graph, registry: Registry, opset: dict[str, int]):
        self.graph = graph
        self.registry = registry
        self.opset = opset
        self._names: set[str] = set()
        self._const_nodes: dict[int, tuple[str, np.ndarray]] = {}
        self.current: Any = None          # the ONNX node being translated (for naming/errors)
        self._base = "v"
        self.used: set[str] | None = None   # ONNX value names read by a node or graph output
        #: every value name of the model: helper nodes never take one, so each ONNX value can
        #: be named as the model named it when its producer is added
        self.reserved: set[str] = set()
        self.functions: dict = {}           # the model's local functions by name

    # -- naming --------------------------------------------------------------------------
    def _taken(self, name: str) -> bool:
        return name in self._names or name in self.graph.dag or name in self.reserved

    def unique(self, base: str) -> str:
        """An unused node name starting from ``base`` (``base``, ``base_1``, ...), never one of
        the model's value names (:attr:`reserved`) nor one containing ``#`` (flowgrad's mark
        for the nodes it inserts, e.g. ``x#branch``)."""
        name = base.replace("#", "_") or "v"
        if self._taken(name):
            i = 1
            while self._taken(f"{name}_{i}"):
                i += 1
            name = f"{name}_{i}"
        self._names.add(name)
        return name

    def claim(self, onnx_name: str) -> str:
        """The node name for the value the model calls ``onnx_name``: that very name, so
        inputs, params, outputs and gradients are found by the names users read in Netron,
        onnxruntime or a ``state_dict`` (``0.weight``, ``input.1``, ``onnx::Conv_12``).  Only a
        name flowgrad cannot use as it is (empty, or containing ``#``) is replaced by
        :func:`sanitize`'s form; the importer then adds the original as an alias."""
        if onnx_name and "#" not in onnx_name and onnx_name not in self._names \
                and onnx_name not in self.graph.dag:
            self._names.add(onnx_name)
            return onnx_name
        return self.unique(sanitize(onnx_name))

    def begin(self, node: Any) -> None:
        """Start translating ONNX ``node``: helper nodes are named after its first output."""
        self.current = node
        outs = [o for o in node.output if o]
        self._base = outs[0] if outs else (node.name or node.op_type)
        self._final_names = list(node.output)

    def output_used(self, *indices: int) -> bool:
        """Whether any of the current node's outputs ``indices`` is read by anything."""
        outs = self.current.output
        return any(i < len(outs) and outs[i] and (self.used is None or outs[i] in self.used)
                   for i in indices)

    # -- values --------------------------------------------------------------------------
    def const(self, array: Any) -> Value:
        array = np.asarray(array)
        return Value(Spec.of(array), const=array)

    @staticmethod
    def elements_of(value: Value | None) -> tuple | None:
        """The load-time elements of a 0-d or 1-d int value (see :class:`Value`): a constant's
        ints, a graph value's ``elements``, None if nothing is known."""
        if value is None:
            return None
        if value.is_const:
            if value.ndim > 1 or value.dtype != np.int64:
                return None
            return tuple(int(v) for v in value.const.reshape(-1))
        return value.elements

    def rearranged(self, op_type: str, inputs: list[Value | None], **attrs: Any) -> list[Value]:
        """:meth:`final` for an op that only moves the elements of ``inputs[0]`` (gather,
        slice, squeeze, unsqueeze) given its other inputs: when those are constant and the
        elements of ``inputs[0]`` are known, the op run on their positions tells the result's,
        which then folds if every one it takes is static."""
        data, rest = inputs[0], inputs[1:]
        elements = None if data.is_const else data.elements
        if elements is None or any(v is not None and not v.is_const for v in rest):
            return self.final(op_type, inputs, **attrs)
        positions = np.arange(len(elements)).reshape(data.shape)
        positions = self.op(op_type, [self.const(positions)] + rest, **attrs)[0].const
        if positions.ndim > 1:
            return self.final(op_type, inputs, **attrs)
        return self.known(tuple(elements[i] for i in positions.reshape(-1)), positions.shape,
                          lambda: self.final(op_type, inputs, **attrs))

    def known(self, elements: tuple, shape: tuple, produce) -> list[Value]:
        """A value of int64 ``elements`` laid out as ``shape``: a constant when every element
        is a static int, else ``produce()``'s runtime op (computed per run) recording them."""
        if all(isinstance(e, int) for e in elements):
            return [self.const(np.asarray(elements, np.int64).reshape(shape))]
        outs = produce()
        outs[0].elements = elements
        return outs

    def materialize(self, value: Value) -> tuple[str, int]:
        """The graph node and port holding ``value`` (a constant gets a ``const`` node once)."""
        if not value.is_const:
            return value.node, value.port
        key = id(value.const)
        hit = self._const_nodes.get(key)
        if hit is None or hit[1] is not value.const:
            if value.label and value.label not in self._names:
                name = self.claim(value.label)        # an initializer or folded value's name
            else:
                name = self.unique(self._base + "_const")
            self.graph.add_const(name, value.const, onnx_name=value.label)
            hit = self._const_nodes[key] = (name, value.const)
        return hit[0], 0

    def op(self, op_type: str, inputs: list[Value | None], name: str | None = None,
           num_outputs: int | None = None, **attrs: Any) -> list[Value]:
        """Add (or, if every input is constant, evaluate) flowgrad op ``op_type``.

        ``inputs`` follow the op's input ports (``None`` for an absent optional input) or are
        the variadic list.  ``name`` is the node name to use (default: derived from the ONNX
        node's first output).  Returns one :class:`Value` per output.
        """
        try:
            op_cls = self.registry.get(op_type)
        except Exception:
            raise ImportProblem(f"flowgrad has no '{op_type}' op (is its module installed?)")
        try:
            op = op_cls(**attrs)
        except AttrError as e:
            raise ImportProblem(_prefixed(op_type, e)) from None
        inputs = self._ports(op, list(inputs))
        present = [v for v in inputs if v is not None]
        if present and all(v.is_const for v in present) and op.type not in self.RANDOM_OPS:
            arrays = [None if v is None else v.const for v in inputs]
            try:
                outs = op.forward(Context(grad_enabled=False), *arrays)
            except Exception as e:
                raise ImportProblem(f"folding {op_type} on constants failed: "
                                    f"{type(e).__name__}: {e}") from None
            return [self.const(np.asarray(o)) for o in outs]
        specs_in = [None if v is None else v.spec for v in inputs]
        try:
            specs = tuple(op.infer(*specs_in))
        except ShapeError as e:
            shown = ", ".join("-" if s is None else str(s) for s in specs_in)
            raise ImportProblem(f"{_prefixed(op_type, e)} [inputs: {shown}]") from None
        for spec in specs:
            check_size(spec.shape, spec.dtype, f"{op_type}'s output")
        node_name = self.claim(name) if name else self.unique(self._base + "_" + op_type)
        self.graph.add_op(node_name, op, num_inputs=len(inputs),
                          onnx_name=getattr(self.current, "name", None),
                          onnx_op=getattr(self.current, "op_type", None))
        for position, value in enumerate(inputs):
            if value is not None:
                src, port = self.materialize(value)
                self.graph.connect(src, port, node_name, position)
        self.graph.set_specs(node_name, specs)
        return [Value(s, node=node_name, port=i) for i, s in enumerate(specs)]

    @staticmethod
    def _ports(op, inputs: list[Value | None]) -> list[Value | None]:
        """``inputs`` padded to the op's ports; an ImportProblem if there are too many or a
        required port is empty (a translation meets its ONNX node's arity)."""
        if op.variadic:
            if len([v for v in inputs if v is not None]) < op.min_inputs:
                raise ImportProblem(f"flowgrad's {op.type} needs at least {op.min_inputs} "
                                    "input(s); connect more values to the node")
            return inputs
        names = op.input_names
        if len(inputs) > len(names):
            raise ImportProblem(f"{op.type} takes at most {len(names)} inputs "
                                f"({', '.join(names)}), not {len(inputs)}; remove the extra "
                                "ones")
        inputs = inputs + [None] * (len(names) - len(inputs))
        for i, (name, value) in enumerate(zip(names, inputs)):
            if value is None and name not in op.optional_inputs:
                raise ImportProblem(f"needs input {i} ({name}) for flowgrad's {op.type}; "
                                    "connect a value to it")
        return inputs

    def final(self, op_type: str, inputs: list[Value | None], index: int = 0,
              **attrs: Any) -> list[Value]:
        """:meth:`op` for the flowgrad op that produces the ONNX node's output ``index``: the
        node is named after that output, so the imported graph reads like the model."""
        return self.op(op_type, inputs, name=self.final_name(index), **attrs)

    def final_name(self, index: int = 0) -> str | None:
        """The name for the node that produces output ``index`` of the current ONNX node."""
        names = self._final_names
        if index < len(names) and names[index]:
            candidate = names[index]
            if "#" not in candidate and candidate not in self._names \
                    and candidate not in self.graph.dag:
                return candidate
        return None

    def static(self, value: Value | None, what: str) -> np.ndarray | None:
        """The constant array of ``value``; an ImportProblem if it is only known at run time."""
        if value is None:
            return None
        if value.initial is not None:
            return value.initial
        if not value.is_const:
            raise ImportProblem(f"{what} must be a constant (an initializer or computed from "
                                f"constants); here it depends on the graph's inputs")
        return value.const
