"""Translate a loaded ONNX ModelProto into a flowgrad Graph (used by ``load_onnx``).

The model has passed the structural checks (:mod:`flowgrad.onnx.checks`) by then.  Every
problem found here is collected and raised at once: first every op without a translation at
the model's opset (one message listing op, domain and version), then every node that could not
be translated, each located by its ONNX node name and op type.  Handlers read a node only
through the checked accessors of :mod:`flowgrad.onnx.access`; a handler of flowgrad's own that
fails otherwise is a bug in flowgrad (the CLI's internal error), one of a plugin names the
plugin.
"""
from __future__ import annotations

import json
from typing import Sequence

import numpy as np
import onnx

from ..errors import Diagnostic, GraphError, PluginError
from ..graph import Graph
from ..op import Spec
from ..plugins import Registry
from .access import Attrs, Inputs
from .builder import Builder, ImportProblem, Value
from .checks import node_label, node_problem
from .export import FUNCTION_DOMAIN
from .model_io import opset_versions
from .opset import by_op, pick
from .subgraph import nested_reads, reads_opaque
from .tensors import DTYPES, to_array
from .trainable import CONST, PARAM, STATE, Rules, classify
from .translations import ImportTranslation, canonical_domain

#: how many node names the unsupported-op report lists per op
SHOWN_NODES = 3


def _import_function(b, a, ins):
    """A node of domain ``flowgrad`` calls a model-local function whose doc_string names the
    flowgrad op and its attributes (see :func:`flowgrad.onnx.export.as_function`)."""
    function = b.functions.get(b.current.op_type)
    try:
        config = json.loads(function.doc_string)
        op_type, attrs = config["type"], config["attrs"]
    except (AttributeError, ValueError, KeyError, TypeError):
        op_type, attrs = None, None
    if not isinstance(op_type, str) or not isinstance(attrs, dict):
        raise ImportProblem(f"no function '{b.current.op_type}' describing a flowgrad op in "
                            "the model (its doc_string must be JSON with 'type' and 'attrs')")
    return b.final(op_type, list(ins), **attrs)


#: every op of domain ``flowgrad`` is one of flowgrad's exported functions, whatever its name
_FUNCTION = ImportTranslation(FUNCTION_DOMAIN, "*", 1, _import_function)


#: The Spec of a sequence- or optional-typed value.  flowgrad computes on arrays only, but a
#: graph slot can hold any object: such a value travels as a 0-d object array boxing the Python
#: value (a list of arrays, an array, or None; :mod:`.backend` boxes and unboxes it).  Only
#: Identity may read one — every other op refuses it at load time.
OPAQUE = Spec((), np.dtype(object))


def tensor_spec(value_info: onnx.ValueInfoProto) -> Spec | None:
    """The Spec of a graph input: :data:`OPAQUE` for sequences and optionals, None for other
    non-tensors (maps, sparse tensors)."""
    kind = value_info.type.WhichOneof("value")
    if kind in ("sequence_type", "optional_type"):
        return OPAQUE
    if kind != "tensor_type":
        return None
    tt = value_info.type.tensor_type
    dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 else None
                 for d in tt.shape.dim)          # -1: paddle2onnx's unknown dim
    return Spec(dims, DTYPES[tt.elem_type])


class Importer:
    def __init__(self, model: onnx.ModelProto, registry: Registry, where: str,
                 dynamic_batch: bool = True, freeze: Sequence[str] = (),
                 unfreeze: Sequence[str] = (), straight_through: bool = False):
        self.model = model
        self.straight_through = straight_through   # read by the QuantizeLinear translation
        self.freeze, self.unfreeze = tuple(freeze), tuple(unfreeze)
        self.registry = registry
        self.where = where
        self.dynamic_batch = dynamic_batch
        self.opset = opset_versions(model)
        self.versions = by_op(registry.table("onnx_import"))

    def version(self, node: onnx.NodeProto) -> int:
        return self.opset.get(canonical_domain(node.domain), 1)

    def translation(self, node: onnx.NodeProto) -> ImportTranslation | None:
        """The translation of ``node`` at the model's opset, or None."""
        domain = canonical_domain(node.domain)
        if domain == FUNCTION_DOMAIN:
            return _FUNCTION
        return pick(self.versions, domain, node.op_type, self.version(node))

    def provider(self, record: ImportTranslation) -> str:
        """Which plugin declared ``record`` (for messages about a translation that failed)."""
        if record is _FUNCTION:
            return "'flowgrad'"
        key = (record.domain, record.op_type, record.since)
        return self.registry.provider("onnx_import", key).describe()

    def builtin(self, record: ImportTranslation) -> bool:
        """Whether flowgrad itself declared ``record`` (a failure there is flowgrad's bug)."""
        if record is _FUNCTION:
            return True
        key = (record.domain, record.op_type, record.since)
        return self.registry.provider("onnx_import", key).kind == "builtin"

    def static(self, node: onnx.NodeProto) -> frozenset[int]:
        """The input positions of ``node`` whose value its translation needs at load time."""
        record = self.translation(node)
        return record.static if record else frozenset()

    def check_supported(self) -> None:
        """Raise one error listing every op of the model with no translation, and the nodes
        that use it (the first few names, then a count)."""
        missing: dict[tuple[str, str, int], list[str]] = {}
        for node in self.model.graph.node:
            if self.translation(node) is None:
                domain = canonical_domain(node.domain)
                missing.setdefault((domain, node.op_type, self.version(node)), []).append(
                    node_label(node))
        if missing:
            lines = []
            for (domain, op_type, version), nodes in sorted(missing.items()):
                known = self.versions.get((domain, op_type))
                why = f"translated from opset {known[0].since}" if known else "no translation"
                shown = ", ".join(f"'{n}'" for n in nodes[:SHOWN_NODES])
                more = f" and {len(nodes) - SHOWN_NODES} more" if len(nodes) > SHOWN_NODES \
                    else ""
                lines.append(f"  {op_type} (domain {domain or 'ai.onnx'}, opset {version}): "
                             f"{len(nodes)} node(s) ({shown}{more}); {why}")
            raise GraphError(
                f"{self.where}: the model uses {len(missing)} unsupported op(s):\n"
                + "\n".join(lines)
                + "\ncustom-domain ops can be mapped by a plugin (hook flowgrad_register_onnx)")

    def rules(self) -> Rules:
        """The fine-tuning rules' verdict on every stored value (:mod:`.trainable`), with the
        user's ``freeze``/``unfreeze`` patterns."""
        return classify(self.model, self.translation, self.static, self.freeze, self.unfreeze)

    def stored_param(self, graph: Graph, b: Builder, rules: Rules, name: str,
                     array: np.ndarray) -> Value | None:
        """A param node for stored ONNX value ``name`` (an initializer, a ``Constant``
        node's output, a weight cast or transposed at load time) when the rules make it one;
        None when it stays a constant."""
        kind = rules.kind(name, array)
        if kind == CONST:
            return None
        node_name = b.claim(name)
        extra = {"state": True} if kind == STATE else {}
        graph.add_param(node_name, array, trainable=kind == PARAM, onnx_name=name, **extra)
        return Value(Spec.of(array), node=node_name, initial=array)

    def build(self, name: str | None = None) -> Graph:
        self.check_supported()
        g = self.model.graph
        graph = Graph(name or g.name or "onnx_model", source=self.where)
        b = Builder(graph, self.registry, self.opset)
        b.straight_through = self.straight_through
        b.functions = {f.name: f for f in self.model.functions if f.domain == FUNCTION_DOMAIN}
        b.used = {i for node in g.node for i in node.input} | {vi.name for vi in g.output}
        b.reserved = _value_names(g)
        values: dict[str, Value] = {}
        b.values, b.importer = values, self     # the scope control-flow bodies read (subgraph.py)
        b.used |= nested_reads(g)
        names_in: dict[str, str] = {}
        errors: list[Diagnostic] = []
        rules = self.rules()
        init_names = {init.name for init in g.initializer}
        declared: dict[str, int] = {}
        for vi in g.input:
            if vi.name in init_names:
                continue
            spec = tensor_spec(vi)
            node_name = b.claim(vi.name)
            if spec is None:
                errors.append(Diagnostic(f"graph input '{vi.name}' is not a tensor, sequence "
                                         "or optional (maps and sparse tensors are not "
                                         "supported)", node=node_name))
                continue
            if self.dynamic_batch and spec.ndim:
                if spec.shape[0]:
                    declared[node_name] = spec.shape[0]    # checked by .batch after the build
                spec = Spec((None,) + spec.shape[1:], spec.dtype)
            graph.add_input(node_name, spec, onnx_name=vi.name)
            names_in[node_name] = vi.name
            values[vi.name] = Value(spec, node=node_name)
        for init in g.initializer:
            array = to_array(init)
            param = self.stored_param(graph, b, rules, init.name, array)
            if param is None:
                values[init.name] = b.const(array)
                values[init.name].label = init.name
                continue
            values[init.name] = param
        failed: set[str] = set()
        for node in g.node:
            label = node_label(node)
            missing = [i for i in node.input if i and i not in values]
            if missing:
                failed.update(node.output)
                if not any(i in failed for i in missing):
                    errors.append(node_problem(node, f"unknown input(s) {', '.join(missing)}; "
                                               "each must be a graph input, an initializer or "
                                               "an earlier node's output"))
                continue
            inputs = Inputs([values[i] if i else None for i in node.input])
            if not reads_opaque(node, self.translation(node)) and any(
                    v is not None and v.spec == OPAQUE for v in inputs):
                errors.append(node_problem(node, "reads a sequence or optional value; flowgrad "
                                           "only passes those through Identity, control flow "
                                           "and the sequence ops"))
                failed.update(node.output)
                continue
            record = self.translation(node)
            b.begin(node)
            try:
                outs = record.handler(b, Attrs(node), inputs)
            except ImportProblem as e:
                errors.append(node_problem(node, str(e), self.version(node)))
                failed.update(node.output)
                continue
            except Exception as e:
                if self.builtin(record):
                    raise                   # flowgrad's own bug: the CLI's internal error
                raise PluginError(f"{self.where}: the import translation of {node.op_type} from "
                                  f"plugin {self.provider(record)} failed on ONNX node "
                                  f"'{label}': {type(e).__name__}: {e}") from e
            for out_name, value in zip(node.output, outs):
                if out_name and value is not None:
                    if value.is_const and out_name in rules.kinds:
                        value = self.stored_param(graph, b, rules, out_name, value.const) \
                            or value
                    if value.is_const and value.label is None:
                        value.label = out_name
                    values[out_name] = value
        outputs: dict[str, str] = {}
        for vi in g.output:
            value = values.get(vi.name)
            if value is None:
                if vi.name not in failed:
                    errors.append(Diagnostic(f"graph output '{vi.name}' is not computed by any "
                                             "node"))
                continue
            if value.is_const:
                node_name = b.claim(vi.name)
                graph.add_const(node_name, value.const, onnx_name=vi.name)
                value = values[vi.name] = Value(value.spec, node=node_name)
            graph.outputs.append(vi.name)
            outputs[vi.name] = vi.name
        if errors:
            raise GraphError(errors)
        _name_values(graph, values)
        _prune(graph)
        graph.meta["onnx"] = {"inputs": names_in, "outputs": outputs, "opset": dict(self.opset),
                              "producer": self.model.producer_name,
                              "declared_batch": declared, "unmatched": rules.unmatched()}
        return graph


def _value_names(g: onnx.GraphProto) -> set[str]:
    """Every value name the graph declares or computes (inputs, initializers, node outputs)."""
    names = {vi.name for vi in g.input} | {init.name for init in g.initializer}
    names.update(o for node in g.node for o in node.output)
    names.discard("")
    return names


def _name_values(graph: Graph, values: dict[str, Value]) -> None:
    """Make every ONNX value computed in the graph reachable by the model's own name.

    A value usually *is* its node (the builder names a node after the value it produces), so
    nothing is needed.  Otherwise the name becomes an alias (:meth:`Graph.add_alias`): an
    output at port > 0 (an LSTM's ``Y_h``), a value a translation passed through unchanged
    (``Dropout`` at inference), a name flowgrad had to replace.  Each op node also records the
    ONNX name of each output port it produces first (``onnx_outputs``), which the exporter
    writes back."""
    for name, value in values.items():
        if value.is_const or value.node is None or value.node not in graph.dag:
            continue
        if graph.is_op(value.node):
            own = list(graph.extra(value.node, "onnx_outputs")
                       or [None] * graph.num_outputs(value.node))
            if own[value.port] is None:
                own[value.port] = name
                graph.set_extra(value.node, "onnx_outputs", tuple(own))
        if value.port == 0 and name == value.node:
            continue
        if name not in graph.dag and name not in graph.aliases:
            graph.add_alias(name, graph.value_name(value.node, value.port))


def _prune(graph: Graph) -> None:
    """Drop leaves nothing reads (initializers only used at load time, e.g. shapes), and the
    aliases of values that went with them."""
    keep = {graph.resolve(ref)[0] for ref in graph.outputs}
    dag = graph.dag
    for name in list(dag.nodes):
        if (graph.is_param(name) or graph.is_const(name)) and dag.out_degree(name) == 0 \
                and name not in keep:
            dag.remove_node(name)
    for alias, ref in list(graph.aliases.items()):
        try:
            graph.resolve(ref)
        except KeyError:
            del graph.aliases[alias]
