"""Running onnx's backend conformance suite against flowgrad (shared by tests and the report).

Node tests come from ``onnx.backend.test.case.node.collect_testcases()``; model tests from the
data folders shipped with the onnx wheel (``pytorch-converted``, ``pytorch-operator``,
``simple``, ``light``).  Each case ends as ``pass``, ``fail`` (wrong result or error) or
``excluded`` — only cases whose inputs or outputs use dtypes numpy lacks (listed in
:data:`NUMPY_LACKS`), which flowgrad cannot represent.  Outputs are compared the way onnx's
runner compares them (shape, dtype, ``assert_allclose`` with the case's tolerances).
"""
from __future__ import annotations

import functools
import glob
import os
import warnings
from dataclasses import dataclass
from typing import Iterable

import numpy as np
import onnx
from onnx import numpy_helper

from .backend import FlowgradBackend

def _claimed_ops() -> tuple[str, ...]:
    """The standard-domain ops the built-in translations import, except those a translation
    declares ``partial`` (one that covers only part of its op): every node test
    of these must pass."""
    from .ops import all_translations
    records = [r for t in all_translations() for r in t.importers if r.domain == ""]
    partial = {r.op_type for r in records if r.partial}
    return tuple(sorted({r.op_type for r in records} - partial))


#: the ops flowgrad claims to import, for per-op pass rates (derived from the translations)
CLAIMED_OPS = _claimed_ops()

#: ONNX element types numpy has no dtype for: cases using them are excluded, not failed
NUMPY_LACKS = {
    onnx.TensorProto.BFLOAT16: "bfloat16", onnx.TensorProto.FLOAT8E4M3FN: "float8e4m3fn",
    onnx.TensorProto.FLOAT8E4M3FNUZ: "float8e4m3fnuz", onnx.TensorProto.FLOAT8E5M2: "float8e5m2",
    onnx.TensorProto.FLOAT8E5M2FNUZ: "float8e5m2fnuz", onnx.TensorProto.UINT4: "uint4",
    onnx.TensorProto.INT4: "int4", onnx.TensorProto.STRING: "string",
    onnx.TensorProto.COMPLEX64: "complex64", onnx.TensorProto.COMPLEX128: "complex128",
}
for _name in ("FLOAT4E2M1", "FLOAT8E8M0", "INT2", "UINT2"):
    if hasattr(onnx.TensorProto, _name):
        NUMPY_LACKS[getattr(onnx.TensorProto, _name)] = _name.lower()

DATA_DIR = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")


@dataclass
class Result:
    name: str
    group: str            # the op type for node tests, the kind for model tests
    status: str           # "pass", "fail" or "excluded"
    message: str = ""


@functools.lru_cache(maxsize=1)
def node_cases() -> tuple:
    """Every node test case of the installed onnx (generated once per process)."""
    from onnx.backend.test.case.node import collect_testcases
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tuple(collect_testcases())


def case_op(case) -> str:
    """The op a node test is about: its single node's type, or the name for expanded tests."""
    if case.name.endswith("_expanded") or "_expanded_" in case.name:
        return "(expanded functions)"
    nodes = case.model.graph.node
    return nodes[-1].op_type if len(nodes) == 1 else nodes[-1].op_type


def excluded_dtype(model: onnx.ModelProto) -> str | None:
    """The name of a numpy-less element type the model's interface uses, or None."""
    g = model.graph
    for vi in list(g.input) + list(g.output):
        t = vi.type
        elem = t.tensor_type.elem_type if t.HasField("tensor_type") else None
        if elem in NUMPY_LACKS:
            return NUMPY_LACKS[elem]
    for node in g.node:
        for attr in node.attribute:
            if attr.name in ("to", "output_dtype", "dtype") and attr.i in NUMPY_LACKS:
                return NUMPY_LACKS[attr.i]
    return None


def compare(outputs, expected, rtol: float, atol: float) -> None:
    """onnx's runner comparison: same count, shape, dtype, then assert_allclose."""
    assert len(outputs) == len(expected), f"{len(outputs)} outputs, expected {len(expected)}"
    for i, (out, ref) in enumerate(zip(outputs, expected)):
        if isinstance(ref, list) or ref is None:    # a sequence, or an empty optional
            assert type(out) is type(ref), f"output {i} is {type(out).__name__}, expected " \
                                           f"{type(ref).__name__}"
            if ref is not None:
                compare(out, ref, rtol, atol)       # element by element, as onnx's runner
            continue
        ref = np.asarray(ref)
        out = np.asarray(out)
        assert out.shape == ref.shape, f"output {i} has shape {out.shape}, expected {ref.shape}"
        assert out.dtype == ref.dtype, f"output {i} has dtype {out.dtype}, expected {ref.dtype}"
        np.testing.assert_allclose(out, ref, rtol=rtol, atol=atol, err_msg=f"output {i}")


#: ops whose outputs are random draws.  Their node tests hold numpy's draws from its global
#: generator at collection time, which no implementation reproduces (onnx's test says so: "may
#: not produce the same values in different implementations even if a seed is specified"), so
#: a case of these passes when each output has the expected shape and dtype and holds only
#: values the distribution can take (this predicate).
RANDOM_OUTPUTS = {"Bernoulli": lambda out: bool(np.isin(out, (0, 1)).all())}


def compare_draws(op: str, outputs, expected) -> None:
    """:func:`compare` for an op of :data:`RANDOM_OUTPUTS`: shapes, dtypes and support."""
    assert len(outputs) == len(expected), f"{len(outputs)} outputs, expected {len(expected)}"
    for i, (out, ref) in enumerate(zip(outputs, expected)):
        out, ref = np.asarray(out), np.asarray(ref)
        assert out.shape == ref.shape, f"output {i} has shape {out.shape}, expected {ref.shape}"
        assert out.dtype == ref.dtype, f"output {i} has dtype {out.dtype}, expected {ref.dtype}"
        assert RANDOM_OUTPUTS[op](out), f"output {i} holds values {op} cannot draw: {out}"


def _normalize(item):
    return numpy_helper.to_array(item) if isinstance(item, onnx.TensorProto) else item


def run_node_case(case) -> Result:
    group = case_op(case)
    lacking = excluded_dtype(case.model)
    if lacking:
        return Result(case.name, group, "excluded", f"uses {lacking}")
    try:
        rep = FlowgradBackend.prepare(case.model)
        for inputs, outputs in case.data_sets:
            got = rep.run([_normalize(x) for x in inputs])
            if group in RANDOM_OUTPUTS:
                compare_draws(group, got, [_normalize(x) for x in outputs])
            else:
                compare(got, [_normalize(x) for x in outputs], case.rtol, case.atol)
    except Exception as e:  # every failure counts, whatever raised it
        return Result(case.name, group, "fail", f"{type(e).__name__}: {e}"[:400])
    return Result(case.name, group, "pass")


def node_results(ops: Iterable[str] | None = None) -> list[Result]:
    wanted = None if ops is None else set(ops)
    out = []
    for case in node_cases():
        if wanted is not None and case_op(case) not in wanted:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out.append(run_node_case(case))
    return out


def model_dirs(kind: str) -> list[str]:
    return sorted(d for d in glob.glob(os.path.join(DATA_DIR, kind, "*")) if os.path.isdir(d))


def _read_pb(path: str) -> np.ndarray:
    tensor = onnx.TensorProto()
    with open(path, "rb") as f:
        tensor.ParseFromString(f.read())
    return numpy_helper.to_array(tensor)


def run_model_dir(case_dir: str, kind: str, rtol: float = 1e-3, atol: float = 1e-7) -> Result:
    name = os.path.basename(case_dir)
    try:
        model = onnx.load(os.path.join(case_dir, "model.onnx"))
        lacking = excluded_dtype(model)
        if lacking:
            return Result(name, kind, "excluded", f"uses {lacking}")
        rep = FlowgradBackend.prepare(model)
        sets = sorted(glob.glob(os.path.join(case_dir, "test_data_set_*")))
        for data in sets:
            ins = [_read_pb(p) for p in sorted(glob.glob(os.path.join(data, "input_*.pb")),
                                               key=_index)]
            refs = [_read_pb(p) for p in sorted(glob.glob(os.path.join(data, "output_*.pb")),
                                                key=_index)]
            compare(rep.run(ins), refs, rtol, atol)
    except Exception as e:
        return Result(name, kind, "fail", f"{type(e).__name__}: {e}"[:400])
    return Result(name, kind, "pass")


def _index(path: str) -> int:
    return int(os.path.basename(path).split("_")[1].split(".")[0])


def light_models() -> list[str]:
    return sorted(glob.glob(os.path.join(DATA_DIR, "light", "light_*.onnx")))


def light_inputs(model: onnx.ModelProto) -> list[np.ndarray]:
    """The inputs onnx's runner feeds light models: arange(n)/n in each input's shape."""
    inits = {i.name for i in model.graph.initializer}
    feeds = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        shape = tuple(d.dim_value if d.HasField("dim_value") else 1
                      for d in vi.type.tensor_type.shape.dim)
        n = int(np.prod(shape))
        feeds.append((np.arange(n).reshape(shape) / n).astype(np.float32))
    return feeds


def run_light(path: str, rtol: float = 1e-3, atol: float = 1e-7) -> Result:
    name = os.path.basename(path)[len("light_"):-len(".onnx")]
    try:
        model = onnx.load(path)
        rep = FlowgradBackend.prepare(model)
        expected = [_read_pb(os.path.splitext(path)[0] + f"_output_{i}.pb")
                    for i in range(len(model.graph.output))]
        compare(rep.run(light_inputs(model)), expected, rtol, atol)
    except Exception as e:
        return Result(name, "light", "fail", f"{type(e).__name__}: {e}"[:400])
    return Result(name, "light", "pass")


def by_group(results: list[Result]) -> dict[str, list[Result]]:
    """``{group: [results]}`` (a group is an op, or a model directory)."""
    grouped: dict[str, list[Result]] = {}
    for r in results:
        grouped.setdefault(r.group, []).append(r)
    return grouped


def summarize(results: list[Result]) -> dict[str, tuple[int, int, int]]:
    """``{group: (passed, counted, excluded)}``."""
    out: dict[str, list[int]] = {}
    for r in results:
        entry = out.setdefault(r.group, [0, 0, 0])
        if r.status == "excluded":
            entry[2] += 1
        else:
            entry[1] += 1
            entry[0] += r.status == "pass"
    return {k: tuple(v) for k, v in out.items()}


def rate(passed: int, counted: int) -> float:
    return 100.0 * passed / counted if counted else 100.0


__all__ = ["CLAIMED_OPS", "NUMPY_LACKS", "Result", "node_cases", "node_results", "run_node_case",
           "model_dirs", "run_model_dir", "light_models", "run_light", "summarize", "rate",
           "compare"]


def gradient_check_case(case, max_elements: int = 8) -> Result:
    """Finite-difference check of backward on a node test's model, w.r.t. every float input
    and initializer (float64), at the test's own inputs.  Cases with no float input, or whose
    op is forward-only, are ``excluded``."""
    from ..errors import GraphError
    from ..gradcheck import check_graph_gradients
    group = case_op(case)
    if excluded_dtype(case.model):
        return Result(case.name, group, "excluded", "dtype numpy lacks")
    try:
        rep = FlowgradBackend.prepare(case.model)
        inputs, _ = case.data_sets[0]
        named = dict(zip(rep.onnx_inputs, [_normalize(x) for x in inputs]))
        graph, _, by_onnx, _ = rep._plan_for({k: v for k, v in named.items() if k in rep.bound})
        feeds = {by_onnx[k]: v for k, v in named.items() if k not in rep.bound}
        graph = _freeze_no_grad_inputs(graph, feeds)
        feeds = {k: v for k, v in feeds.items() if k in graph.inputs}
        floats = [n for n in graph.inputs if graph.spec_of(n).dtype.kind == "f"]
        if not floats and not graph.params:
            return Result(case.name, group, "excluded", "no float input")
        outs = [np.asarray(v) for v in rep.run([_normalize(x) for x in inputs])]
        if not any(v.dtype.kind == "f" for v in outs):
            return Result(case.name, group, "excluded", "no float output")
        if not all(np.isfinite(v).all() for v in outs if v.dtype.kind == "f"):
            return Result(case.name, group, "excluded", "non-finite outputs")
        checks = check_graph_gradients(graph, feeds=feeds, max_elements=max_elements,
                                       rtol=1e-3, atol=1e-5)
    except GraphError as e:
        if "forward-only" in str(e):
            return Result(case.name, group, "excluded", "forward-only op")
        return Result(case.name, group, "fail", f"GraphError: {e}"[:400])
    except Exception as e:
        return Result(case.name, group, "fail", f"{type(e).__name__}: {e}"[:400])
    bad = [c for c in checks if not c.ok]
    if bad:
        return Result(case.name, group, "fail", "; ".join(
            f"{c.name}: abs error {c.max_abs_error:.2g}" for c in bad))
    return Result(case.name, group, "pass")


def _freeze_no_grad_inputs(graph, feeds):
    """Turn float inputs that only reach ports taking no gradient (indices, depth, running
    statistics, forward-only ops such as argmax) into constants holding their fed values:
    finite differences w.r.t. them are meaningless (and may change output shapes)."""
    out = graph.copy()

    def readers(node, port=0):
        for dst, dst_port in out.consumers(node, port):
            if out.is_branch(dst):
                for p in range(out.num_outputs(dst)):
                    yield from readers(dst, p)
            else:
                op = out.op_of(dst)
                yield out.port_names(dst)[dst_port] in op.no_grad_inputs or not op.differentiable
    for name in graph.inputs:
        if graph.spec_of(name).dtype.kind == "f" and all(readers(name)):
            consumers = out.consumers(name, 0)
            out.dag.remove_node(name)
            out.add_const(name, np.asarray(feeds[name]))
            for dst, port in consumers:
                out.connect(name, 0, dst, port)
    return out


def gradient_results(ops: Iterable[str] | None = None, only_passing: bool = True) -> list[Result]:
    """Gradient checks on the node tests of ``ops`` (default: claimed ops) whose forward
    passes (a wrong forward is already counted as a failure by :func:`node_results`)."""
    wanted = set(CLAIMED_OPS if ops is None else ops)
    out = []
    for case in node_cases():
        if case_op(case) not in wanted:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if only_passing and run_node_case(case).status != "pass":
                continue
            out.append(gradient_check_case(case))
    return out
