"""Write a Graph (e.g. an imported ONNX model) as an editable YAML graph plus an .npz of values.

The YAML follows :mod:`flowgrad.loaders.yaml_loader`'s schema: every param and constant is
declared with its shape and takes its value from the ``weights`` file, so the text stays small
and readable however large the model is.  ``branch`` nodes are left out (the loader inserts them
again) and each node keeps a ``doc`` naming the ONNX node it came from.

Names: a YAML file cannot declare a name with ``.`` (it selects an output port), ``#`` (it marks
flowgrad's own nodes) or surrounding spaces, and ONNX models use such names all the time
(``0.weight``, ``input.1``, ``save_infer_model/scale_0.tmp_1``).  Those nodes are declared under
:func:`yaml_name`'s form (``0_weight``) and the file's ``aliases:`` section maps each model name
to it, so the YAML graph loaded back still answers to the model's names and exports under them.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import yaml

from ..errors import FlowgradError
from ..graph import Graph
from ..loaders.yaml_source import plain
from .export import own_names

_YAML_DTYPES = {"float16": "float", "float32": "float", "float64": "float", "int64": "int64",
                "int32": "int32", "bool": "bool"}


def _flow(value: Any) -> str:
    """``value`` as one line of YAML flow style (dumped inside a list to avoid doc markers)."""
    text = yaml.safe_dump([value], default_flow_style=True, width=1 << 30, sort_keys=False)
    return text.strip()[1:-1]



def yaml_name(name: str) -> str:
    """``name`` as a YAML graph can declare it: ``.`` and ``#`` become ``_`` and surrounding
    spaces go (``0.weight`` -> ``0_weight``); ``/`` and ``:`` stay (``onnx::Conv_12``)."""
    return name.strip().replace(".", "_").replace("#", "_") or "v"


def _yaml_names(graph: Graph, nodes: list[str]) -> dict[str, str]:
    """``{node: the name it is declared under}``: its own where YAML allows it, else a unique
    :func:`yaml_name`."""
    taken = {n for n in nodes if yaml_name(n) == n}
    out = {}
    for n in nodes:
        if n in taken:
            out[n] = n
            continue
        base = name = yaml_name(n)
        i = 1
        while name in taken:
            name, i = f"{base}_{i}", i + 1
        taken.add(name)
        out[n] = name
    return out


def graph_to_yaml(graph: Graph, weights_file: str) -> tuple[str, dict[str, np.ndarray]]:
    """Return ``(yaml text, arrays for the weights file)``."""
    kept = [n for n in graph.topological_order() if not graph.is_branch(n)]
    names = _yaml_names(graph, kept)

    def before_branches(src: str, port: int) -> tuple[str, int]:
        while graph.is_branch(src):
            src, port = graph.input_sources(src)[0]
        return src, port

    def source_ref(src: str, port: int) -> str:
        src, port = before_branches(src, port)
        return names[src] if port == 0 else f"{names[src]}.{graph.output_names(src)[port]}"

    arrays: dict[str, np.ndarray] = {}
    lines = ["flowgrad: 1", f"name: {_flow(graph.name)}"]
    meta = graph.meta.get("onnx")
    if meta:
        opsets = ", ".join(f"{d or 'ai.onnx'} {v}" for d, v in meta.get("opset", {}).items())
        producer = meta.get("producer") or "unknown"
        lines.append(f"doc: {_flow(f'converted from ONNX (producer {producer}; opset {opsets})')}")
    lines.append(f"weights: {_flow(weights_file)}")
    order = graph.topological_order()
    inputs = [n for n in order if graph.is_input(n)]
    lines.append("inputs:" if inputs else "inputs: {}")
    for n in inputs:
        spec = graph.spec_of(n)
        if spec.ndim == 0:
            raise FlowgradError(f"input '{n}' is a scalar; a YAML graph's inputs have a "
                                "leading batch axis", node=n)
        dtype = _YAML_DTYPES.get(spec.dtype.name)
        if dtype is None:
            raise FlowgradError(f"input '{n}' has dtype {spec.dtype}, which YAML graphs cannot "
                                f"declare ({', '.join(sorted(set(_YAML_DTYPES.values())))})",
                                node=n)
        entry = {"shape": list(spec.shape[1:])}
        if spec.shape[0] is not None:            # an ONNX model's fixed batch, and why
            entry["batch"] = int(spec.shape[0])
            if graph.extra(n, "fixed_batch"):
                entry["doc"] = graph.extra(n, "fixed_batch")
        if dtype != "float":
            entry["dtype"] = dtype
        lines.append(f"  {_flow(names[n])}: {_flow(entry)}")
    params = [n for n in order if graph.is_param(n)]
    lines.append("params:" if params else "params: {}")
    for n in params:
        value = arrays[names[n]] = np.asarray(graph.value_of(n))
        entry: dict[str, Any] = {"shape": list(value.shape)}
        if not graph.is_trainable(n):
            entry["trainable"] = False
        lines.append(f"  {_flow(names[n])}: {_flow(entry)}")
    consts = [n for n in order if graph.is_const(n)]
    lines.append("constants:" if consts else "constants: {}")
    for n in consts:
        value = arrays[names[n]] = np.asarray(graph.value_of(n))
        lines.append(f"  {_flow(names[n])}: {_flow({'shape': list(value.shape)})}")
    lines.append("nodes:")
    for n in order:
        if graph.is_leaf(n) or graph.is_branch(n):
            continue
        op = graph.op_of(n)
        sources = graph.input_sources(n)
        if op.variadic:
            ins: Any = [source_ref(*s) for s in sources]
        else:
            ins = {port: source_ref(*s) for port, s in zip(op.input_names, sources)
                   if s is not None}
        entry = {"op": op.type, "in": ins}
        entry.update({k: plain(v) for k, v in op.config().items()})
        if graph.extra(n, "onnx_op"):
            entry["doc"] = f"ONNX {graph.extra(n, 'onnx_op')} '{graph.extra(n, 'onnx_name') or ''}'"
        lines.append(f"  {_flow(names[n])}: {_flow(entry)}")
    aliases = _aliases(graph, kept, source_ref, set(names.values()))
    if aliases:
        lines.append("aliases:")
        lines += [f"  {_flow(k)}: {_flow(v)}" for k, v in aliases.items()]
    refs = [ref if ref in aliases else source_ref(*graph.resolve(ref)) for ref in graph.outputs]
    lines.append(f"outputs: {_flow(refs)}")
    return "\n".join(lines) + "\n", arrays


def _aliases(graph: Graph, kept: list[str], source_ref, declared: set[str]) -> dict[str, str]:
    """The file's ``aliases:``: each value's own name (an ONNX model's, see
    :func:`~flowgrad.onnx.export.own_names`) where it differs from how the file refers to the
    value, then the graph's other aliases of op outputs (a name a translation passed through,
    e.g. a Dropout's output at inference).  Own names come first: the exporter names a value
    after its first alias.  Aliases of leaves that are not their own names are left out, or
    an exported input would take another value's name."""
    out: dict[str, str] = {}
    for (node, port), name in own_names(graph, kept).items():
        ref = source_ref(node, port)
        if name != ref and name not in declared:
            out[name] = ref
    for name, ref in graph.aliases.items():
        node, port = graph.resolve(ref)
        if name in out or name in declared or graph.is_leaf(node):
            continue
        out[name] = source_ref(node, port)
    return out


def write_yaml(graph: Graph, path: str, weights_path: str | None = None) -> str:
    """Write ``path`` (YAML) and its weights file (default: same stem, ``.npz``); return the
    weights path."""
    if weights_path is None:
        weights_path = os.path.splitext(path)[0] + ".npz"
    rel = os.path.relpath(os.path.abspath(weights_path), os.path.dirname(os.path.abspath(path)))
    text, arrays = graph_to_yaml(graph, rel)
    np.savez(weights_path, **arrays)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return weights_path
