"""Export a flowgrad Graph (e.g. loaded from YAML, or trained) to an ONNX model.

Each flowgrad op maps to one or a few ONNX nodes (:data:`EXPORTERS`); attributes that ONNX
takes as inputs at :data:`EXPORT_OPSET` (axes, pads, shapes, Clip bounds) become initializers.
``branch`` nodes are not exported: ONNX lets a value have many readers.  Params and constants
become initializers, graph inputs keep a symbolic batch axis ``N``.  Only the nodes the chosen
outputs depend on are exported; an op without an exporter is reported together with every other
one.  The result passes ``onnx.checker`` and runs in onnxruntime.
"""
from __future__ import annotations

from typing import Callable, Sequence

import networkx as nx
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import Diagnostic, FlowgradError
from ..graph import Graph
from ..loaders.yaml_source import plain

#: the opset exported models import (LayerNormalization needs 17, Gelu 20)
EXPORT_OPSET = 20


class _Ctx:
    """What an exporter function gets: node name, op, input/output value names, and a sink."""

    def __init__(self, name: str, op, ins: list[str], outs: list[str], out: "_Model"):
        self.name, self.op, self.ins, self.outs, self.model = name, op, ins, outs, out

    def node(self, op_type: str, ins: Sequence[str], outs: Sequence[str] | None = None,
             **attrs) -> list[str]:
        outs = list(outs) if outs is not None else [self.model.fresh(self.name + "_" + op_type)]
        self.model.nodes.append(helper.make_node(op_type, list(ins), outs,
                                                 name=self.model.node_name(self.name), **attrs))
        return outs

    def const(self, value, dtype=np.int64) -> str:
        return self.model.const(np.asarray(value, dtype=dtype), self.name)


class _Model:
    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        self.names: set[str] = set()          # value names
        self.node_names: set[str] = set()
        self.dtypes: dict[str, np.dtype] = {}
        self.functions: dict[str, tuple[str, onnx.FunctionProto]] = {}

    def node_name(self, base: str) -> str:
        return _unique(base, self.node_names)

    def fresh(self, base: str) -> str:
        return _unique(base, self.names)

    def const(self, array: np.ndarray, base: str) -> str:
        name = self.fresh(base + "_const")
        self.initializers.append(numpy_helper.from_array(array, name))
        return name


Exporter = Callable[[_Ctx], None]
EXPORTERS: dict[str, Exporter] = {}


def exports(*types: str):
    def register(fn: Exporter) -> Exporter:
        for t in types:
            EXPORTERS[t] = fn
        return fn
    return register


def _same(onnx_type: str, attrs: Callable | None = None):
    def fn(c: _Ctx) -> None:
        c.node(onnx_type, c.ins, c.outs, **(attrs(c.op) if attrs else {}))
    return fn


_SIMPLE = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "pow": "Pow", "neg": "Neg",
           "exp": "Exp", "log": "Log", "sqrt": "Sqrt", "abs": "Abs", "reciprocal": "Reciprocal",
           "identity": "Identity", "relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh",
           "softplus": "Softplus", "softsign": "Softsign", "erf": "Erf", "floor": "Floor",
           "ceil": "Ceil", "not": "Not", "hard_swish": "HardSwish", "prelu": "PRelu",
           "matmul": "MatMul", "sum": "Sum", "mean": "Mean", "min": "Min", "max": "Max",
           "equal": "Equal", "less": "Less", "greater": "Greater", "and": "And", "or": "Or",
           "where": "Where", "global_avg_pool": "GlobalAveragePool",
           "global_max_pool": "GlobalMaxPool", "size": "Size", "sign": "Sign", "sin": "Sin",
           "cos": "Cos", "round": "Round", "xor": "Xor", "less_or_equal": "LessOrEqual",
           "greater_or_equal": "GreaterOrEqual"}
for _fg, _onnx in _SIMPLE.items():
    EXPORTERS[_fg] = _same(_onnx)


def _attrs(*names: str):
    """Copy the op's attributes ``names`` whose values are set (not None / empty)."""
    def get(op):
        out = {}
        for n in names:
            v = getattr(op, n)
            if v is None or (isinstance(v, tuple) and not v):
                continue
            out[n] = list(v) if isinstance(v, tuple) else v
        return out
    return get


EXPORTERS["leaky_relu"] = _same("LeakyRelu", _attrs("alpha"))
EXPORTERS["elu"] = _same("Elu", _attrs("alpha"))
EXPORTERS["selu"] = _same("Selu", _attrs("alpha", "gamma"))
EXPORTERS["hard_sigmoid"] = _same("HardSigmoid", _attrs("alpha", "beta"))
EXPORTERS["gelu"] = _same("Gelu", _attrs("approximate"))
EXPORTERS["softmax"] = _same("Softmax", _attrs("axis"))
EXPORTERS["log_softmax"] = _same("LogSoftmax", _attrs("axis"))
EXPORTERS["flatten"] = _same("Flatten", _attrs("axis"))
EXPORTERS["concat"] = _same("Concat", _attrs("axis"))
EXPORTERS["gather"] = _same("Gather", _attrs("axis"))
EXPORTERS["einsum"] = _same("Einsum", _attrs("equation"))
EXPORTERS["argmax"] = _same("ArgMax", lambda op: {"axis": op.axis, "keepdims": int(op.keepdims),
                                                  "select_last_index": int(op.select_last_index)})
EXPORTERS["argmin"] = _same("ArgMin", lambda op: {"axis": op.axis, "keepdims": int(op.keepdims),
                                                  "select_last_index": int(op.select_last_index)})
EXPORTERS["mod"] = _same("Mod", lambda op: {"fmod": int(op.fmod)})
EXPORTERS["gather_elements"] = _same("GatherElements", _attrs("axis"))
EXPORTERS["one_hot"] = _same("OneHot", _attrs("axis"))
EXPORTERS["lrn"] = _same("LRN", _attrs("size", "alpha", "beta", "bias"))
EXPORTERS["instance_norm"] = _same("InstanceNormalization", _attrs("epsilon"))
EXPORTERS["layer_norm"] = _same("LayerNormalization", _attrs("axis", "epsilon"))
EXPORTERS["batch_norm"] = _same("BatchNormalization", _attrs("epsilon", "momentum"))
_WINDOW = ("auto_pad", "dilations", "kernel_shape", "pads", "strides")
EXPORTERS["conv"] = _same("Conv", _attrs(*_WINDOW, "group"))
EXPORTERS["conv_transpose"] = _same("ConvTranspose",
                                    _attrs(*_WINDOW, "group", "output_padding", "output_shape"))
EXPORTERS["max_pool"] = _same("MaxPool", _attrs(*_WINDOW, "ceil_mode", "storage_order"))
EXPORTERS["avg_pool"] = _same("AveragePool", _attrs(*_WINDOW, "ceil_mode", "count_include_pad"))


@exports("dense")
def _dense(c: _Ctx) -> None:
    x, W = c.ins[0], c.ins[1]
    if len(c.ins) > 2 and c.ins[2]:
        y = c.node("MatMul", [x, W])
        c.node("Add", [y[0], c.ins[2]], c.outs)
    else:
        c.node("MatMul", [x, W], c.outs)


@exports("transpose")
def _transpose(c: _Ctx) -> None:
    c.node("Transpose", c.ins, c.outs, **({} if c.op.perm is None else {"perm": list(c.op.perm)}))


@exports("reshape")
def _reshape(c: _Ctx) -> None:
    shape = c.ins[1] if len(c.ins) > 1 and c.ins[1] else c.const(c.op.shape)
    c.node("Reshape", [c.ins[0], shape], c.outs)


def _with_axes(onnx_type: str, extra: Callable = lambda op: {}):
    def fn(c: _Ctx) -> None:
        ins = [c.ins[0]] + ([c.const(c.op.axes)] if c.op.axes is not None else [])
        c.node(onnx_type, ins, c.outs, **extra(c.op))
    return fn


EXPORTERS["squeeze"] = _with_axes("Squeeze")
EXPORTERS["unsqueeze"] = _with_axes("Unsqueeze")
for _fg, _onnx in (("reduce_sum", "ReduceSum"), ("reduce_mean", "ReduceMean"),
                   ("reduce_max", "ReduceMax"), ("reduce_min", "ReduceMin"),
                   ("reduce_l2", "ReduceL2")):
    EXPORTERS[_fg] = _with_axes(_onnx, lambda op: {"keepdims": int(op.keepdims)})


@exports("clip")
def _clip(c: _Ctx) -> None:
    dtype = c.model.dtypes.get(c.ins[0], np.float32)
    lo = "" if np.isneginf(c.op.min) else c.const(c.op.min, dtype)
    hi = "" if np.isposinf(c.op.max) else c.const(c.op.max, dtype)
    c.node("Clip", [c.ins[0], lo, hi], c.outs)


@exports("dropout")
def _dropout(c: _Ctx) -> None:
    """A fixed ``training_mode`` becomes ONNX's input; unset (the plan's mode) exports as
    inference, as a deployed model runs."""
    ins = [c.ins[0], c.const(c.op.ratio, np.float32)]
    if c.op.training_mode is not None:
        ins.append(c.const(c.op.training_mode, np.bool_))
    attrs = {} if c.op.seed is None else {"seed": c.op.seed}
    c.node("Dropout", ins, c.outs, **attrs)


@exports("slice")
def _slice(c: _Ctx) -> None:
    op = c.op
    ins = [c.ins[0]]
    for i, key in enumerate(("starts", "ends", "axes", "steps"), start=1):
        given = c.ins[i] if len(c.ins) > i and c.ins[i] else None
        value = getattr(op, key)
        ins.append(given or ("" if value is None else c.const(value)))
    while ins and ins[-1] == "":
        ins.pop()
    c.node("Slice", ins, c.outs)


@exports("split")
def _split(c: _Ctx) -> None:
    op = c.op
    ins = [c.ins[0]]
    attrs = {"axis": op.axis}
    if len(c.ins) > 1 and c.ins[1]:
        ins.append(c.ins[1])
    elif op.split is not None:
        ins.append(c.const(op.split))
    else:
        attrs["num_outputs"] = len(c.outs)
    c.node("Split", ins, c.outs, **attrs)


def _shape_input(onnx_type: str, attr: str):
    def fn(c: _Ctx) -> None:
        given = c.ins[1] if len(c.ins) > 1 and c.ins[1] else None
        c.node(onnx_type, [c.ins[0], given or c.const(getattr(c.op, attr))], c.outs)
    return fn


EXPORTERS["expand"] = _shape_input("Expand", "shape")
EXPORTERS["tile"] = _shape_input("Tile", "repeats")


@exports("topk")
def _topk(c: _Ctx) -> None:
    k = c.ins[1] if len(c.ins) > 1 and c.ins[1] else c.const([c.op.k])
    c.node("TopK", [c.ins[0], k], c.outs, axis=c.op.axis, largest=int(c.op.largest),
           sorted=int(c.op.sorted))


@exports("cast")
def _cast(c: _Ctx) -> None:
    c.node("Cast", c.ins, c.outs, to=helper.np_dtype_to_tensor_dtype(np.dtype(c.op.to)))


@exports("shape")
def _shape(c: _Ctx) -> None:
    attrs = {"start": c.op.start} if c.op.start else {}
    if c.op.end is not None:
        attrs["end"] = c.op.end
    c.node("Shape", c.ins, c.outs, **attrs)


@exports("constant_of_shape")
def _constant_of_shape(c: _Ctx) -> None:
    value = numpy_helper.from_array(np.asarray([c.op.value], dtype=c.op.dtype))
    shape = c.ins[0] if c.ins and c.ins[0] else c.const(c.op.shape)
    c.node("ConstantOfShape", [shape], c.outs, value=value)


@exports("range")
def _range(c: _Ctx) -> None:
    c.node("Range", c.ins, c.outs)


@exports("pad")
def _pad(c: _Ctx) -> None:
    op = c.op
    ins = [c.ins[0], c.const(list(op.pads))]
    value = getattr(op, "value", 0.0)
    if value:
        ins.append(c.const(value, c.model.dtypes.get(c.ins[0], np.float32)))
    c.node("Pad", ins, c.outs, mode=getattr(op, "mode", "constant"))


def export_onnx(graph: Graph, outputs: Sequence[str] | None = None, *,
                opset: int = EXPORT_OPSET, name: str | None = None,
                float_dtype=np.float32) -> onnx.ModelProto:
    """Build an ONNX model computing ``outputs`` (default: the graph's outputs) of ``graph``.

    Float params, constants and inputs are stored as ``float_dtype`` (flowgrad computes in
    float32 by default).  Raises :class:`~flowgrad.FlowgradError` listing every op that has no
    ONNX form.
    """
    from ..passes import prepare
    if any(graph.node(n).get("specs") is None for n in graph.ops):
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
    missing = [Diagnostic(f"op '{graph.node(n)['op'].type}' has no ONNX export", node=n)
               for n in order if graph.node(n)["kind"] == "op"
               and graph.node(n)["op"].type not in EXPORTERS
               and graph.node(n)["op"].type != "branch"]
    if missing:
        raise FlowgradError(missing)
    model = _Model()
    alias: dict[tuple[str, int], str] = {}
    inputs, inits = [], []

    def cast(value: np.ndarray) -> np.ndarray:
        value = np.asarray(value)
        return value.astype(float_dtype) if value.dtype.kind == "f" else value

    for n in order:
        data = graph.node(n)
        kind = data["kind"]
        if kind == "op":
            continue
        vname = model.fresh(n)
        alias[(n, 0)] = vname
        if kind == "input":
            spec = data["spec"]
            dtype = float_dtype if spec.dtype.kind == "f" else spec.dtype
            dims = ["N" if d is None else d for d in spec.shape]
            inputs.append(helper.make_tensor_value_info(
                vname, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), dims))
            model.dtypes[vname] = np.dtype(dtype)
        elif kind in ("param", "const"):
            value = cast(data["value"])
            inits.append(numpy_helper.from_array(value, vname))
            model.dtypes[vname] = value.dtype
    for n in order:
        data = graph.node(n)
        if data["kind"] != "op":
            continue
        op = data["op"]
        ins = []
        for src in graph.input_sources(n):
            ins.append("" if src is None else alias[src])
        if op.type == "branch":
            for port in range(graph.num_outputs(n)):
                alias[(n, port)] = ins[0]
            continue
        outs = []
        for port in range(graph.num_outputs(n)):
            vname = model.fresh(n if port == 0 else f"{n}_{graph.output_names(n)[port]}")
            alias[(n, port)] = vname
            outs.append(vname)
        for port, spec in enumerate(data["specs"]):
            model.dtypes[outs[port]] = float_dtype if spec.dtype.kind == "f" else spec.dtype
        while ins and ins[-1] == "":
            ins.pop()
        EXPORTERS[op.type](_Ctx(n, op, ins, outs, model))
    out_infos = []
    for ref, (node, port) in zip(outputs, targets):
        vname = alias[(node, port)]
        spec = graph.specs(node)[port]
        dtype = float_dtype if spec.dtype.kind == "f" else spec.dtype
        wanted = ref.replace(".", "_")
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
            ["N" if d is None else d for d in spec.shape]))
    g = helper.make_graph(model.nodes, name or graph.name, inputs, out_infos,
                          initializer=inits + model.initializers)
    opsets = [helper.make_opsetid("", opset)]
    if model.functions:
        opsets.append(helper.make_opsetid(FUNCTION_DOMAIN, 1))
    proto = helper.make_model(g, opset_imports=opsets, producer_name="flowgrad",
                              functions=[f for _, f in model.functions.values()])
    proto.ir_version = min(proto.ir_version, 10)
    onnx.checker.check_model(proto)
    return proto


def save_onnx(graph: Graph, path: str, **kwargs) -> onnx.ModelProto:
    """:func:`export_onnx` and write the model to ``path``."""
    proto = export_onnx(graph, **kwargs)
    onnx.save(proto, path)
    return proto


# -- ops without a single ONNX counterpart: model-local functions in domain "flowgrad" --------
#
# The function body (plain ONNX ops) lets onnxruntime and any other runtime run the model; the
# function's doc_string holds the flowgrad op and its attributes, so flowgrad's importer maps the
# node back to exactly that op (YAML -> ONNX -> flowgrad gives identical results).

FUNCTION_DOMAIN = "flowgrad"


class _Body(_Model):
    """A function body: constants become Constant nodes (functions have no initializers)."""

    def const(self, array: np.ndarray, base: str) -> str:
        name = self.fresh(base + "_const")
        self.nodes.append(helper.make_node("Constant", [], [name],
                                           value=numpy_helper.from_array(array)))
        return name


def _as_function(body: Exporter) -> Exporter:
    def fn(c: _Ctx) -> None:
        import json
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
            proto = helper.make_function(FUNCTION_DOMAIN, name, ins, outs, sub.nodes,
                                         opset_imports=[helper.make_opsetid("", EXPORT_OPSET)],
                                         doc_string=key)
            functions[key] = (name, proto)
        c.model.nodes.append(helper.make_node(name, c.ins, c.outs, domain=FUNCTION_DOMAIN,
                                              name=c.model.node_name(c.name)))
    return fn



def _step(c: _Ctx) -> None:
    dtype = np.dtype(c.model.dtypes.get(c.ins[0], np.float32))
    positive = c.node("Greater", [c.ins[0], c.const(0.0, dtype)])
    c.node("Cast", positive, c.outs, to=helper.np_dtype_to_tensor_dtype(dtype))


def _trace(c: _Ctx) -> None:
    c.node("Einsum", c.ins, c.outs, equation="...ii->...")


def _mse(c: _Ctx) -> None:
    d = c.node("Sub", c.ins[:2])
    sq = c.node("Mul", [d[0], d[0]])
    if c.op.reduction == "mean":
        c.node("ReduceMean", sq, c.outs, keepdims=0)
    else:
        total = c.node("ReduceSum", sq, keepdims=0)
        c.node("Mul", [total[0], c.const(0.5, c.model.dtypes.get(c.ins[0], np.float32))], c.outs)


def _softmax_cross_entropy(c: _Ctx) -> None:
    """Integer labels: ONNX SoftmaxCrossEntropyLoss; soft targets: -sum(t * log_softmax)."""
    logits, labels = c.ins[:2]
    dtype = np.dtype(c.model.dtypes.get(logits, np.float32))
    if np.dtype(c.model.dtypes.get(labels, np.float32)).kind in "iu":
        c.node("SoftmaxCrossEntropyLoss", [logits, labels], c.outs, reduction=c.op.reduction)
        return
    logp = c.node("LogSoftmax", [logits], axis=1)
    total = c.node("ReduceSum", c.node("Mul", [labels, logp[0]]), keepdims=0)
    loss = c.node("Neg", total)
    if c.op.reduction == "mean":
        batch = c.node("Gather", [c.node("Shape", [logits])[0], c.const(0)], axis=0)
        n = c.node("Cast", batch, to=helper.np_dtype_to_tensor_dtype(dtype))
        c.node("Div", [loss[0], n[0]], c.outs)
    else:
        c.node("Identity", loss, c.outs)


for _fg, _body in (("step", _step), ("trace", _trace), ("mse", _mse),
                   ("softmax_cross_entropy", _softmax_cross_entropy)):
    EXPORTERS[_fg] = _as_function(_body)


def _unique(base: str, taken: set[str]) -> str:
    """``base``, or ``base_1``, ``base_2`` ... whichever is not taken yet; marks it taken."""
    name, i = base, 1
    while name in taken:
        name = f"{base}_{i}"
        i += 1
    taken.add(name)
    return name
