"""Partial folding of shape arithmetic at import (flowgrad.onnx.builder.Value.elements).

PyTorch exports ``x.view(x.size(0), x.size(1), -1)`` and the like as Shape -> Gather/Slice ->
Unsqueeze -> Concat -> Reshape.  With a free batch or time axis the Shape cannot fold, but the
parts of it that only read static dims can, and a Reshape reading the input's own dims at their
places becomes a static ``0`` (copy) target: nothing of the chain runs per forward, and any size
of the free dims still works.  A chain that needs a free dim elsewhere stays computed per run.
"""
from __future__ import annotations

import networkx as nx
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import flowgrad


def _model(nodes, inits, y_shape) -> onnx.ModelProto:
    """x: [N, S, 4, 6] (batch and time free) through ``nodes`` to y."""
    graph = helper.make_graph(
        nodes, "shape_chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "S", 4, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
        [numpy_helper.from_array(np.asarray(v, np.int64), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _ops_run(graph) -> list[str]:
    """The op types a forward to the graph's outputs runs (the ancestors of the outputs),
    branches aside."""
    outs = {graph.resolve(ref)[0] for ref in graph.outputs}
    upstream = set(outs).union(*(nx.ancestors(graph.dag, n) for n in outs))
    return sorted(graph.op_of(n).type for n in upstream
                  if graph.is_op(n) and graph.op_of(n).type != "branch")


def _check_sizes(model, expect) -> None:
    net = flowgrad.compile(flowgrad.load(model), dtype="float64")
    rng = np.random.default_rng(0)
    for n, s in [(1, 3), (2, 7)]:
        x = rng.standard_normal((n, s, 4, 6))
        np.testing.assert_allclose(net.forward({"x": x})["y"], expect(x), rtol=1e-12)


def test_a_reshape_from_static_dims_and_own_dims_folds():
    """y = x.view(x.size(0), x.size(1), x.size(2) * x.size(3)): the two free dims are x's own
    at their places (copied), the product is of static dims (a constant)."""
    model = _model([
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Slice", ["shape", "zero", "two", "zero"], ["lead"]),
        helper.make_node("Gather", ["shape", "i2"], ["d2"], axis=0),
        helper.make_node("Gather", ["shape", "i3"], ["d3"], axis=0),
        helper.make_node("Mul", ["d2", "d3"], ["width"]),
        helper.make_node("Unsqueeze", ["width", "zero"], ["width1"]),
        helper.make_node("Concat", ["lead", "width1"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"]),
    ], {"zero": [0], "two": [2], "i2": 2, "i3": 3}, ["N", "S", 24])
    graph = flowgrad.load(model)
    assert _ops_run(graph) == ["reshape"]
    assert tuple(graph.op_of(graph.resolve("y")[0]).shape) == (0, 0, 24)
    assert graph.spec_of("y").shape == (None, None, 24)
    _check_sizes(model, lambda x: x.reshape(x.shape[0], x.shape[1], 24))


def test_a_gather_of_a_static_dim_is_a_constant():
    """Shape(x)[-1] alone (a static dim of a value with free dims) is known at load time."""
    model = _model([
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "last"], ["d"], axis=0),
        helper.make_node("Concat", ["minus1", "d"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"]),
    ], {"last": [-1], "minus1": [-1]}, ["M", 6])
    graph = flowgrad.load(model)
    assert _ops_run(graph) == ["reshape"]
    _check_sizes(model, lambda x: x.reshape(-1, 6))


def test_a_free_dim_used_elsewhere_stays_computed_per_run():
    """x's time dim as dim 1 of its transpose [N, 4, S, 6] -> [N * 4, S, 6]: the target reads
    a free dim at another place than x's, so the Shape and its arithmetic run every time."""
    model = _model([
        helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1, 3]),
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "one"], ["s"], axis=0),
        helper.make_node("Unsqueeze", ["s", "zero"], ["s1"]),
        helper.make_node("Concat", ["minus1", "s1", "six"], ["target"], axis=0),
        helper.make_node("Reshape", ["t", "target"], ["y"]),
    ], {"one": 1, "zero": [0], "minus1": [-1], "six": [6]}, ["M", "S", 6])
    graph = flowgrad.load(model)
    assert _ops_run(graph) == ["concat", "gather", "reshape", "shape", "transpose",
                               "unsqueeze"]
    _check_sizes(model, lambda x: x.transpose(0, 2, 1, 3).reshape(-1, x.shape[1], 6))


def test_one_free_element_elsewhere_is_the_inferred_dim():
    """x summed over time and transposed to [4, 6, N], reshaped to [x.size(0), 4, 6]: the
    batch element is the only free one, so it is ONNX's -1 and the output's dims are known."""
    model = _model([
        helper.make_node("ReduceSum", ["x", "one"], ["s"], keepdims=0),
        helper.make_node("Transpose", ["s"], ["t"], perm=[1, 2, 0]),
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["n"], axis=0),
        helper.make_node("Concat", ["n", "four_six"], ["target"], axis=0),
        helper.make_node("Reshape", ["t", "target"], ["y"]),
    ], {"one": [1], "zero": [0], "four_six": [4, 6]}, ["N", 4, 6])
    graph = flowgrad.load(model)
    assert "shape" not in _ops_run(graph)
    assert graph.spec_of("y").shape == (None, 4, 6)
    _check_sizes(model, lambda x: x.sum(axis=1).transpose(1, 2, 0).reshape(-1, 4, 6))
