"""Fuzz target: ONNX models, read by ``flowgrad check``.

Seeds are small real models: the onnx package's test models (``node`` when the installed wheel
ships it, ``simple``, ``pytorch-converted``, ``pytorch-operator``), one single-node model per
op flowgrad translates (built from the op's ONNX schema, so every import handler is reached
whatever the wheel ships) and the repo's ``graphs/*.yaml`` exported with flowgrad's exporter.
Mutation is structure-aware — it edits the ModelProto the way a broken exporter or a hostile
file would (missing and extra inputs, deleted, retyped or garbled attributes, unknown element
types, negative or huge dims, truncated raw data, renamed ops and domains, odd opsets) — and
sometimes byte-level on the serialized file, so the protobuf parser is reached too.
"""
from __future__ import annotations

import functools
import glob
import os
import random

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, helper, numpy_helper

from tests.fuzz import harness

NAME = "onnx"
SUFFIX = ".onnx"

#: seeds larger than this are left out: a mutant must load (and check) well within 10 s
MAX_SEED_BYTES = 1 << 20
#: models larger than this are only validated, not gradient-checked
GRADIENT_CHECK_BYTES = 64 << 10

_DATA = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@functools.cache
def seeds() -> list[bytes]:
    out = []
    for folder in ("node", "simple", "pytorch-converted", "pytorch-operator"):
        for path in sorted(glob.glob(os.path.join(_DATA, folder, "*", "model.onnx"))):
            if os.path.getsize(path) <= MAX_SEED_BYTES:
                with open(path, "rb") as f:
                    out.append(f.read())
    out += [m.SerializeToString() for m in _single_node_models()]
    out += [m.SerializeToString() for m in _repo_models()]
    return [s for s in out if len(s) <= MAX_SEED_BYTES]


def _single_node_models() -> list[onnx.ModelProto]:
    """One node per standard op flowgrad imports, with as many float inputs as its schema
    allows, at the newest opset that op's schema has."""
    from flowgrad.onnx.conformance import CLAIMED_OPS
    models = []
    for op_type in CLAIMED_OPS:
        try:
            schema = onnx.defs.get_schema(op_type)
        except onnx.defs.SchemaError:
            continue
        count = min(len(schema.inputs), 3) or 1
        names = [f"x{i}" for i in range(count)]
        outs = [f"y{i}" for i in range(max(schema.min_output, 1))]
        node = helper.make_node(op_type, names, outs, name=f"{op_type.lower()}_0")
        graph = helper.make_graph(
            [node], op_type, [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3, 4, 4])
                              for n in names],
            [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs])
        models.append(helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", schema.since_version)]))
    return models


def _repo_models() -> list[onnx.ModelProto]:
    """The repo's graphs whose weights fit a seed, exported by flowgrad."""
    import flowgrad
    from flowgrad.errors import FlowgradError
    from flowgrad.onnx.export import export_onnx
    models = []
    for path in sorted(glob.glob(os.path.join(_ROOT, "graphs", "*.yaml"))):
        try:
            graph = flowgrad.load(path)
        except FlowgradError:
            continue                            # e.g. a graph needing plugins
        if sum(graph.value_of(p).nbytes for p in graph.params) <= MAX_SEED_BYTES:
            models.append(export_onnx(graph))
    return models


def argv(path: str, workdir: str) -> list[str]:
    """``check`` (with a gradient check on small models, so what loads also runs); installed
    plugin packages are not scanned for (a third of a case's time, and not this boundary)."""
    if os.path.getsize(path) > GRADIENT_CHECK_BYTES:
        return ["--no-autoload", "check", "--no-gradients", path]
    return ["--no-autoload", "check", "--elements", "2", path]


# -- mutation --------------------------------------------------------------------------------

def mutate(data: bytes, rng: random.Random) -> bytes:
    if rng.random() < 0.15:
        return harness.byte_mutation(data, rng)
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception:  # noqa: BLE001 - a seed that is already broken: bytes only
        return harness.byte_mutation(data, rng)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        rng.choice(MUTATIONS)(model, rng)
    out = model.SerializeToString()
    return harness.byte_mutation(out, rng, 1) if rng.random() < 0.1 else out


ODD_INTS = [0, -1, -2, 1, 2, 3, 7, 2**31 - 1, 2**31, -(2**31), 2**40, 2**62, -(2**63),
            2**63 - 1, 10**12]
ODD_FLOATS = [0.0, -1.0, 1e30, -1e30, float("nan"), float("inf"), float("-inf"), 1e-45]
ODD_STRINGS = [b"", b"\xff\xfe", b"\xc3\x28", b"\x00", b"nope", b"DCR", b"constant", b"a" * 300]
#: element types: known ones, numpy-less ones, and values past the enum's end
ODD_ELEM_TYPES = [0, 1, 6, 7, 9, 10, 16, 17, 19, 21, 22, 23, 25, 26, 8, 14, 30, 99, -1, 2**20]
OP_TYPES = ["Conv", "Relu", "Gemm", "Reshape", "Concat", "Slice", "Resize", "Pad", "TopK",
            "Split", "Constant", "ConstantOfShape", "Expand", "Tile", "Range", "Cast", "Gather",
            "BatchNormalization", "Unknown", "", "relu", "Loop", "If", "Scan"]
DOMAINS = ["", "ai.onnx", "com.microsoft", "flowgrad", "ai.onnx.ml", "com.example", "\x00"]


def _nodes(model):
    return list(model.graph.node)


def _pick_node(model, rng):
    nodes = _nodes(model)
    return rng.choice(nodes) if nodes else None


def _names(model) -> list[str]:
    g = model.graph
    return ([v.name for v in g.input] + [t.name for t in g.initializer]
            + [o for n in g.node for o in n.output])


def drop_input(model, rng):
    node = _pick_node(model, rng)
    if node is not None and node.input:
        del node.input[rng.randrange(len(node.input))]


def blank_input(model, rng):
    node = _pick_node(model, rng)
    if node is not None and node.input:
        node.input[rng.randrange(len(node.input))] = ""


def add_input(model, rng):
    node = _pick_node(model, rng)
    if node is not None:
        names = _names(model) + ["", "nowhere"]
        for _ in range(rng.randint(1, 4)):
            node.input.append(rng.choice(names))


def drop_output(model, rng):
    node = _pick_node(model, rng)
    if node is not None and node.output:
        if rng.random() < 0.5:
            del node.output[rng.randrange(len(node.output))]
        else:
            node.output[rng.randrange(len(node.output))] = ""


def add_output(model, rng):
    node = _pick_node(model, rng)
    if node is not None:
        node.output.append(rng.choice(_names(model) + ["extra"]))


def drop_node(model, rng):
    nodes = model.graph.node
    if nodes:
        del nodes[rng.randrange(len(nodes))]


def shuffle_nodes(model, rng):
    nodes = _nodes(model)
    rng.shuffle(nodes)
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def delete_attribute(model, rng):
    node = _pick_node(model, rng)
    if node is not None and node.attribute:
        del node.attribute[rng.randrange(len(node.attribute))]


def retype_attribute(model, rng):
    node = _pick_node(model, rng)
    if node is not None and node.attribute:
        attr = rng.choice(node.attribute)
        attr.type = rng.choice(AttributeProto.AttributeType.values())


def garble_attribute(model, rng):
    """Keep the attribute's type, give it a value nobody expects."""
    node = _pick_node(model, rng)
    if node is None or not node.attribute:
        return
    attr = rng.choice(node.attribute)
    t = attr.type
    if t == AttributeProto.INT:
        attr.i = rng.choice(ODD_INTS)
    elif t == AttributeProto.INTS:
        del attr.ints[:]
        attr.ints.extend(rng.choice(ODD_INTS) for _ in range(rng.randint(0, 6)))
    elif t == AttributeProto.FLOAT:
        attr.f = rng.choice(ODD_FLOATS)
    elif t == AttributeProto.FLOATS:
        del attr.floats[:]
        attr.floats.extend(rng.choice(ODD_FLOATS) for _ in range(rng.randint(0, 6)))
    elif t == AttributeProto.STRING:
        attr.s = rng.choice(ODD_STRINGS)
    elif t == AttributeProto.STRINGS:
        del attr.strings[:]
        attr.strings.extend(rng.choice(ODD_STRINGS) for _ in range(rng.randint(0, 3)))
    elif t == AttributeProto.TENSOR:
        _garble_tensor(attr.t, rng)
    else:
        attr.ClearField("type")


def add_attribute(model, rng):
    """An attribute of a real name (from any node) with a value of a random kind."""
    node = _pick_node(model, rng)
    if node is None:
        return
    name = rng.choice(["axis", "axes", "pads", "perm", "shape", "to", "mode", "value", "k",
                       "kernel_shape", "strides", "group", "alpha", "split", "blocksize",
                       "starts", "ends", "scales", "keepdims", "transA", "epsilon", "start",
                       "end", "num_outputs", "equation", "value_ints", "value_float"])
    value = rng.choice([rng.choice(ODD_INTS), [rng.choice(ODD_INTS) for _ in range(3)],
                        rng.choice(ODD_FLOATS), rng.choice(ODD_STRINGS).decode("latin-1"),
                        [1.5, -2.0]])
    node.attribute.append(helper.make_attribute(name, value))


def _garble_tensor(tensor, rng):
    kind = rng.randrange(7)
    if kind == 0:
        tensor.data_type = rng.choice(ODD_ELEM_TYPES)
    elif kind == 1 and tensor.dims:
        tensor.dims[rng.randrange(len(tensor.dims))] = rng.choice(ODD_INTS)
    elif kind == 2:
        tensor.dims.append(rng.choice(ODD_INTS))
    elif kind == 3 and tensor.raw_data:
        tensor.raw_data = tensor.raw_data[:rng.randrange(len(tensor.raw_data))]
    elif kind == 4:
        del tensor.dims[:]
        tensor.dims.extend([rng.choice([10**6, 10**12, 2**31, 2**40])] * rng.randint(1, 3))
    elif kind == 5:
        tensor.raw_data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 17)))
    else:
        tensor.ClearField("raw_data")
        tensor.float_data.extend([1.0] * rng.randint(0, 3))


def odd_values(model, rng):
    """Keep an initializer's (or Constant's) type and dims, change its values: shapes, axes,
    pads, k and scales read at load time get negative, huge, NaN or random entries."""
    tensors = list(model.graph.initializer) + [a.t for n in model.graph.node
                                               for a in n.attribute if a.type == a.TENSOR]
    if not tensors:
        return
    tensor = rng.choice(tensors)
    try:
        array = numpy_helper.to_array(tensor).copy()
    except Exception:  # noqa: BLE001 - already garbled: leave it
        return
    if array.size == 0 or array.dtype.kind not in "biuf":
        return
    flat = array.reshape(-1)
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(flat.size)
        if flat.dtype.kind == "f":
            flat[at] = rng.choice(ODD_FLOATS + [0.5, 3.0, -2.0])
        else:
            info = np.iinfo(flat.dtype) if flat.dtype.kind in "iu" else None
            value = rng.choice(ODD_INTS)
            flat[at] = min(max(value, info.min), info.max) if info else bool(value)
    tensor.CopyFrom(numpy_helper.from_array(flat.reshape(array.shape), tensor.name))


def garble_initializer(model, rng):
    tensors = list(model.graph.initializer)
    if tensors:
        _garble_tensor(rng.choice(tensors), rng)


def garble_value_info(model, rng):
    infos = list(model.graph.input) + list(model.graph.output)
    if not infos:
        return
    tt = rng.choice(infos).type.tensor_type
    kind = rng.randrange(3)
    if kind == 0:
        tt.elem_type = rng.choice(ODD_ELEM_TYPES)
    elif kind == 1 and tt.shape.dim:
        tt.shape.dim[rng.randrange(len(tt.shape.dim))].dim_value = rng.choice(ODD_INTS)
    else:
        tt.shape.dim.add().dim_value = rng.choice(ODD_INTS)


def rename_op(model, rng):
    node = _pick_node(model, rng)
    if node is not None:
        node.op_type = rng.choice(OP_TYPES)


def rename_domain(model, rng):
    node = _pick_node(model, rng)
    if node is not None:
        node.domain = rng.choice(DOMAINS)


def odd_opset(model, rng):
    if model.opset_import and rng.random() < 0.8:
        entry = rng.choice(model.opset_import)
    else:
        entry = model.opset_import.add()
        entry.domain = rng.choice(DOMAINS)
    entry.version = rng.choice([0, -1, 1, 5, 6, 9, 11, 13, 18, 21, 22, 99, 2**40])


def drop_graph_input(model, rng):
    inputs = model.graph.input
    if inputs:
        del inputs[rng.randrange(len(inputs))]


def duplicate_value(model, rng):
    """Declare a name twice: an input twice, or an initializer also as a node output."""
    g = model.graph
    if g.initializer and rng.random() < 0.5:
        g.initializer.add().CopyFrom(rng.choice(g.initializer))
    elif g.input:
        g.input.add().CopyFrom(rng.choice(g.input))


def drop_graph_output(model, rng):
    outputs = model.graph.output
    if outputs:
        if rng.random() < 0.5:
            del outputs[rng.randrange(len(outputs))]
        else:
            rng.choice(outputs).name = rng.choice(_names(model) + ["ghost"])


MUTATIONS = [drop_input, drop_input, blank_input, add_input, drop_output, add_output, drop_node,
             shuffle_nodes, delete_attribute, delete_attribute, retype_attribute,
             garble_attribute, garble_attribute, add_attribute, garble_initializer,
             garble_initializer, odd_values, odd_values, garble_value_info, rename_op,
             rename_domain, odd_opset, drop_graph_input, duplicate_value, drop_graph_output]
