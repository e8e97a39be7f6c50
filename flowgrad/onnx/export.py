"""Export a flowgrad Graph (e.g. loaded from YAML, or trained) to an ONNX model.

Each flowgrad op maps to one or a few ONNX nodes by its exporter, declared beside its import in
its family's module (:mod:`flowgrad.onnx.ops`) or by a plugin, and looked up in the registry's
``onnx_export`` table; attributes that ONNX takes as inputs at :data:`EXPORT_OPSET` (axes, pads,
shapes, Clip bounds) become initializers.
``branch`` nodes are not exported: ONNX lets a value have many readers.  Params and constants
become initializers, graph inputs keep a symbolic batch axis ``N``.  Only the nodes the chosen
outputs depend on are exported; an op without an exporter is reported together with every other
one.  The result passes ``onnx.checker`` and runs in onnxruntime.
"""
from __future__ import annotations

import json
from typing import Callable, Sequence

import networkx as nx
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import Diagnostic, FlowgradError, PluginError
from ..graph import Graph
from ..loaders.yaml_source import plain

#: the opset exported models import (LayerNormalization needs 17, Gelu 20)
EXPORT_OPSET = 20


class _Ctx:
    """What an exporter function gets: node name, op, input/output value names, and a sink."""

    def __init__(self, name: str, op, ins: list[str], outs: list[str], out: "_Model"):
        self.name, self.op, self.ins, self.outs, self.model = name, op, ins, outs, out

    def node(self, op_type: str, ins: Sequence[str], outs: Sequence[str] | None = None, *,
             domain: str = "", opset: int = 1, **attrs) -> list[str]:
        """Add an ONNX node; returns its output names (fresh ones unless ``outs`` is given).

        A node of another ``domain`` than ONNX's (a plugin's own, or ``com.microsoft``) makes
        the model import that domain at version ``opset``; a standard-domain node with an
        ``opset`` above the export opset (Attention and RMSNormalization need 23) raises the
        model's ONNX opset to it.
        """
        if domain:
            self.model.use_domain(domain, opset)
        else:
            self.model.min_opset = max(self.model.min_opset, opset)
        outs = list(outs) if outs is not None else [self.model.fresh(self.name + "_" + op_type)]
        self.model.nodes.append(helper.make_node(op_type, list(ins), outs, domain=domain,
                                                 name=self.model.node_name(self.name), **attrs))
        return outs

    def const(self, value, dtype=np.int64) -> str:
        return self.model.const(np.asarray(value, dtype=dtype), self.name)


class _Model:
    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        self.names: set[str] = set()          # value names
        #: the graph's own names of the values exported (see :func:`own_names`): fresh names
        #: never take one, so each value can be written under its own
        self.reserved: set[str] = set()
        self.node_names: set[str] = set()
        self.dtypes: dict[str, np.dtype] = {}
        self.functions: dict[str, tuple[str, onnx.FunctionProto]] = {}
        self.opsets: dict[str, int] = {}      # domains beside ONNX's that nodes use
        self.min_opset = 1                    # the ONNX opset some node needs at least

    def use_domain(self, domain: str, version: int) -> None:
        """Record that a node uses ``domain`` at opset ``version`` (one version per model)."""
        known = self.opsets.setdefault(domain, version)
        if known != version:
            raise FlowgradError(f"ONNX domain '{domain}' is used at opset {known} and "
                                f"{version} in one model")

    def node_name(self, base: str) -> str:
        return _unique(base, self.node_names)

    def fresh(self, base: str) -> str:
        return _unique(base, self.names, self.reserved)

    def claim(self, name: str) -> str:
        """``name`` (a value's own name) if no value has it yet, else a fresh variant."""
        if name in self.names:
            return self.fresh(name)
        self.names.add(name)
        return name

    def const(self, array: np.ndarray, base: str) -> str:
        name = self.fresh(base + "_const")
        self.initializers.append(numpy_helper.from_array(array, name))
        return name


Exporter = Callable[[_Ctx], None]


def export_onnx(graph: Graph, outputs: Sequence[str] | None = None, *,
                opset: int = EXPORT_OPSET, name: str | None = None,
                float_dtype=np.float32, registry=None) -> onnx.ModelProto:
    """Build an ONNX model computing ``outputs`` (default: the graph's outputs) of ``graph``.

    Float params, constants and inputs are stored as ``float_dtype`` (flowgrad computes in
    float32 by default).  Exporters come from ``registry`` (default: the default registry),
    so a plugin's ops export with the plugin's exporters.  Raises
    :class:`~flowgrad.FlowgradError` listing every op that has no ONNX form.
    """
    from ..passes import prepare
    from ..plugins import default_registry
    registry = registry or default_registry()
    exporters = registry.table("onnx_export")
    if any(graph.specs(n) is None for n in graph.ops):
        graph = prepare(graph)
    outputs = list(graph.outputs if outputs is None else outputs)
    targets = []
    for ref in outputs:
        try:
            targets.append(graph.resolve(ref))
        except KeyError as e:
            raise FlowgradError(f"cannot export output: {e.args[0]}") from None
    needed = set()
    for node, _ in targets:
        needed |= {node} | nx.ancestors(graph.dag, node)
    order = [n for n in graph.topological_order() if n in needed]
    missing = [Diagnostic(f"op '{graph.op_of(n).type}' has no ONNX export", node=n)
               for n in order if graph.is_op(n) and not graph.is_branch(n)
               and graph.op_of(n).type not in exporters]
    if missing:
        raise FlowgradError(missing)
    model = _Model()
    own = own_names(graph, order)
    model.reserved = set(own.values())
    alias: dict[tuple[str, int], str] = {}
    inputs, inits = [], []

    def cast(value: np.ndarray) -> np.ndarray:
        value = np.asarray(value)
        return value.astype(float_dtype) if value.dtype.kind == "f" else value

    for n in order:
        if graph.is_op(n):
            continue
        if graph.spec_of(n).dtype == object:    # a boxed sequence or optional (ops/sequence.py)
            raise FlowgradError(f"node '{n}' holds a sequence or optional value; exporting "
                                "those is not supported yet")
        vname = model.claim(own[(n, 0)]) if (n, 0) in own else model.fresh(n)
        alias[(n, 0)] = vname
        if graph.is_input(n):
            spec = graph.spec_of(n)
            dtype = float_dtype if spec.dtype.kind == "f" else spec.dtype
            dims = _dims(vname, spec.shape)
            inputs.append(helper.make_tensor_value_info(
                vname, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), dims))
            model.dtypes[vname] = np.dtype(dtype)
        else:
            value = cast(graph.value_of(n))
            inits.append(numpy_helper.from_array(value, vname))
            model.dtypes[vname] = value.dtype
    for n in order:
        if graph.is_leaf(n):
            continue
        op = graph.op_of(n)
        ins = ["" if src is None else alias[src] for src in graph.input_sources(n)]
        if graph.is_branch(n):
            for port in range(graph.num_outputs(n)):
                alias[(n, port)] = ins[0]
            continue
        outs = []
        for port in range(graph.num_outputs(n)):
            vname = model.claim(own[(n, port)]) if (n, port) in own else \
                model.fresh(n if port == 0 else f"{n}_{graph.output_names(n)[port]}")
            alias[(n, port)] = vname
            outs.append(vname)
        for port, spec in enumerate(graph.specs(n)):
            model.dtypes[outs[port]] = float_dtype if spec.dtype.kind == "f" else spec.dtype
        while ins and ins[-1] == "":
            ins.pop()
        try:
            exporters[op.type](_Ctx(n, op, ins, outs, model))
        except FlowgradError:
            raise
        except Exception as e:
            raise PluginError(f"the ONNX exporter of op '{op.type}' from plugin "
                              f"{registry.provider('onnx_export', op.type).describe()} failed "
                              f"on node '{n}': {type(e).__name__}: {e}") from e
    out_infos = []
    for ref, (node, port) in zip(outputs, targets):
        vname = alias[(node, port)]
        spec = graph.specs(node)[port]
        dtype = float_dtype if spec.dtype.kind == "f" else spec.dtype
        # an output keeps the name it was asked by when that is a name (a node's, or an
        # alias: an imported model's own output names), else its value's own name
        wanted = ref if ref in graph.aliases else own.get((node, port), ref.replace(".", "_"))
        if wanted != vname and wanted not in model.names:
            model.names.add(wanted)
            model.nodes.append(helper.make_node("Identity", [vname], [wanted],
                                                name=model.node_name(wanted + "_out")))
            vname = wanted
        elif wanted != vname and any(o.name == vname for o in out_infos):
            copy = model.fresh(vname + "_out")
            model.nodes.append(helper.make_node("Identity", [vname], [copy],
                                                name=model.node_name(copy)))
            vname = copy
        out_infos.append(helper.make_tensor_value_info(
            vname, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)),
            _dims(vname, spec.shape)))
    g = helper.make_graph(model.nodes, name or graph.name, inputs, out_infos,
                          initializer=inits + model.initializers)
    opsets = [helper.make_opsetid("", max(opset, model.min_opset))] + [
        helper.make_opsetid(d, v) for d, v in sorted(model.opsets.items())]
    proto = helper.make_model(g, opset_imports=opsets, producer_name="flowgrad",
                              functions=[f for _, f in model.functions.values()])
    proto.ir_version = min(proto.ir_version,
                           max(10, helper.find_min_ir_version_for(list(proto.opset_import),
                                                                 ignore_unknown=True)))
    onnx.checker.check_model(proto)
    return proto


def save_onnx(graph: Graph, path: str, **kwargs) -> onnx.ModelProto:
    """:func:`export_onnx` and write the model to ``path``."""
    proto = export_onnx(graph, **kwargs)
    onnx.save(proto, path)
    return proto


# -- ops without a single ONNX counterpart: model-local functions in domain "flowgrad" --------

#: the domain of the model-local functions flowgrad writes (see :func:`as_function`)
FUNCTION_DOMAIN = "flowgrad"


class _Body(_Model):
    """A function body: constants become Constant nodes (functions have no initializers)."""

    def const(self, array: np.ndarray, base: str) -> str:
        name = self.fresh(base + "_const")
        self.nodes.append(helper.make_node("Constant", [], [name],
                                           value=numpy_helper.from_array(array)))
        return name


def as_function(body: Exporter) -> Exporter:
    """Export an op as a node calling a model-local ONNX function whose body ``body`` writes.

    For an op with no single ONNX counterpart (a loss, a plugin's layer): ``body(ctx)`` is an
    ordinary exporter writing standard ONNX nodes (constants become Constant nodes), so
    onnxruntime and any other runtime run the model.  The function (domain ``flowgrad``, one
    per op type and attribute values) keeps the op type and attributes in its doc_string, and
    flowgrad's importer turns the node back into exactly that op (YAML -> ONNX -> flowgrad gives
    identical results; a plugin's op needs the plugin loaded).  Use it as a decorator under
    ``@T.exports(...)``.
    """
    def fn(c: _Ctx) -> None:
        config = {"type": c.op.type, "attrs": plain(c.op.config())}
        key = json.dumps(config, sort_keys=True)
        functions = c.model.functions
        name = functions.get(key, (None,))[0]
        if name is None:
            name = c.op.type if all(f[0] != c.op.type for f in functions.values()) \
                else f"{c.op.type}_{len(functions)}"
            sub = _Body()
            sub.dtypes = {f"x{i}": c.model.dtypes.get(v, np.float32) for i, v in enumerate(c.ins)}
            ins = [f"x{i}" for i in range(len(c.ins))]
            outs = [f"y{i}" for i in range(len(c.outs))]
            sub.names.update(ins + outs)
            body(_Ctx(c.op.type, c.op, ins, outs, sub))
            for domain, version in sub.opsets.items():
                c.model.use_domain(domain, version)
            opsets = [("", EXPORT_OPSET), *sub.opsets.items()]
            proto = helper.make_function(FUNCTION_DOMAIN, name, ins, outs, sub.nodes,
                                         opset_imports=[helper.make_opsetid(d, v)
                                                        for d, v in opsets],
                                         doc_string=key)
            functions[key] = (name, proto)
        c.node(name, c.ins, c.outs, domain=FUNCTION_DOMAIN)
    fn.__doc__ = body.__doc__
    return fn



def own_names(graph: Graph, nodes: Sequence[str]) -> dict[tuple[str, int], str]:
    """``{(node, port): name}``: the name each value of ``nodes`` is exported under when it
    has one of its own — the ONNX name an imported value had (``onnx_name`` of a leaf,
    ``onnx_outputs`` of an op), else the first alias naming it (a YAML graph written by
    ``convert`` lists the model's names as ``aliases``).  So a model imported and exported,
    directly or through YAML, has the same input, initializer and output names."""
    by_value = graph.aliases_by_value()
    found = {}
    for n in nodes:
        if graph.is_leaf(n):
            mine = [graph.extra(n, "onnx_name")]
        else:
            mine = list(graph.extra(n, "onnx_outputs") or ())
            if graph.is_branch(n):
                continue
        for port in range(graph.num_outputs(n)):
            name = mine[port] if port < len(mine) else None
            if not name:
                name = next(iter(by_value.get((n, port), ())), None)
            if name:
                found[(n, port)] = name
    return found


def _unique(base: str, taken: set[str], reserved: set[str] = frozenset()) -> str:
    """``base``, or ``base_1``, ``base_2`` ... whichever is neither taken yet nor reserved;
    marks it taken."""
    name, i = base, 1
    while name in taken or name in reserved:
        name = f"{base}_{i}"
        i += 1
    taken.add(name)
    return name


def _dims(value: str, shape) -> list:
    """An input's or output's dims for its value info: a free batch axis is ``N`` (shared, so
    tools know every batch axis is the same), any other free dim its own ``<value>_<axis>``
    (sharing a name would tell them an image's height equals its width)."""
    return [d if d is not None else "N" if axis == 0 else f"{value}_{axis}"
            for axis, d in enumerate(shape)]
