"""Semantics of the ops added for ONNX breadth (issue 15) that the onnx node tests leave out.

The random generators have no node tests with reproducible values (RandomNormal, RandomUniform,
their Like forms and Multinomial have none at all; Bernoulli's expected values are numpy's
global draws), so they are checked here: seeded draws equal onnx's reference evaluator, unseeded
draws follow their distribution, follow the plan's seed, change between calls, and are never
folded into constants at import.
"""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import flowgrad
from flowgrad.op import Context
from flowgrad.plugins import make_registry

REGISTRY = make_registry()


def op(type_, **attrs):
    return REGISTRY.get(type_)(**attrs)


def model(node, inputs, outputs, opset=22):
    graph = helper.make_graph([node], "g", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def run_onnx(m, feeds, seed=0):
    """Forward of ONNX model ``m`` (a float64 feed runs the plan in float64, as the backend)."""
    dtype = np.float64 if any(v.dtype == np.float64 for v in feeds.values()) else np.float32
    net = flowgrad.compile(flowgrad.load(m, dynamic_batch=False), dtype=dtype, seed=seed)
    return net.forward(feeds)


# -- random tensors ----------------------------------------------------------------------------

SEEDED = [
    ("RandomNormal", dict(shape=[3, 4], mean=1.5, scale=0.3, seed=7.0), None),
    ("RandomUniform", dict(shape=[5], low=-2.0, high=3.0, seed=1.0, dtype=TensorProto.DOUBLE),
     None),
    ("RandomNormalLike", dict(seed=2.0), np.zeros((2, 3), np.float32)),
    ("RandomUniformLike", dict(seed=4.0, low=1.0, high=2.0), np.zeros((4,), np.float64)),
    ("Bernoulli", dict(seed=5.0), np.linspace(0, 1, 12).astype(np.float32)),
]


@pytest.mark.parametrize("onnx_type,attrs,x", SEEDED, ids=[s[0] for s in SEEDED])
def test_seeded_draws_equal_onnx_reference(onnx_type, attrs, x):
    ins = [] if x is None else [helper.make_tensor_value_info(
        "x", helper.np_dtype_to_tensor_dtype(x.dtype), x.shape)]
    node = helper.make_node(onnx_type, [i.name for i in ins], ["y"], **attrs)
    m = model(node, ins, [helper.make_tensor_value_info("y", TensorProto.UNDEFINED, None)])
    feeds = {} if x is None else {"x": x}
    (expected,) = ReferenceEvaluator(m).run(None, feeds)
    got = run_onnx(m, feeds)
    (value,) = got.values()
    assert value.dtype == expected.dtype and value.shape == expected.shape
    np.testing.assert_allclose(value, expected, rtol=1e-6)
    again = run_onnx(m, feeds, seed=99)          # the seed attribute wins over the plan's
    np.testing.assert_array_equal(next(iter(again.values())), value)


def test_unseeded_draws_follow_the_distribution_and_the_plan_seed():
    ctx = Context(rng=np.random.default_rng(0))
    (y,) = op("random_normal", shape=[200, 100], mean=2.0, scale=0.5).forward(ctx, None)
    assert y.dtype == np.float32 and abs(y.mean() - 2.0) < 0.01 and abs(y.std() - 0.5) < 0.01
    (u,) = op("random_uniform", shape=[20000], low=-1.0, high=3.0,
              dtype="float64").forward(ctx, None)
    assert u.dtype == np.float64 and u.min() >= -1 and u.max() < 3 and abs(u.mean() - 1) < 0.03
    p = np.full((50000,), 0.3)
    (b,) = op("bernoulli").forward(ctx, p)
    assert set(np.unique(b)) <= {0.0, 1.0} and abs(b.mean() - 0.3) < 0.01
    (b0,) = op("bernoulli").forward(ctx, np.array([0.0, 1.0, 0.0, 1.0]))
    np.testing.assert_array_equal(b0, [0, 1, 0, 1])


def test_multinomial_draws_from_the_softmax_of_its_logits():
    logits = np.log(np.array([[0.1, 0.0001, 0.6, 0.3], [1.0, 0.0, 0.0, 0.0]]) + 1e-300)
    (idx,) = op("multinomial", sample_size=40000).forward(Context(rng=np.random.default_rng(1)),
                                                          logits)
    assert idx.dtype == np.int32 and idx.shape == (2, 40000)
    freq = np.bincount(idx[0], minlength=4) / 40000
    np.testing.assert_allclose(freq, [0.1, 0.0001, 0.6, 0.3], atol=0.01)
    assert np.all(idx[1] == 0)                  # the other classes have probability 1e-300


def test_random_ops_draw_afresh_per_call_and_are_not_folded_at_import():
    x = helper.make_tensor("c", TensorProto.FLOAT, [3, 3], np.zeros(9, np.float32))
    node = helper.make_node("RandomUniformLike", ["c"], ["y"])
    graph = helper.make_graph([node], "g", [], [helper.make_tensor_value_info(
        "y", TensorProto.FLOAT, [3, 3])], initializer=[x])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)])
    g = flowgrad.load(m)
    assert any(g.is_op(n) and g.op_of(n).type == "random_uniform" for n in g.dag)
    net = flowgrad.compile(g, seed=3)
    first, second = net.forward({})["y"], net.forward({})["y"]
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(flowgrad.compile(g, seed=3).forward({})["y"], first)


def test_random_op_errors_name_what_to_fix():
    from flowgrad.errors import AttrError, ShapeError
    from flowgrad.op import Spec
    with pytest.raises(ShapeError, match="set 'dtype'"):
        op("random_normal").infer(Spec((2, 2), np.int64))
    with pytest.raises(ShapeError, match="'shape' attribute or a 'like' input"):
        op("random_uniform").infer(None)
    with pytest.raises(AttrError, match="seed"):
        op("bernoulli", seed=-1)
    with pytest.raises(AttrError, match="sample_size"):
        op("multinomial", sample_size=0)
