"""The graph: a networkx MultiDiGraph of leaves and ops, shared by every front end and consumer.

Nodes carry a ``kind``: ``input`` (fed per batch), ``param`` (persistent, trainable unless
frozen), ``const`` (never differentiated) or ``op``.  An edge carries ``src_port`` (which output
of its source) and ``dst_port`` (which input of its destination); two edges may join the same
pair of nodes (``mul(x, x)``).  Parameters are inputs of parameter-free ops, so tied weights are
one param node with several consumers and optimizing an input is flipping one leaf's flag.

``Graph.dag`` is the networkx graph itself: users may read it with any networkx algorithm.
Everything else reads a node through the typed accessors (``kind``, ``op_of``, ``spec_of``,
``is_branch``, ``is_merge``…), so the record layout can change in this file alone.

A graph is *prepared* once :func:`flowgrad.passes.prepare` has validated it, inserted its
branches and inferred its shapes; the building methods below clear the flag, so a prepared graph
that is extended is prepared again when compiled, and one that is not is never re-prepared.
"""
from __future__ import annotations

from typing import Any, Iterator

import networkx as nx
import numpy as np

from .errors import GraphError, SourceLocation, did_you_mean
from .op import Op, Spec

def port_names(op: Op, num_inputs: int, indexed: bool = False) -> tuple[str, ...]:
    """The port name of each input position of a node of ``op`` with ``num_inputs`` inputs.

    A variadic op declares one name for all its positions: it is repeated (what
    ``no_grad_inputs`` and the like are written against) or, with ``indexed``, numbered
    ``xs[0], xs[1]…`` (how messages and drawings name a position)."""
    if not op.variadic:
        return op.input_names
    name = op.input_names[0]
    return tuple(f"{name}[{i}]" for i in range(num_inputs)) if indexed else (name,) * num_inputs


def _leaf_spec(value: np.ndarray) -> Spec:
    """Float leaves keep the precision they were written with (a YAML ``0.1`` stays exact for a
    float64 plan), while their spec says float32: the default compute precision, to which a
    plan casts every float leaf once, at compile time."""
    return Spec(value.shape, np.float32 if value.dtype.kind == "f" else value.dtype)


class Graph:
    """A named DAG of ops and leaves, with declared outputs and the file it came from."""

    def __init__(self, name: str = "graph", source: str | None = None):
        self.dag = nx.MultiDiGraph()
        self.name = name
        self.source = source
        self.outputs: list[str] = []
        self.meta: dict[str, Any] = {}      # front-end extras, e.g. the YAML ``train`` section
        #: other names of values, ``{name: ref}``: a model's own names where the node had to be
        #: named otherwise (an ONNX output at port > 0, a name YAML cannot declare); see
        #: :meth:`add_alias`
        self.aliases: dict[str, str] = {}
        #: set by :func:`flowgrad.passes.prepare`; cleared by every building method
        self.prepared = False
        self._next_order = 0

    # -- building -----------------------------------------------------------------------
    def _add(self, name: str, loc: SourceLocation | None, order: float | None = None,
             **attrs: Any) -> None:
        if name in self.dag:
            raise GraphError(f"'{name}' is declared twice", loc=loc, node=name)
        if order is None:
            order, self._next_order = self._next_order, self._next_order + 1
        self.dag.add_node(name, order=order, loc=loc, **attrs)
        self.prepared = False

    def add_input(self, name: str, spec: Spec, loc: SourceLocation | None = None,
                  **extra: Any) -> None:
        """An input fed per batch; ``spec.shape`` includes the batch axis (usually ``None``).
        ``extra`` keeps a front end's facts about it (read back with :meth:`extra`)."""
        self._add(name, loc, kind="input", spec=spec, **extra)

    def add_param(self, name: str, value: np.ndarray, *, trainable: bool = True,
                  lr_mult: float = 1.0, decay_mult: float = 1.0,
                  loc: SourceLocation | None = None, **extra: Any) -> None:
        """A persistent leaf; ``trainable=False`` makes it state (e.g. running statistics)."""
        value = np.asarray(value)
        self._add(name, loc, kind="param", value=value, spec=_leaf_spec(value), trainable=trainable,
                  lr_mult=lr_mult, decay_mult=decay_mult, **extra)

    def add_const(self, name: str, value: np.ndarray, loc: SourceLocation | None = None,
                  order: float | None = None, **extra: Any) -> None:
        """A constant; ``order`` places one a pass inserts beside declared nodes (as for
        :meth:`add_op`)."""
        value = np.asarray(value)
        self._add(name, loc, order, kind="const", value=value, spec=_leaf_spec(value), **extra)

    def add_op(self, name: str, op: Op, num_inputs: int | None = None,
               loc: SourceLocation | None = None, order: float | None = None,
               **extra: Any) -> None:
        """An op node; ``num_inputs`` is the number of input positions (variadic ops).

        ``order`` places a node a pass inserts (a branch) between declared ones, e.g. just
        after its source (see :meth:`order_of`); by default a node comes after every other."""
        if num_inputs is None:
            num_inputs = len(op.input_names)
        self._add(name, loc, order, kind="op", op=op, num_inputs=num_inputs, **extra)

    def connect(self, src: str, src_port: int, dst: str, dst_port: int) -> None:
        """Feed output ``src_port`` of ``src`` into input ``dst_port`` of ``dst``."""
        self.dag.add_edge(src, dst, src_port=src_port, dst_port=dst_port)
        self.prepared = False

    # -- reading ------------------------------------------------------------------------
    def nodes_of_kind(self, kind: str) -> list[str]:
        return [n for n in self.ordered_nodes() if self.dag.nodes[n]["kind"] == kind]

    @property
    def inputs(self) -> list[str]:
        return self.nodes_of_kind("input")

    @property
    def params(self) -> list[str]:
        return self.nodes_of_kind("param")

    @property
    def consts(self) -> list[str]:
        return self.nodes_of_kind("const")

    @property
    def ops(self) -> list[str]:
        return self.nodes_of_kind("op")

    def ordered_nodes(self) -> list[str]:
        """All nodes in declaration order (the order front ends added them)."""
        return sorted(self.dag.nodes, key=lambda n: self.dag.nodes[n]["order"])

    def topological_order(self) -> list[str]:
        """A deterministic topological order: among ready nodes, the first declared goes first."""
        nodes = self.dag.nodes
        return list(nx.lexicographical_topological_sort(self.dag, key=lambda n: nodes[n]["order"]))

    def node(self, name: str) -> dict[str, Any]:
        """The raw attribute dict of a node: for front ends and passes that build records.

        Everyone else reads through the typed accessors below, so that the record layout can
        change in one file."""
        return self.dag.nodes[name]

    # -- typed accessors ----------------------------------------------------------------
    def kind(self, name: str) -> str:
        """``input``, ``param``, ``const`` or ``op``."""
        return self.dag.nodes[name]["kind"]

    def is_op(self, name: str) -> bool:
        return self.dag.nodes[name]["kind"] == "op"

    def is_leaf(self, name: str) -> bool:
        return self.dag.nodes[name]["kind"] != "op"

    def is_input(self, name: str) -> bool:
        return self.dag.nodes[name]["kind"] == "input"

    def is_param(self, name: str) -> bool:
        return self.dag.nodes[name]["kind"] == "param"

    def is_const(self, name: str) -> bool:
        return self.dag.nodes[name]["kind"] == "const"

    def op_of(self, name: str) -> Op:
        """The op object of an op node."""
        return self.dag.nodes[name]["op"]

    def is_branch(self, name: str) -> bool:
        """Whether ``name`` is a fan-out node (inserted by the ``insert_branches`` pass)."""
        data = self.dag.nodes[name]
        return data["kind"] == "op" and data["op"].branch

    def is_merge(self, name: str) -> bool:
        """Whether ``name`` is a fan-in node: an op declaring ``merge`` (concat, add, sum, mul…)
        that joins two or more activations.  ``add(x, bias)`` with a param is not a merge: it
        joins one activation and one leaf."""
        data = self.dag.nodes[name]
        if data["kind"] != "op" or not data["op"].merge:
            return False
        nodes = self.dag.nodes
        return sum(nodes[src]["kind"] == "op" for src, _ in self.dag.in_edges(name)) >= 2

    def num_inputs(self, name: str) -> int:
        """How many input positions an op node has (variadic ops vary per node)."""
        return self.dag.nodes[name]["num_inputs"]

    def port_names(self, name: str, indexed: bool = False) -> tuple[str, ...]:
        """The port name of each input position of an op node (see :func:`port_names`)."""
        data = self.dag.nodes[name]
        return port_names(data["op"], data["num_inputs"], indexed)

    def spec_of(self, name: str) -> Spec:
        """A leaf's spec; for an op, the spec of its first output (after shape inference)."""
        data = self.dag.nodes[name]
        return data["spec"] if data["kind"] != "op" else data["specs"][0]

    def set_input_spec(self, name: str, spec: Spec, **extra: Any) -> None:
        """Change an input's spec, and record front-end facts about it (:meth:`extra`): how the
        ONNX importer keeps a model's fixed batch.  The graph must be prepared again."""
        data = self.dag.nodes[name]
        if data["kind"] != "input":
            raise GraphError(f"'{name}' is not an input", node=name)
        data["spec"] = spec
        data.update(extra)
        self.prepared = False

    def set_specs(self, name: str, specs: tuple[Spec, ...] | None) -> None:
        """Record an op node's inferred output specs (the shape-inference pass); None marks
        them unknown."""
        self.dag.nodes[name]["specs"] = None if specs is None else tuple(specs)

    def order_of(self, name: str) -> float:
        """The node's place in declaration order (ties in topological order go by it)."""
        return self.dag.nodes[name]["order"]

    def value_of(self, name: str) -> np.ndarray:
        """The array held by a param or const node."""
        return self.dag.nodes[name]["value"]

    def set_value(self, name: str, value: np.ndarray) -> None:
        """Replace a param's or const's array (loading weights); its spec follows, and a new
        spec makes the graph unprepared (the shapes inferred from the old one are stale)."""
        value = np.asarray(value)
        data = self.dag.nodes[name]
        spec = _leaf_spec(value)
        if spec != data["spec"]:
            self.prepared = False
        data["value"], data["spec"] = value, spec

    def make_const(self, name: str, value: np.ndarray) -> None:
        """Turn a param into a constant holding ``value`` (kept as given, not copied): how the
        input optimizer reads a network's weights without differentiating them."""
        data = self.dag.nodes[name]
        for key in ("trainable", "lr_mult", "decay_mult"):
            data.pop(key, None)
        data["kind"] = "const"
        self.set_value(name, value)

    def is_trainable(self, name: str) -> bool:
        """A param that an optimizer updates (frozen params and state are not)."""
        data = self.dag.nodes[name]
        return data["kind"] == "param" and data.get("trainable", True)

    def set_trainable(self, name: str, trainable: bool) -> None:
        self.dag.nodes[name]["trainable"] = bool(trainable)

    def lr_mult(self, name: str) -> float:
        return self.dag.nodes[name].get("lr_mult", 1.0)

    def decay_mult(self, name: str) -> float:
        return self.dag.nodes[name].get("decay_mult", 1.0)

    def location(self, name: str) -> SourceLocation | None:
        """Where the node was declared (YAML file:line:col), if the front end knows."""
        return self.dag.nodes[name].get("loc")

    def extra(self, name: str, key: str, default: Any = None) -> Any:
        """A front end's extra fact about a node (``onnx_name``, ``doc``…), or ``default``."""
        return self.dag.nodes[name].get(key, default)

    def set_extra(self, name: str, key: str, value: Any) -> None:
        """Record a front end's fact about a node after it was added (read with :meth:`extra`),
        e.g. the ONNX name of each output an imported op node produces (``onnx_outputs``)."""
        self.dag.nodes[name][key] = value

    def input_sources(self, name: str) -> list[tuple[str, int] | None]:
        """For an op node: ``[(src, src_port) or None]`` indexed by input position."""
        sources: list[tuple[str, int] | None] = [None] * self.dag.nodes[name]["num_inputs"]
        for src, _, data in self.dag.in_edges(name, data=True):
            sources[data["dst_port"]] = (src, data["src_port"])
        return sources

    def consumers(self, name: str, port: int) -> list[tuple[str, int]]:
        """``[(dst, dst_port)]`` reading output ``port`` of ``name``, in a deterministic order."""
        nodes = self.dag.nodes
        found = [(dst, d["dst_port"]) for _, dst, d in self.dag.out_edges(name, data=True)
                 if d["src_port"] == port]
        return sorted(found, key=lambda c: (nodes[c[0]]["order"], c[1]))

    def num_outputs(self, name: str) -> int:
        data = self.dag.nodes[name]
        if data["kind"] != "op":
            return 1
        return data["op"].num_outputs(data["num_inputs"])

    def output_names(self, name: str) -> tuple[str, ...]:
        data = self.dag.nodes[name]
        if data["kind"] != "op":
            return ("y",)
        return data["op"].output_names(data["num_inputs"])

    def specs(self, name: str) -> tuple[Spec, ...] | None:
        """The output specs of a node (after shape inference for ops)."""
        data = self.dag.nodes[name]
        return (data["spec"],) if data["kind"] != "op" else data.get("specs")

    def resolve(self, ref: str) -> tuple[str, int]:
        """Turn a value reference into ``(node, port index)``.

        A reference is, in this order of precedence: a node name (port 0), an alias
        (:attr:`aliases`), or ``node.port`` with ``port`` an output name or index.  Names are
        matched whole first, so a node may be called ``input.1`` or ``0.weight`` (as ONNX
        models name values) and still be found; only the last ``.`` can select a port.
        """
        if ref in self.dag:
            return ref, 0
        target = self.aliases.get(ref)
        if target is not None:
            return self.resolve(target)
        node, dot, port = ref.rpartition(".")
        if dot and node in self.dag:
            names = self.output_names(node)
            if port in names:
                return node, names.index(port)
            if port.isdigit() and int(port) < len(names):
                return node, int(port)
            raise KeyError(f"'{node}' has no output '{port}' (outputs: {', '.join(names)})")
        raise KeyError(f"unknown value '{ref}'"
                       f"{did_you_mean(ref, [*self.dag.nodes, *self.aliases])}")

    def add_alias(self, name: str, ref: str) -> None:
        """Let ``name`` refer to the value ``ref`` too (``plan.forward`` outputs, feeds,
        ``wrt``, ``load_state_dict``, visualize objectives, CLI flags: everything that goes
        through :meth:`resolve`).  A name that is already a node is refused: node names win,
        so such an alias could never be reached."""
        if name in self.dag:
            raise GraphError(f"alias '{name}' is already a node's name", node=name)
        self.resolve(ref)                       # a KeyError for a ref that names nothing
        self.aliases[name] = ref

    def leaf(self, name: str) -> str:
        """The leaf node ``name`` is, or is an alias of (a ``KeyError`` if it is neither):
        how feeds, ``wrt`` and state dicts keyed by a model's own names find their node."""
        if name in self.dag:
            return name
        node, port = self.resolve(name)
        if port or not self.is_leaf(node):
            raise KeyError(f"'{name}' is an output of '{node}', not an input or a param")
        return node

    def aliases_by_value(self) -> dict[tuple[str, int], list[str]]:
        """``{(node, port): [alias, ...]}`` for every alias that still names a value, in the
        order the aliases were added (the ONNX exporter names values by them)."""
        found: dict[tuple[str, int], list[str]] = {}
        for name, ref in self.aliases.items():
            try:
                found.setdefault(self.resolve(ref), []).append(name)
            except KeyError:
                continue
        return found

    def value_name(self, node: str, port: int) -> str:
        """The reference string for output ``port`` of ``node`` (inverse of :meth:`resolve`)."""
        return node if port == 0 else f"{node}.{self.output_names(node)[port]}"

    def copy(self) -> "Graph":
        """A copy whose DAG and node attribute dicts are new (arrays and ops are shared)."""
        other = Graph(self.name, self.source)
        other.dag = self.dag.copy()
        other.outputs = list(self.outputs)
        other.meta = dict(self.meta)
        other.aliases = dict(self.aliases)
        other.prepared = self.prepared
        other._next_order = self._next_order
        return other

    def __iter__(self) -> Iterator[str]:
        return iter(self.ordered_nodes())

    def __len__(self) -> int:
        return self.dag.number_of_nodes()

    def __repr__(self) -> str:
        return (f"<Graph {self.name!r}: {len(self.inputs)} inputs, {len(self.params)} params, "
                f"{len(self.ops)} ops>")
