"""Structural checks of a ModelProto, run before any node is translated.

Everything that can be judged from the model's declarations alone is checked here, for every
node and tensor at once, so a broken model gets one report instead of a failure at its first
bad node:

* every initializer: element type known and numpy-representable, dims non-negative, data
  matching dims x itemsize (raw bytes or typed values), and all of them together under
  :data:`~flowgrad.onnx.tensors.MAX_BYTES` — judged from the declarations, before allocating;
* every graph input: element type and dims;
* every standard-domain node, against its ONNX schema at the model's opset: input and output
  counts, required inputs present, required attributes present, each attribute of the type
  the schema declares, no attribute given twice.

Ops outside the standard domain (plugins, ``com.microsoft``, flowgrad's functions) have no
schema here; their handlers read inputs and attributes through the checked accessors of
:mod:`flowgrad.onnx.access`.
"""
from __future__ import annotations

import onnx
from google.protobuf.message import Message
from onnx import AttributeProto

from ..errors import Diagnostic
from . import tensors
from .tensors import check_tensor, check_value_info, declared_bytes, size_text
from .translations import canonical_domain


#: schemas are looked up at most at the newest opset the installed onnx knows
_NEWEST = onnx.defs.onnx_opset_version()


def node_label(node: onnx.NodeProto) -> str:
    """How messages name an ONNX node: its name, else its first output, else its op type."""
    return node.name or next((o for o in node.output if o), "") or node.op_type or "?"


def node_problem(node: onnx.NodeProto, message: str, version: int | None = None) -> Diagnostic:
    """A diagnostic located at ONNX ``node``: its name, op type (and opset)."""
    label = node_label(node)
    at = f"{node.op_type}, opset {version}" if version is not None else node.op_type
    return Diagnostic(f"ONNX node '{label}' ({at}): {message}", node=label)


def text_problems(message, path: str = "model") -> list[Diagnostic]:
    """Every string field of ``message`` (recursively) that is not valid UTF-8.

    protobuf hands such a field over as ``bytes``; names, op types, domains and external-data
    locations are used as text everywhere after this check, so it runs first.
    """
    problems = []
    for field, value in message.ListFields():
        if field.type not in (field.TYPE_MESSAGE, field.TYPE_STRING):
            continue
        repeated = not isinstance(value, (Message, str, bytes))
        for i, item in enumerate(value if repeated else [value]):
            where = f"{path}.{field.name}" + (f"[{i}]" if repeated else "")
            if field.type == field.TYPE_MESSAGE:
                problems += text_problems(item, where)
            elif not isinstance(item, str):
                problems.append(Diagnostic(f"{where} is not valid UTF-8 text ({item[:40]!r}); "
                                           "the file is damaged or not an ONNX model"))
    return problems


def check_model(model: onnx.ModelProto, opset: dict[str, int]) -> list[Diagnostic]:
    """Every structural problem of ``model`` (see the module docstring)."""
    g = model.graph
    problems = [Diagnostic(f"the model imports opset {entry.version} of domain "
                           f"'{entry.domain or 'ai.onnx'}'; opset versions start at 1")
                for entry in model.opset_import if entry.version < 1]
    if not g.output:
        problems.append(Diagnostic("the model declares no graph outputs, so there is nothing to "
                                   "compute (an empty or damaged file?); list its results in "
                                   "graph.output"))
    total = 0
    for init in g.initializer:
        problems += [Diagnostic(p, node=init.name or "initializer")
                     for p in check_tensor(init, f"initializer '{init.name}'")]
        total += declared_bytes(init)
    if total > tensors.MAX_BYTES:
        problems.append(Diagnostic(
            f"the model's initializers take {size_text(total)}, over flowgrad's bound of "
            f"{size_text(tensors.MAX_BYTES)}; flowgrad refuses to load it"))
    initializers = {t.name for t in g.initializer}
    for vi in g.input:
        if vi.name not in initializers:
            problems += [Diagnostic(p, node=vi.name or "input")
                         for p in check_value_info(unknown_dims(vi),
                                                   f"graph input '{vi.name}'")]
    for node in g.node:
        domain = canonical_domain(node.domain)
        version = opset.get(domain, 1)
        problems += [node_problem(node, p, version) for p in check_node(node, domain, version)]
    return problems


def unknown_dims(info: onnx.ValueInfoProto) -> onnx.ValueInfoProto:
    """``info`` with each ``dim_value: -1`` read as an unknown dim: how paddle2onnx writes a
    dynamic axis (the PP-OCR models), which onnxruntime accepts.  Other negative dims stay
    errors; the importer reads the same dims as free (:func:`flowgrad.onnx.importer.tensor_spec`)."""
    dims = info.type.tensor_type.shape.dim if info.type.HasField("tensor_type") else []
    if not any(d.HasField("dim_value") and d.dim_value == -1 for d in dims):
        return info
    copy = onnx.ValueInfoProto()
    copy.CopyFrom(info)
    for d in copy.type.tensor_type.shape.dim:
        if d.HasField("dim_value") and d.dim_value == -1:
            d.ClearField("dim_value")
    return copy


def check_node(node: onnx.NodeProto, domain: str, version: int) -> list[str]:
    """The problems of ``node`` against its ONNX schema at opset ``version`` (none without a
    schema: unknown ops are reported as unsupported, plugin ops are checked by handlers)."""
    names = [a.name for a in node.attribute]
    problems = [f"attribute '{n}' is given twice; keep one"
                for n in sorted({n for n in names if names.count(n) > 1})]
    if domain != "" or version < 1:
        return problems
    try:
        schema = onnx.defs.get_schema(node.op_type, max_inclusive_version=min(version, _NEWEST),
                                      domain="")
    except onnx.defs.SchemaError:
        return problems
    return problems + _arity(node, schema) + _attributes(node, schema)


def _arity(node: onnx.NodeProto, schema) -> list[str]:
    out = []
    n_in, n_out = len(node.input), len(node.output)
    if not schema.min_input <= n_in <= schema.max_input:
        out.append(f"has {n_in} input(s); {node.op_type}-{schema.since_version} takes "
                   f"{_range(schema.min_input, schema.max_input)}")
    if not schema.min_output <= n_out <= schema.max_output:
        out.append(f"has {n_out} output(s); {node.op_type}-{schema.since_version} gives "
                   f"{_range(schema.min_output, schema.max_output)}")
    single = onnx.defs.OpSchema.FormalParameterOption.Single
    for i, formal in enumerate(schema.inputs):
        if formal.option == single and i < n_in and not node.input[i]:
            out.append(f"needs input {i} ({formal.name}), which is empty; connect a value "
                       "to it")
    return out


def _range(low: int, high: int) -> str:
    if low == high:
        return str(low)
    return f"{low} or more" if high > 1 << 20 else f"{low} to {high}"


def _attributes(node: onnx.NodeProto, schema) -> list[str]:
    out = []
    given = {a.name: a for a in node.attribute}
    for name, declared in schema.attributes.items():
        attr = given.get(name)
        if attr is None:
            if declared.required:
                out.append(f"needs attribute '{name}'; add it to the node")
            continue
        want = int(declared.type)
        if attr.type != want:
            want_name = AttributeProto.AttributeType.Name(want).lower()
            out.append(f"attribute '{name}' must be of type {want_name}, not "
                       f"{_type_name(attr.type)}; fix its type")
    return out


def _type_name(attr_type: int) -> str:
    try:
        return AttributeProto.AttributeType.Name(attr_type).lower()
    except ValueError:
        return f"unknown type {attr_type}"
