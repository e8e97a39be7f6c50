"""Importing ONNX subgraphs (the bodies of If, Loop, Scan) as flowgrad graphs.

A body is an ONNX graph that may read any value of the graphs enclosing it by name (its
*outer-scope* values).  :func:`import_body` translates one into a flowgrad
:class:`~flowgrad.graph.Graph` with the same handlers as the main graph (so nested control
flow, constant folding and every translated op work inside bodies): its inputs are the body's
formal inputs, then one input per outer value that is only known at run time.  Outer values
that are constants at load time are folded into the body instead (a Reshape's shape computed
outside a loop stays static inside it).  The control-flow op then takes those outer values as
extra inputs (:mod:`flowgrad.ops.control`), so gradients reach them.

Initializers declared inside a body are constants of the body (they do not train: exporters
such as PyTorch's keep weights in the main graph and read them from the body by name).

The importer hands every handler its scope: ``b.values`` (ONNX name -> Value of the graph being
built) and ``b.importer`` (translation lookup); a body's builder gets its own scope.
"""
from __future__ import annotations

from typing import Iterable

import onnx

from ..graph import Graph
from ..op import Spec
from .access import Attrs, Inputs
from .builder import Builder, ImportProblem, Value
from .checks import check_node, node_label
from .tensors import DTYPES, to_array
from .translations import canonical_domain

#: how many times a loop body is re-imported while a carried value's shape generalises
_MAX_ROUNDS = 4


class NeedsShapes(ImportProblem):
    """An If whose branches give outputs of different ranks (or dtypes), chosen by a condition
    computed only from shapes (``Shape``/``Size`` of run-time values and constants) — what
    PyTorch's tracer writes for ``x.squeeze(d)`` when dim ``d`` is unknown.

    No single Spec covers such an output, and what reads it downstream (more shape-driven Ifs,
    an LSTM) depends on its rank, so the enclosing scope cannot be imported once for all
    shapes.  :func:`translate` lets this problem through instead of collecting it, up to the
    nearest enclosing If, which then imports its branches per shape signature at run time
    (``if_per_shape``): with every dim known the condition folds and the If is inlined.
    ``detail`` is the problem without the advice (which suits only the main graph)."""

    def __init__(self, message: str, detail: str):
        super().__init__(message)
        self.detail = detail
        self.located = False


def graph_attr(node: onnx.NodeProto, name: str) -> onnx.GraphProto:
    """Attribute ``name`` of ``node``, which must be a graph."""
    for attr in node.attribute:
        if attr.name == name:
            if attr.type != onnx.AttributeProto.GRAPH:
                raise ImportProblem(f"attribute '{name}' must be a graph")
            return attr.g
    raise ImportProblem(f"needs attribute '{name}' (a graph); add it to the node")


def free_names(graph: onnx.GraphProto) -> list[str]:
    """The names ``graph`` reads without defining them (its outer-scope values), nested
    subgraphs included, in first-use order."""
    defined = {vi.name for vi in graph.input} | {t.name for t in graph.initializer}
    defined |= {t.values.name for t in graph.sparse_initializer}
    found: dict[str, None] = {}

    def use(names: Iterable[str]) -> None:
        for name in names:
            if name and name not in defined:
                found.setdefault(name)

    for node in graph.node:
        use(node.input)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                use(free_names(attr.g))
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    use(free_names(g))
        defined.update(o for o in node.output if o)
    use(vi.name for vi in graph.output)
    return list(found)


def nested_reads(graph: onnx.GraphProto) -> set[str]:
    """The names of ``graph`` that its nodes' subgraphs read from it (for ``Builder.used``)."""
    found: set[str] = set()
    for node in graph.node:
        for attr in node.attribute:
            bodies = ([attr.g] if attr.type == onnx.AttributeProto.GRAPH
                      else attr.graphs if attr.type == onnx.AttributeProto.GRAPHS else [])
            for body in bodies:
                found.update(free_names(body))
    return found


def declared_spec(vi: onnx.ValueInfoProto) -> Spec | None:
    """The Spec a body declares for a value, or None if it gives no type or no shape."""
    from .importer import OPAQUE
    kind = vi.type.WhichOneof("value")
    if kind in ("sequence_type", "optional_type"):
        return OPAQUE
    if kind != "tensor_type" or not vi.type.tensor_type.HasField("shape"):
        return None
    tt = vi.type.tensor_type
    if tt.elem_type not in DTYPES:
        return None
    dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)
    return Spec(dims, DTYPES[tt.elem_type])


def outer_values(b: Builder, names: list[str]) -> list[tuple[str, Value]]:
    """The outer values among ``names`` that are known only at run time (constants are folded
    into bodies), each with its name; an ImportProblem for a name no enclosing graph defines."""
    scope = getattr(b, "values", None)
    if scope is None:
        raise ImportProblem("control flow needs the importer's scope (b.values); this "
                            "builder has none")
    missing = [n for n in names if n not in scope]
    if missing:
        raise ImportProblem(f"its body reads {', '.join(repr(n) for n in missing)}, which no "
                            "enclosing graph defines")
    return [(n, scope[n]) for n in names if not scope[n].is_const]


def import_body(b: Builder, proto: onnx.GraphProto, formal: list[Spec | None],
                outer: list[tuple[str, Value]], what: str) -> tuple[Graph, list[Value]]:
    """Translate body ``proto`` into a Graph: inputs ``formal`` (one Spec per formal input;
    None takes the body's declaration) then ``outer``; returns the graph and its output values
    (as the body's own builder saw them)."""
    if len(formal) != len(proto.input):
        raise ImportProblem(f"its {what} declares {len(proto.input)} input(s); it must take "
                            f"{len(formal)}")
    graph = Graph(proto.name or what)
    sub = Builder(graph, b.registry, b.opset)
    sub.functions = b.functions
    sub.importer = b.importer
    sub.used = ({i for node in proto.node for i in node.input} | {vi.name for vi in proto.output}
                | nested_reads(proto))
    # helper nodes never take one of the body's value names (each is claimed by its value)
    sub.reserved = ({vi.name for vi in proto.input} | {t.name for t in proto.initializer}
                    | {o for node in proto.node for o in node.output if o})
    scope = getattr(b, "values")
    values: dict[str, Value] = {}
    for vi, spec in zip(proto.input, formal):
        if spec is None:
            spec = declared_spec(vi)
        if spec is None:
            raise ImportProblem(f"input '{vi.name}' of its {what} has no type and shape; "
                                "flowgrad needs its rank")
        name = sub.claim(vi.name)
        graph.add_input(name, spec, onnx_name=vi.name)
        values[vi.name] = Value(spec, node=name)
    for onnx_name, value in outer:
        name = sub.claim(onnx_name)
        graph.add_input(name, value.spec, onnx_name=onnx_name)
        values[onnx_name] = Value(value.spec, node=name, initial=value.initial)
    for init in proto.initializer:
        values[init.name] = sub.const(to_array(init))
        values[init.name].label = init.name
    # constants of the enclosing graphs (including their own outer constants) are visible
    visible = _Scope(values, scope)
    sub.values = visible
    problems = translate(sub, proto.node, visible)
    if problems:
        raise ImportProblem(f"in its {what}: " + "; ".join(problems))
    outs = []
    for vi in proto.output:
        value = visible.get(vi.name)
        if value is None:
            raise ImportProblem(f"its {what} declares output '{vi.name}', which nothing in it "
                                "computes")
        if value.is_const:
            name = sub.claim(vi.name)
            graph.add_const(name, value.const)
            value = Value(value.spec, node=name)
        elif value.node not in graph.dag:
            raise ImportProblem(f"its {what} outputs '{vi.name}' of an enclosing graph, "
                                "which is not one of its inputs (a flowgrad bug)")
        graph.outputs.append(graph.value_name(value.node, value.port))
        outs.append(value)
    return graph, outs


class InlineScope(dict):
    """An inlined graph's names over the enclosing scope, which it may read but not write
    (an If branch inlined on a constant condition, FlexAttention's score/prob graphs)."""

    def __init__(self, outer):
        super().__init__()
        self._outer = outer

    def __missing__(self, key):
        return self._outer[key]

    def __contains__(self, key) -> bool:
        return dict.__contains__(self, key) or key in self._outer


class _Scope(dict):
    """A body's values, falling back to the enclosing scope's *constants* only (a run-time
    value of an enclosing graph must come in as a body input)."""

    def __init__(self, own: dict, outer):
        super().__init__(own)
        self._outer = outer

    def __missing__(self, key):
        value = self._outer[key] if self._outer is not None and key in self._outer else None
        if value is not None and value.is_const:
            return value
        raise KeyError(key)

    def get(self, key, default=None):
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key) -> bool:
        return self.get(key) is not None


def translate(b: Builder, nodes, values) -> list[str]:
    """Translate ``nodes`` into ``b``, reading and writing ``values``; returns the problems
    (one line per node that failed; its dependants are skipped)."""
    from .importer import OPAQUE
    importer = b.importer
    problems: list[str] = []
    failed: set[str] = set()
    for node in nodes:
        label = f"ONNX node '{node_label(node)}' ({node.op_type})"
        domain = canonical_domain(node.domain)
        version = b.opset.get(domain, 1)
        missing = [i for i in node.input if i and i not in values]
        if missing:
            failed.update(node.output)
            if not any(i in failed for i in missing):
                problems.append(f"{label}: unknown input(s) {', '.join(missing)}")
            continue
        structural = check_node(node, domain, version)
        record = importer.translation(node)
        if structural or record is None:
            failed.update(node.output)
            problems.append(f"{label}: " + ("; ".join(structural) if structural else
                                            f"no translation at opset {version}"))
            continue
        inputs = Inputs([values[i] if i else None for i in node.input])
        if not reads_opaque(node, record) and any(v is not None and v.spec == OPAQUE
                                                   for v in inputs):
            failed.update(node.output)
            problems.append(f"{label}: reads a sequence or optional value, which this op "
                            "cannot take")
            continue
        b.begin(node)
        try:
            outs = record.handler(b, Attrs(node), inputs)
        except NeedsShapes as e:
            if not e.located:        # name the If at fault (the outer ones add their own)
                e.args, e.detail = (f"{label}: {e}",), f"{label}: {e.detail}"
                e.located = True
            raise
        except ImportProblem as e:
            failed.update(node.output)
            problems.append(f"{label}: {e}")
            continue
        for out_name, value in zip(node.output, outs):
            if out_name and value is not None:
                if value.is_const and value.label is None:
                    value.label = out_name
                values[out_name] = value
    return problems


def reads_opaque(node: onnx.NodeProto, record) -> bool:
    """Whether ``node``'s translation takes sequence / optional values (Identity, the
    control-flow ops, the sequence ops: their handlers say so with ``reads_opaque``)."""
    return node.op_type == "Identity" or getattr(record.handler, "reads_opaque", False)


def shape_derived(graph: Graph, value: Value) -> bool:
    """Whether ``value`` of ``graph`` is computed only from shapes and constants: every path
    back from it to an input or param passes through a ``shape`` or ``size`` op."""
    if value.is_const:
        return True
    seen: set[str] = set()
    stack = [value.node]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        if graph.is_const(name):
            continue
        if graph.is_leaf(name):
            return False
        if graph.op_of(name).type in ("shape", "size"):
            continue
        stack.extend(src for src, _ in filter(None, graph.input_sources(name)))
    return True


def import_branch_static(model: onnx.ModelProto, branch: str, specs: list[Spec],
                         registry=None) -> Graph:
    """Branch ``branch`` of the If stored in ``model`` (see ``if_per_shape``) imported with
    its outer values of the static ``specs``: every ``Shape`` folds, so the shape-driven Ifs
    inside are inlined.  ``model``'s graph has inputs ``cond, outer...``, the enclosing
    constants the branches read as initializers, and the one If node."""
    from ..plugins import default_registry
    from .importer import Importer
    registry = registry or default_registry()
    g = model.graph
    importer = Importer(model, registry, "if_per_shape", dynamic_batch=False)
    b = Builder(Graph("if_per_shape"), registry, importer.opset)
    b.importer = importer
    b.functions = {f.name: f for f in model.functions}
    values: dict[str, Value] = {}
    outer = []
    for vi, spec in zip(g.input[1:], specs):
        values[vi.name] = Value(spec, node=vi.name)
        outer.append((vi.name, values[vi.name]))
    for init in g.initializer:
        values[init.name] = b.const(to_array(init))
        values[init.name].label = init.name
    b.values = values
    node = g.node[0]
    b.begin(node)
    graph, _ = import_body(b, graph_attr(node, branch), [], outer, branch.replace("_", " "))
    return graph
