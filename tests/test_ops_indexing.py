"""ONNX semantics of the indexing, tensor, einsum, comparison and extra-math ops.

Three sources of truth, all from the installed onnx wheel:

* the ONNX node conformance cases of each op (``onnx.backend.test.case.node``), run directly
  through the op's ``forward`` with the node's attributes mapped to flowgrad's, and through
  ``infer`` (which must predict every output's shape and dtype);
* ``onnx.reference.ReferenceEvaluator`` on one-node models for configurations the conformance
  cases do not cover (clamping corners, ties, broadcasting, negative steps);
* direct tests of what ONNX leaves to us: gradients at ties, gradient pass-through of ``cast``,
  and that forward-only ops do not block training through the ports that take no gradient.
"""
from __future__ import annotations

import importlib
import os
import warnings

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import flowgrad
from flowgrad.errors import GraphError, ShapeError
from flowgrad.op import Context, Spec
from flowgrad.plugins import make_registry
from flowgrad.testing import check_infer, gradcheck

REGISTRY = make_registry()

# onnx op type -> (flowgrad op type, the onnx test module that defines its conformance cases)
ONNX_OPS = {
    "Gather": ("gather", "gather"), "GatherElements": ("gather_elements", "gatherelements"),
    "Slice": ("slice", "slice"), "Split": ("split", "split"), "Expand": ("expand", "expand"),
    "Tile": ("tile", "tile"), "Where": ("where", "where"), "TopK": ("topk", "topk"),
    "ArgMax": ("argmax", "argmax"), "ArgMin": ("argmin", "argmin"),
    "Shape": ("shape", "shape"), "Size": ("size", "size"), "Cast": ("cast", "cast"),
    "ConstantOfShape": ("constant_of_shape", "constantofshape"), "Range": ("range", "rangeop"),
    "Einsum": ("einsum", "einsum"), "OneHot": ("one_hot", "onehot"),
    "Equal": ("equal", "equal"), "Less": ("less", "less"),
    "LessOrEqual": ("less_or_equal", "less_or_equal"), "Greater": ("greater", "greater"),
    "GreaterOrEqual": ("greater_or_equal", "greater_or_equal"), "Not": ("not", "not_"),
    "And": ("and", "and_"), "Or": ("or", "or_"), "Xor": ("xor", "xor"),
    "Floor": ("floor", "floor"), "Ceil": ("ceil", "ceil"), "Round": ("round", "round"),
    "Sign": ("sign", "sign"), "Sin": ("sin", "sin"), "Cos": ("cos", "cos"),
    "Mod": ("mod", "mod"), "Min": ("min", "min"), "Max": ("max", "max"),
    "Mean": ("mean", "mean"),
}

# element types numpy has no dtype for: conformance cases using them are excluded (and only
# those: test_excluded_cases_really_need_dtypes_numpy_lacks checks it)
_NO_NUMPY = {onnx.TensorProto.BFLOAT16}
_NO_NUMPY |= {getattr(onnx.TensorProto, n) for n in dir(onnx.TensorProto)
              if n.startswith(("FLOAT8", "FLOAT4", "INT4", "UINT4", "INT2", "UINT2"))}


def _conformance_cases():
    from onnx.backend.test.case import node as node_cases
    for _, module in ONNX_OPS.values():
        importlib.import_module(f"{node_cases.__name__}.{module}")
    out = []
    for case in node_cases._NodeTestCases:
        nodes = case.model.graph.node
        if len(nodes) == 1 and nodes[0].op_type in ONNX_OPS and nodes[0].domain in ("", "ai.onnx"):
            out.append(case)
    return out


def _elem_types(model: onnx.ModelProto) -> set[int]:
    graph = model.graph
    types = {v.type.tensor_type.elem_type for v in list(graph.input) + list(graph.output)}
    types |= {a.i for a in graph.node[0].attribute if a.name == "to"}
    types |= {a.t.data_type for a in graph.node[0].attribute if a.type == onnx.AttributeProto.TENSOR}
    return types


with warnings.catch_warnings():        # onnx's cast cases overflow on purpose while building
    warnings.simplefilter("ignore", RuntimeWarning)
    CASES = _conformance_cases()
SUPPORTED = [c for c in CASES if not _elem_types(c.model) & _NO_NUMPY]
EXCLUDED = [c for c in CASES if _elem_types(c.model) & _NO_NUMPY]


def onnx_to_flowgrad(node: onnx.NodeProto, inputs: list):
    """The flowgrad op and input list for one ONNX node (the importer's job, minimally)."""
    a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
    fg_type = ONNX_OPS[node.op_type][0]
    ins = [None if name == "" else value for name, value in zip(node.input, inputs)]
    attrs = {}
    if node.op_type in ("Gather", "GatherElements"):
        attrs["axis"] = a.get("axis", 0)
    elif node.op_type == "Slice":
        ins = ins + [None] * (5 - len(ins))
    elif node.op_type == "Split":
        attrs = {"axis": a.get("axis", 0), "parts": a.get("num_outputs", len(node.output))}
        if "split" in a:
            attrs["split"] = list(a["split"])
        ins = ins + [None] * (2 - len(ins))
    elif node.op_type == "TopK":
        attrs = {"axis": a.get("axis", -1), "largest": bool(a.get("largest", 1)),
                 "sorted": bool(a.get("sorted", 1))}
    elif node.op_type in ("ArgMax", "ArgMin"):
        attrs = {"axis": a.get("axis", 0), "keepdims": bool(a.get("keepdims", 1)),
                 "select_last_index": bool(a.get("select_last_index", 0))}
    elif node.op_type == "Shape":
        attrs = {k: a[k] for k in ("start", "end") if k in a}
    elif node.op_type == "Cast":
        attrs["to"] = np.dtype(helper.tensor_dtype_to_np_dtype(a["to"])).name
    elif node.op_type == "ConstantOfShape":
        value = numpy_helper.to_array(a["value"]) if "value" in a else np.zeros(1, np.float32)
        attrs = {"value": value.reshape(-1)[0].item(), "dtype": value.dtype.name}
    elif node.op_type == "Einsum":
        attrs["equation"] = a["equation"].decode() if isinstance(a["equation"], bytes) \
            else a["equation"]
    elif node.op_type == "OneHot":
        attrs["axis"] = a.get("axis", -1)
    elif node.op_type == "Mod":
        attrs["fmod"] = bool(a.get("fmod", 0))
    return REGISTRY.get(fg_type)(**attrs), ins


def _arrays(values):
    """Test data as numpy arrays (some cases store TensorProtos)."""
    return [numpy_helper.to_array(v) if isinstance(v, onnx.TensorProto) else np.asarray(v)
            for v in values]


def _run(op, ins):
    return op.forward(Context(grad_enabled=False), *ins)


def _assert_same(got, want, what: str, rtol=1e-3, atol=1e-7):
    got = np.asarray(got)
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype}, expected {want.dtype}"
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    if want.dtype.kind == "f":
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=what)
    else:
        np.testing.assert_array_equal(got, want, err_msg=what)


def test_conformance_cases_found_for_every_op():
    found = {c.model.graph.node[0].op_type for c in CASES}
    assert found == set(ONNX_OPS), f"no conformance cases for {set(ONNX_OPS) - found}"
    assert len(SUPPORTED) >= 150


@pytest.mark.parametrize("case", SUPPORTED, ids=[c.name for c in SUPPORTED])
def test_onnx_conformance_case(case):
    node = case.model.graph.node[0]
    (inputs, expected), = case.data_sets
    inputs, expected = _arrays(inputs), _arrays(expected)
    op, ins = onnx_to_flowgrad(node, list(inputs))
    outs = _run(op, ins)
    assert len(outs) == len(expected)
    for k, (got, want) in enumerate(zip(outs, expected)):
        _assert_same(got, np.asarray(want), f"{case.name} output {k}", case.rtol, case.atol)
    specs = op.infer(*[None if x is None else Spec.of(x) for x in ins])
    for k, (spec, got) in enumerate(zip(specs, outs)):
        assert spec.dtype == np.asarray(got).dtype, f"{case.name}: infer dtype of output {k}"
        assert spec.ndim == np.ndim(got) and all(
            d is None or d == n for d, n in zip(spec.shape, np.shape(got))), (
            f"{case.name}: infer says {spec}, forward gives {np.shape(got)}")


def test_excluded_cases_really_need_dtypes_numpy_lacks():
    names = [c.name for c in EXCLUDED]
    lacking = ("bfloat16", "float8", "float4", "int4", "int2", "e8m0")
    assert all(any(t in n.lower() for t in lacking) for n in names), names
    assert len(EXCLUDED) <= 60, names


# -- onnx.reference on one-node models -------------------------------------------------------

_TYPES = {np.dtype(np.float32): onnx.TensorProto.FLOAT, np.dtype(np.int64): onnx.TensorProto.INT64,
          np.dtype(np.bool_): onnx.TensorProto.BOOL, np.dtype(np.float64): onnx.TensorProto.DOUBLE,
          np.dtype(np.int32): onnx.TensorProto.INT32, np.dtype(np.uint8): onnx.TensorProto.UINT8}


def _reference(op_type: str, inputs: list, n_out: int = 1, opset: int = 21, **attrs):
    names = [f"in{i}" if x is not None else "" for i, x in enumerate(inputs)]
    outs = [f"out{i}" for i in range(n_out)]
    node = helper.make_node(op_type, names, outs, **attrs)
    graph = helper.make_graph(
        [node], "one", [helper.make_tensor_value_info(n, _TYPES[x.dtype], x.shape)
                        for n, x in zip(names, inputs) if x is not None],
        [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in outs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    feeds = {n: x for n, x in zip(names, inputs) if x is not None}
    return node, ReferenceEvaluator(model).run(None, feeds)


def _check_against_reference(op_type, inputs, n_out=1, opset=21, **attrs):
    node, want = _reference(op_type, inputs, n_out, opset, **attrs)
    op, ins = onnx_to_flowgrad(node, inputs)
    got = _run(op, ins)
    for k, (g, w) in enumerate(zip(got, want)):
        _assert_same(g, np.asarray(w), f"{op_type} {attrs} output {k}")


RNG = np.random.default_rng(0)
X = RNG.standard_normal((4, 5, 6)).astype(np.float32)
I64 = np.int64


@pytest.mark.parametrize("starts,ends,axes,steps", [
    ([0, -100], [100, 3], [0, 2], [1, 1]),
    ([-1], [-100], [1], [-1]),                      # full reverse
    ([10], [-10], [2], [-2]),                       # start clamped to dim-1, end to -1
    ([2, 0], [1, 4], [0, 1], [1, 2]),               # empty on axis 0
    ([-3], [9223372036854775807], [-1], [3]),       # INT64_MAX end
    ([4], [-9223372036854775808], [0], [-1]),       # INT64_MIN end, negative step
    ([1, 1, 1], [3, 4, 5], None, None),             # default axes and steps
])
def test_slice_matches_reference(starts, ends, axes, steps):
    ins = [X, np.array(starts, I64), np.array(ends, I64),
           None if axes is None else np.array(axes, I64),
           None if steps is None else np.array(steps, I64)]
    while ins[-1] is None:
        ins.pop()
    _check_against_reference("Slice", ins)


def test_slice_attributes_equal_ports():
    op = REGISTRY.get("slice")(starts=[3, -2], ends=[0, 100], axes=[0, -1], steps=[-1, 1])
    (y,) = _run(op, [X, None, None, None, None])
    np.testing.assert_array_equal(y, X[3:0:-1, :, -2:])
    assert op.infer(Spec((None, 5, 6), np.float32), None, None, None, None)[0].shape == (None, 5, 2)


@pytest.mark.parametrize("k,axis,largest", [(3, -1, 1), (2, 0, 0), (5, 1, 1), (0, 2, 1)])
def test_topk_matches_reference_with_ties(k, axis, largest):
    x = RNG.integers(0, 3, size=(4, 5, 6)).astype(np.float32)     # many ties
    _check_against_reference("TopK", [x, np.array([k], I64)], n_out=2, axis=axis, largest=largest)


@pytest.mark.parametrize("equation,shapes", [
    ("ij,jk->ik", [(2, 3), (3, 4)]), ("bij,bjk", [(2, 2, 3), (2, 3, 4)]),
    ("...ii->...i", [(2, 3, 3)]), ("ii", [(3, 3)]), ("ij->", [(3, 4)]),
    ("...ij,...jk->...ik", [(2, 1, 3, 4), (5, 4, 2)]), ("i,j->ij", [(3,), (4,)]),
])
def test_einsum_matches_reference(equation, shapes):
    xs = [RNG.standard_normal(s).astype(np.float32) for s in shapes]
    _check_against_reference("Einsum", xs, equation=equation)


@pytest.mark.parametrize("op_type,shapes", [
    ("Min", [(3, 1, 4), (4,), (3, 5, 1)]), ("Max", [(4,), (3, 1, 4), (3, 5, 1)]),
    ("Mean", [(3, 5, 4), (4,), (3, 1, 1)]),     # the reference Mean adds into its first input
])
def test_variadic_broadcasting_matches_reference(op_type, shapes):
    xs = [RNG.standard_normal(s).astype(np.float32) for s in shapes]
    _check_against_reference(op_type, xs)


@pytest.mark.parametrize("fmod,dtype", [(0, np.int64), (1, np.int64), (1, np.float32)])
def test_mod_matches_reference(fmod, dtype):
    a = np.array([[-7, 7, -4, 5], [3, -3, 0, 8]]).astype(dtype)
    b = np.array([3, -3, 2, -5]).astype(dtype)
    _check_against_reference("Mod", [a, b], fmod=fmod)


@pytest.mark.parametrize("case", [
    ("Gather", [X, np.array([[0, -1], [2, -4]], I64)], {"axis": 1}),
    ("GatherElements", [X, RNG.integers(-6, 6, size=(4, 5, 2)).astype(I64)], {"axis": 2}),
    ("Where", [RNG.random((5, 1)) < 0.5, X, np.float32(2) * np.ones((6,), np.float32)], {}),
    ("Expand", [X[:, :1], np.array([3, 1, 1, 6], I64)], {}),
    ("Tile", [X, np.array([1, 2, 3], I64)], {}),
    ("ArgMax", [np.round(X), ], {"axis": -1, "keepdims": 0, "select_last_index": 1}),
    ("ArgMin", [np.round(X), ], {"axis": 1}),
    ("Shape", [X], {"start": -2, "end": 10}),
    ("Range", [np.array(10, I64), np.array(-3, I64), np.array(-3, I64)], {}),
    ("OneHot", [np.array([[0, -1, 5], [2, -6, 1]], I64), np.array(5, I64),
                np.array([0.5, 3.0], np.float32)], {"axis": 1}),
    ("Split", [X, np.array([1, 0, 3], I64)], {"axis": 0}),
    ("Cast", [np.array([-1.7, -0.2, 0.0, 0.6, 2.9], np.float32)], {"to": onnx.TensorProto.INT32}),
    ("Cast", [np.array([-1.7, 0.0, 0.6], np.float32)], {"to": onnx.TensorProto.BOOL}),
    ("Round", [np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.4999], np.float32)], {}),
], ids=lambda c: c[0] if isinstance(c, tuple) else None)
def test_matches_reference(case):
    op_type, inputs, attrs = case
    n_out = 3 if op_type == "Split" else 1
    _check_against_reference(op_type, inputs, n_out=n_out, **attrs)


# -- what ONNX leaves to us ----------------------------------------------------------------

def test_min_max_ties_send_gradient_to_the_first_input():
    a = np.array([1.0, 2.0, 3.0])
    b = np.array([1.0, 5.0, 3.0])
    for name in ("max", "min"):
        op = REGISTRY.get(name)()
        ctx = Context()
        op.forward(ctx, a, b)
        ctx.needs_input_grad = (True, True)
        ga, gb = op.backward(ctx, np.array([10.0, 20.0, 30.0]))
        winner_b = name == "max"
        np.testing.assert_array_equal(ga, [10.0, 0.0 if winner_b else 20.0, 30.0])
        np.testing.assert_array_equal(gb, [0.0, 20.0 if winner_b else 0.0, 0.0])


def test_gather_gradient_accumulates_repeated_indices():
    op = REGISTRY.get("gather")(axis=1)
    x = np.arange(6.0).reshape(2, 3)
    ctx = Context()
    (y,) = op.forward(ctx, x, np.array([[2, 2], [-1, 0]], I64))
    ctx.needs_input_grad = (True, False)
    gx, gi = op.backward(ctx, np.ones_like(y))
    np.testing.assert_array_equal(gx, [[1.0, 0.0, 3.0], [1.0, 0.0, 3.0]])
    assert gi is None


def test_cast_passes_the_gradient_between_float_types():
    gradcheck(REGISTRY.get("cast")(to="float64"), [RNG.standard_normal((3, 4))])
    op = REGISTRY.get("cast")(to="float64")
    ctx = Context()
    op.forward(ctx, X)
    ctx.needs_input_grad = (True,)
    (g,) = op.backward(ctx, np.ones(X.shape))
    assert g.dtype == np.float32


def test_integer_shape_ops_stay_int64():
    shape = REGISTRY.get("shape")()
    (s,) = _run(shape, [X])
    assert s.dtype == np.int64
    (r,) = _run(REGISTRY.get("range")(), [np.array(0, I64), s[2], np.array(2, I64)])
    (c,) = _run(REGISTRY.get("constant_of_shape")(value=7, dtype="int64"), [s])
    (e,) = _run(REGISTRY.get("expand")(), [np.array([1], I64), s])
    assert r.dtype == c.dtype == e.dtype == np.int64 and c.shape == e.shape == X.shape


def test_shape_ports_infer_rank_and_refuse_unknown_length():
    expand = REGISTRY.get("expand")()
    spec = expand.infer(Spec((None, 1, 6), np.float32), Spec((4,), np.int64))[0]
    assert spec.shape == (None, None, None, 6)
    with pytest.raises(ShapeError, match="length of 'shape' must be known"):
        expand.infer(Spec((None, 1, 6), np.float32), Spec((None,), np.int64))
    tile = REGISTRY.get("tile")()
    check_infer(tile, [X, np.array([2, 1, 1], I64)], batch_axis=False)
    with pytest.raises(ShapeError, match="one entry per axis"):
        tile.infer(Spec((4, 5), np.float32), Spec((3,), np.int64))


def test_split_needs_a_known_number_of_outputs():
    with pytest.raises(ValueError, match="parts"):
        REGISTRY.get("split")(axis=0)
    op = REGISTRY.get("split")(parts=3)
    assert op.num_outputs(1) == 3 and op.output_names(1) == ("0", "1", "2")
    assert [s.shape for s in op.infer(Spec((7, 2), np.float32), None)] == [(3, 2), (3, 2), (1, 2)]


_GRAPH = """
flowgrad: 1
name: relu_by_comparison
inputs: {x: {shape: [4]}}
params:
  W: {shape: [4, 4], init: {kind: glorot_uniform, seed: 1}}
nodes:
  h: {op: matmul, in: [x, W]}
  zero: {op: constant_of_shape, shape: [1], value: 0.0}
  positive: {op: greater, in: [h, zero]}
  y: {op: where, in: [positive, h, zero]}
  n: {op: shape, in: y}
  loss: {op: reduce_sum, in: y}
outputs: [loss, n]
"""


def test_forward_only_ops_on_no_grad_ports_do_not_block_training(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text(_GRAPH)
    plan = flowgrad.compile(flowgrad.load(str(path)))
    x = RNG.standard_normal((3, 4)).astype(np.float32)
    out, grads = plan.forward_backward({"x": x}, {"loss": 1.0})
    h = x @ plan.params["W"]
    np.testing.assert_allclose(out["loss"], np.maximum(h, 0).sum(), rtol=1e-5)
    np.testing.assert_allclose(grads["W"], x.T @ (h > 0).astype(np.float32), rtol=1e-5)


def test_gradient_through_a_forward_only_op_is_refused(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text(_GRAPH.replace("loss: {op: reduce_sum, in: y}",
                                   "c: {op: cast, in: positive, to: float32}\n"
                                   "  loss: {op: reduce_sum, in: c}"))
    plan = flowgrad.compile(flowgrad.load(str(path)))
    with pytest.raises(GraphError, match="forward-only"):
        plan.forward_backward({"x": np.ones((2, 4), np.float32)}, {"loss": 1.0})


# ops whose conformance inputs are away from kinks: their float cases double as gradient checks
_SMOOTH = {"Gather", "GatherElements", "Slice", "Split", "Expand", "Tile", "Where", "Einsum",
           "Mean", "Sin", "Cos", "OneHot"}   # not Range: its cases sit where the length jumps
FLOAT_CASES = [c for c in SUPPORTED if c.model.graph.node[0].op_type in _SMOOTH
               and any(np.asarray(x).dtype.kind == "f" for x in _arrays(c.data_sets[0][0]))]


@pytest.mark.parametrize("case", FLOAT_CASES, ids=[c.name for c in FLOAT_CASES])
def test_onnx_conformance_case_gradients(case):
    op, ins = onnx_to_flowgrad(case.model.graph.node[0], _arrays(case.data_sets[0][0]))
    gradcheck(op, ins)


_PIECES = """
flowgrad: 1
name: pieces
inputs: {x: {shape: [6]}}
params:
  W: {shape: [6, 6], init: {kind: glorot_uniform, seed: 2}}
nodes:
  h: {op: matmul, in: [x, W]}
  parts: {op: split, in: h, axis: 1, split: [2, 4]}
  tail: {op: slice, in: parts.1, starts: [-1], ends: [-5], axes: [1], steps: [-2]}
  best: {op: topk, in: parts.1, k: 2}
  picked: {op: gather_elements, in: [parts.1, best.indices], axis: 1}
  prod: {op: einsum, in: [tail, best.values], equation: "ni,nj->nij"}
  m: {op: max, in: [parts.0, best.values, picked]}
  wide: {op: tile, in: m, repeats: [1, 3]}
  total: {op: add, in: [prod, {op: expand, in: wide, shape: [2, 1, 6]}]}
outputs: [total, best.indices]
"""


def test_yaml_graph_of_these_ops_has_correct_gradients(tmp_path):
    from flowgrad.gradcheck import check_graph_gradients
    path = tmp_path / "pieces.yaml"
    path.write_text(_PIECES.replace(
        "  total: {op: add, in: [prod, {op: expand, in: wide, shape: [2, 1, 6]}]}",
        "  wide3: {op: expand, in: wide, shape: [1, 2, 6]}\n"
        "  total: {op: einsum, in: [prod, wide3], equation: 'nij,nkl->n'}"))
    graph = flowgrad.load(str(path))
    assert [str(s) for s in graph.specs("best")] == ["float32[N, 2]", "int64[N, 2]"]
    checks = check_graph_gradients(graph, max_elements=36)
    assert all(c.ok for c in checks), checks


# -- scatters, gather_nd, cumulative ops, data-dependent selections (issue 15) ----------------
#
# These run through the ONNX importer (one-node models) and are compared with
# onnx.reference; their node conformance cases run in tests/test_onnx_conformance.py.

def _flowgrad_model(model, feeds):
    from flowgrad.onnx.backend import FlowgradRep
    return FlowgradRep(model).run(feeds)


def _against_reference(op_type, inputs, n_out=1, opset=21, **attrs):
    """flowgrad's import of a one-node model against ReferenceEvaluator, output by output."""
    names = [f"in{i}" if x is not None else "" for i, x in enumerate(inputs)]
    outs = [f"out{i}" for i in range(n_out)]
    node = helper.make_node(op_type, names, outs, **attrs)
    graph = helper.make_graph(
        [node], "one", [helper.make_tensor_value_info(n, _TYPES[x.dtype], x.shape)
                        for n, x in zip(names, inputs) if x is not None],
        [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in outs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    feeds = {n: x for n, x in zip(names, inputs) if x is not None}
    want = ReferenceEvaluator(model).run(None, feeds)
    got = _flowgrad_model(model, feeds)
    assert len(got) == n_out
    for k, (g, w) in enumerate(zip(got, want)):
        _assert_same(g, np.asarray(w), f"{op_type} {attrs} output {k}", rtol=1e-5, atol=1e-6)
    return got


REDUCTIONS = ["none", "add", "mul", "max", "min"]


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_scatter_nd_reductions_with_duplicates_match_reference(reduction):
    data = RNG.standard_normal((4, 3, 2)).astype(np.float32)
    indices = np.array([[[1, 0], [3, 2]], [[1, 0], [-4, 1]]], I64)     # (1, 0) twice
    updates = RNG.standard_normal((2, 2, 2)).astype(np.float32)
    _against_reference("ScatterND", [data, indices, updates], opset=18, reduction=reduction)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("axis", [0, -1])
def test_scatter_elements_reductions_with_duplicates_match_reference(reduction, axis):
    data = RNG.standard_normal((3, 5)).astype(np.float32)
    size = data.shape[axis]
    indices = RNG.integers(-size, size, (2, 3)).astype(I64)
    updates = RNG.standard_normal((2, 3)).astype(np.float32)
    _against_reference("ScatterElements", [data, indices, updates], opset=18, axis=axis,
                       reduction=reduction)


@pytest.mark.parametrize("batch_dims,index_shape", [(0, (2, 3, 2)), (1, (4, 2, 1)),
                                                    (2, (4, 3, 1)), (1, (4, 2))])
def test_gather_nd_matches_reference(batch_dims, index_shape):
    data = RNG.standard_normal((4, 3, 5)).astype(np.float32)
    k = index_shape[-1]
    highs = data.shape[batch_dims:batch_dims + k]
    indices = np.stack([RNG.integers(-h, h, index_shape[:-1]) for h in highs], -1).astype(I64)
    _against_reference("GatherND", [data, indices], batch_dims=batch_dims)


@pytest.mark.parametrize("op_type", ["CumSum", "CumProd"])
@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("exclusive,reverse", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_cumulative_ops_match_reference(op_type, axis, exclusive, reverse):
    x = RNG.uniform(0.5, 1.5, (3, 4, 5)).astype(np.float32)
    x[1, 2, 3] = 0
    _against_reference(op_type, [x, np.array(axis, np.int32)], exclusive=exclusive,
                       reverse=reverse, opset=26 if op_type == "CumProd" else 21)


def test_cumprod_gradient_with_zeros_matches_pytorch():
    """PyTorch's cumprod and autograd gradient over rows holding zeros, recorded by
    tests/data/detection/make_pytorch_refs.py."""
    path = os.path.join(os.path.dirname(__file__), "data", "detection", "pytorch_refs.npz")
    with np.load(path) as saved:
        torch_run = dict(saved)
    x, g = torch_run["cumprod/x"], torch_run["cumprod/seed"]
    for exclusive, reverse in ((False, False), (True, False), (False, True), (True, True)):
        op = REGISTRY.get("cumprod")(axis=1, exclusive=exclusive, reverse=reverse)
        ctx = Context()
        (y,) = op.forward(ctx, x, None)
        ctx.needs_input_grad = (True, False)
        gx, _ = op.backward(ctx, g)
        key = f"cumprod-{exclusive}-{reverse}"
        np.testing.assert_allclose(y, torch_run[f"{key}/y"], rtol=1e-12)
        np.testing.assert_allclose(gx, torch_run[f"{key}/gx"], rtol=1e-12, atol=1e-12)


def test_scatter_max_min_ties_send_the_gradient_to_the_data_then_the_first_update():
    data = np.array([1.0, 5.0, 2.0, 0.0])
    indices = np.array([[1], [2], [2], [3]], I64)
    updates = np.array([5.0, 7.0, 7.0, -1.0])     # 5 ties the data, 7 twice
    g = np.array([10.0, 20.0, 30.0, 40.0])
    op = REGISTRY.get("scatter_nd")(reduction="max")
    ctx = Context()
    (y,) = op.forward(ctx, data, indices, updates)
    ctx.needs_input_grad = (True, False, True)
    gd, gi, gu = op.backward(ctx, g)
    np.testing.assert_array_equal(y, [1.0, 5.0, 7.0, 0.0])
    np.testing.assert_array_equal(gd, [10.0, 20.0, 0.0, 40.0])
    np.testing.assert_array_equal(gu, [0.0, 30.0, 0.0, 0.0])
    assert gi is None


def test_scatter_mul_gradient_is_exact_at_zeros():
    """out = data * u1 * u2 at one place: each factor's gradient is the product of the others,
    whether zero factors are one (the zero gets the rest's product) or two (all zero)."""
    op = REGISTRY.get("scatter_elements")(reduction="mul")
    for data, u in (([2.0], [0.0, 3.0]), ([0.0], [0.0, 3.0]), ([2.0], [4.0, 3.0])):
        ctx = Context()
        op.forward(ctx, np.array(data), np.array([0, 0], I64), np.array(u))
        ctx.needs_input_grad = (True, False, True)
        gd, _, gu = op.backward(ctx, np.array([1.0]))
        np.testing.assert_array_equal(gd, [u[0] * u[1]])
        np.testing.assert_array_equal(gu, [data[0] * u[1], data[0] * u[0]])


@pytest.mark.parametrize("sorted_,axis", [(1, None), (0, None), (1, 0), (0, 0), (1, 1),
                                          (0, -1)])
def test_unique_matches_reference(sorted_, axis):
    x = RNG.integers(0, 3, (5, 4)).astype(np.float32)
    x[3] = x[1]                                           # a repeated row
    attrs = {"sorted": sorted_} if axis is None else {"sorted": sorted_, "axis": axis}
    # onnx.reference mishandles unsorted Unique of inputs of rank > 1 (flat indices taken
    # along axis 0; a negative axis): compare with onnxruntime, which the node tests agree with
    ort = pytest.importorskip("onnxruntime")
    node = helper.make_node("Unique", ["x"], ["y", "i", "inv", "c"], **attrs)
    graph = helper.make_graph(
        [node], "u", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, x.shape)],
        [helper.make_tensor_value_info(n, t, ["k"] if n != "y" else None) for n, t in
         (("y", onnx.TensorProto.FLOAT), ("i", onnx.TensorProto.INT64),
          ("inv", onnx.TensorProto.INT64), ("c", onnx.TensorProto.INT64))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    want = ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, {"x": x})
    for k, (g, w) in enumerate(zip(_flowgrad_model(model, {"x": x}), want)):
        _assert_same(g, w, f"Unique {attrs} output {k}")


@pytest.mark.parametrize("axis,length", [(None, 7), (0, 3), (1, 4), (-1, 2)])
def test_compress_and_nonzero_match_reference(axis, length):
    x = RNG.standard_normal((3, 4)).astype(np.float32)
    condition = RNG.random(length) < 0.6
    _against_reference("Compress", [x, condition], **({} if axis is None else {"axis": axis}))
    _against_reference("NonZero", [np.round(RNG.standard_normal((2, 3, 4))).astype(np.float32)])


@pytest.mark.parametrize("batch_axis,time_axis", [(1, 0), (0, 1)])
def test_reverse_sequence_matches_reference(batch_axis, time_axis):
    shape = [0, 0, 3]
    shape[batch_axis], shape[time_axis] = 4, 5
    x = RNG.standard_normal(shape).astype(np.float32)
    lens = np.array([5, 1, 0, 3], I64)
    _against_reference("ReverseSequence", [x, lens], batch_axis=batch_axis,
                       time_axis=time_axis)


@pytest.mark.parametrize("mode,axis", [("linear", -2), ("circular", -2), ("circular", 1),
                                       ("linear", 2)])
def test_tensor_scatter_matches_reference(mode, axis):
    cache = RNG.standard_normal((2, 3, 6, 4)).astype(np.float32)
    shape = list(cache.shape)
    shape[axis] = 2
    update = RNG.standard_normal(shape).astype(np.float32)
    starts = np.array([4, 1], I64) if mode == "circular" else np.array([3, 0], I64)
    if axis == 1:
        starts = np.array([2, 1], I64)
    _against_reference("TensorScatter", [cache, update, starts], opset=24, mode=mode,
                       axis=axis)


@pytest.mark.parametrize("shape,axes", [([2, 9], [1, 2]), ([5, 4], [-1, 0]),
                                        ([3, 6, 5], None), ([7], [1])])
def test_center_crop_pad_matches_reference(shape, axes):
    x = RNG.standard_normal((3, 6, 5)).astype(np.float32)
    attrs = {} if axes is None else {"axes": axes}
    _against_reference("CenterCropPad", [x, np.array(shape, I64)], opset=18, **attrs)


def test_scatter_with_bad_indices_names_the_node():
    model_node = helper.make_node("ScatterElements", ["d", "i", "u"], ["y"], name="writer",
                                  axis=1)
    graph = helper.make_graph(
        [model_node], "g",
        [helper.make_tensor_value_info("d", onnx.TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("i", onnx.TensorProto.INT64, [2, 2]),
         helper.make_tensor_value_info("u", onnx.TensorProto.FLOAT, [2, 2])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    plan = flowgrad.compile(flowgrad.load(model, dynamic_batch=False))
    feeds = {"d": np.zeros((2, 3), np.float32), "i": np.array([[0, 3], [1, 1]], I64),
             "u": np.ones((2, 2), np.float32)}
    with pytest.raises(flowgrad.FlowgradError, match=r"(?s)'y'.*index 3 is out of range"):
        plan.forward(feeds)
    bad = helper.make_node("ScatterND", ["d", "i", "u"], ["y"], name="nd", reduction="median")
    model.graph.node[0].CopyFrom(bad)
    with pytest.raises(flowgrad.FlowgradError, match="'nd'.*reduction 'median'"):
        flowgrad.load(model)


# -- export: flowgrad op -> ONNX node, run by onnxruntime -----------------------------------

EXPORTED = [
    ("ScatterND", [np.zeros((4, 3), np.float32), np.array([[1], [3]], I64),
                   np.ones((2, 3), np.float32)], {"reduction": "max"}, 1, 18),
    ("ScatterElements", [np.zeros((3, 4), np.float32), np.array([[1, 0], [2, 2]], I64),
                         np.ones((2, 2), np.float32)], {"axis": 1, "reduction": "add"}, 1, 18),
    ("GatherND", [X, np.array([[1, 2], [3, 0]], I64)], {"batch_dims": 0}, 1, 13),
    ("GatherND", [X, np.array([[1], [2], [0], [4]], I64)], {"batch_dims": 1}, 1, 13),
    ("CumSum", [X, np.array(1, I64)], {"exclusive": 1, "reverse": 1}, 1, 14),
    ("NonZero", [np.round(X)], {}, 1, 13),
    ("Compress", [X, np.array([True, False, True])], {"axis": 0}, 1, 13),
    ("Unique", [np.round(X[0])], {"sorted": 0, "axis": 1}, 4, 13),
    ("ReverseSequence", [X, np.array([5, 2, 0, 1], I64)],
     {"batch_axis": 0, "time_axis": 1}, 1, 13),
    ("CenterCropPad", [X, np.array([3, 8], I64)], {"axes": [1, 2]}, 1, 18),
]


@pytest.mark.parametrize("op_type,inputs,attrs,n_out,opset", EXPORTED,
                         ids=[f"{e[0]}-{i}" for i, e in enumerate(EXPORTED)])
def test_export_runs_in_onnxruntime(op_type, inputs, attrs, n_out, opset):
    ort = pytest.importorskip("onnxruntime")
    from flowgrad.onnx.export import export_onnx
    names = [f"in{i}" for i in range(len(inputs))]
    outs = [f"out{i}" for i in range(n_out)]
    graph = helper.make_graph(
        [helper.make_node(op_type, names, outs, **attrs)], "one",
        [helper.make_tensor_value_info(n, _TYPES[x.dtype], x.shape)
         for n, x in zip(names, inputs)],
        [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in outs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    g = flowgrad.load(model, dynamic_batch=False)
    feeds = dict(zip(names, inputs))
    ours = flowgrad.compile(g).forward({k: v for k, v in feeds.items() if k in g.inputs})
    exported = export_onnx(g)
    kept = {i.name for i in exported.graph.input}
    theirs = ort.InferenceSession(exported.SerializeToString(),
                                  providers=["CPUExecutionProvider"]).run(
        None, {k: v for k, v in feeds.items() if k in kept})
    refs = g.meta["onnx"]["outputs"]
    for name, want in zip(outs, theirs):
        _assert_same(np.asarray(ours[refs[name]]), np.asarray(want), f"{op_type} {name}")


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
def test_pad_is_np_pad_bit_for_bit(mode):
    """pad gathers by a cached border index (and fills then copies in constant mode) instead
    of calling np.pad: the same values on random ranks, crops, and wrap/edge pads longer than
    the axis."""
    from flowgrad.ops.resample import Pad
    rng = np.random.default_rng(0)
    for _ in range(60):
        shape = tuple(int(n) for n in rng.integers(2, 6, rng.integers(1, 4)))
        x = rng.standard_normal(shape).astype(np.float32)
        top = 2 if mode == "reflect" else 8        # reflect pads stay shorter than the axis
        begins = np.minimum(rng.integers(-1 if mode == "constant" else 0, top, len(shape)),
                            np.array(shape) - 1)
        ends = np.minimum(rng.integers(-1 if mode == "constant" else 0, top, len(shape)),
                          np.array(shape) - 1 if mode == "reflect" else top)
        (y,) = Pad(mode=mode, pads=[*map(int, begins), *map(int, ends)], value=1.5).forward(
            Context(grad_enabled=False), x)
        crop = tuple(slice(max(0, -b), n - max(0, -e)) for n, b, e in zip(shape, begins, ends))
        grow = [(max(0, int(b)), max(0, int(e))) for b, e in zip(begins, ends)]
        extra = {"constant_values": np.float32(1.5)} if mode == "constant" else {}
        expected = np.pad(x[crop], grow, mode=mode, **extra)
        assert y.shape == expected.shape and np.array_equal(y, expected)
        assert not np.shares_memory(y, x)
