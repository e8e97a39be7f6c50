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


# -- export: onnxruntime runs the exported ops like flowgrad, and they import back ----------------

MATH = """
flowgrad: 1
name: breadth_math
inputs:
  x: {shape: [3, 3]}
nodes:
  a: {op: atan, in: x}
  t: {op: tan, in: a}
  s: {op: asinh, in: t}
  d: {op: tanh, in: s}
  e: {op: atanh, in: d}
  f: {op: asin, in: d}
  g: {op: acos, in: d}
  h: {op: acosh, in: {x: ex}}
  ab: {op: abs, in: x}
  ex: {op: exp, in: ab}
  p: {op: reduce_prod, in: x, axes: [2], keepdims: true}
  det: {op: det, in: x}
  u: {op: unsqueeze, in: x, axes: [3]}
  fft: {op: dft, in: u, axis: 1, onesided: true}
  ifft: {op: dft, in: fft, axis: 1, inverse: true, onesided: true, length: 3}
  inf: {op: is_inf, in: x, detect_negative: false}
outputs: [e, f, g, h, p, det, fft, ifft, inf]
"""

SIGNAL = """
flowgrad: 1
name: breadth_signal
inputs:
  sig: {shape: [32, 1]}
nodes:
  w: {op: window, kind: hann, size: 8}
  s: {op: stft, in: {signal: sig, window: w}, frame_step: 4}
  mel: {op: mel_weight_matrix, num_mel_bins: 3, dft_length: 8, sample_rate: 800,
        lower_edge_hertz: 0.0, upper_edge_hertz: 400.0}
outputs: [s, mel]
"""


@pytest.mark.parametrize("text", [MATH, SIGNAL], ids=["math", "signal"])
def test_new_ops_export_to_onnxruntime_and_back(text, tmp_path):
    import onnx
    from flowgrad.gradcheck import random_feeds
    from flowgrad.onnx.export import export_onnx
    ort = pytest.importorskip("onnxruntime")
    path = tmp_path / "g.yaml"
    path.write_text(text)
    graph = flowgrad.load(str(path))
    proto = export_onnx(graph)
    onnx.checker.check_model(proto, full_check=True)
    feeds = random_feeds(graph, batch=2, dtype=np.float32)
    ours = flowgrad.compile(graph).forward(feeds, grad=False)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    theirs = session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})
    for ref, value in zip(graph.outputs, theirs):
        np.testing.assert_allclose(value, ours[ref], rtol=1e-4, atol=1e-5, err_msg=ref)
    back = flowgrad.compile(flowgrad.load(proto)).forward(feeds, grad=False)
    for ref in graph.outputs:
        np.testing.assert_allclose(back[ref], ours[ref], rtol=1e-6, atol=1e-6, err_msg=ref)


#: node tests whose imported graph is exported again and run by onnxruntime
ROUND_TRIPS = ["test_bitshift_right_uint16", "test_bitshift_left_int8_overflow",
               "test_bitcast_float32_to_int32", "test_bitwise_and_ui8_bcast_4v3d",
               "test_bitwise_not_3d", "test_bitwise_xor_i16_3d", "test_isinf_positive",
               "test_isnan", "test_eyelike_without_dtype", "test_eyelike_populate_off_main_diagonal",
               "test_reduce_prod_keepdims_random", "test_det_nd",
               "test_nllloss_NCd1d2d3_sum_weight_high_ii",
               "test_sce_mean_weight_ii_3d_log_prob", "test_dft_irfft", "test_stft_with_window",
               "test_hammingwindow_symmetric", "test_melweightmatrix", "test_swish",
               "test_acosh", "test_tan", "test_tfidfvectorizer_tf_batch_uniandbigrams_skip5"]


@pytest.mark.parametrize("name", ROUND_TRIPS)
def test_node_tests_export_to_onnxruntime(name):
    """flowgrad -> ONNX -> onnxruntime gives the node test's expected outputs."""
    import onnx
    from onnx import numpy_helper
    from flowgrad.onnx.conformance import compare, node_cases
    from flowgrad.onnx.export import export_onnx
    ort = pytest.importorskip("onnxruntime")
    from flowgrad.onnx.backend import FlowgradBackend
    (case,) = [c for c in node_cases() if c.name == name]
    inputs, expected = case.data_sets[0]
    as_array = lambda v: numpy_helper.to_array(v) if isinstance(v, onnx.TensorProto) else v  # noqa
    rep = FlowgradBackend.prepare(case.model)
    named = dict(zip(rep.onnx_inputs, map(as_array, inputs)))
    graph, _, by_onnx, refs = rep._plan_for({k: v for k, v in named.items() if k in rep.bound})
    feeds = {}
    for k, v in named.items():           # by the ONNX name and by flowgrad's
        if k not in rep.bound:
            feeds[k] = feeds[by_onnx[k]] = v
    proto = export_onnx(graph)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = dict(zip(graph.outputs, session.run(
        None, {i.name: feeds[i.name] for i in session.get_inputs()})))
    # onnxruntime's float32 FFTs round differently from numpy's: compare at float32 precision
    compare([got[r] for r in refs], [as_array(v) for v in expected], 1e-4, 1e-4)


# -- bad nodes: one error naming the node and what to do ------------------------------------------

def _one_node(op_type, inputs, attrs, opset=22):
    ins = [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs]
    node = helper.make_node(op_type, [n for n, _, _ in inputs], ["out"], name="bad", **attrs)
    return model(node, ins, [helper.make_tensor_value_info("out", TensorProto.UNDEFINED, None)],
                 opset=opset)


BAD = [
    ("BitShift", [("x", TensorProto.UINT8, [3]), ("y", TensorProto.UINT8, [3])], {},
     "needs attribute 'direction'"),
    ("BitShift", [("x", TensorProto.UINT8, [3]), ("y", TensorProto.UINT8, [3])],
     {"direction": "UP"}, "must be one of 'LEFT', 'RIGHT'"),
    ("BitwiseAnd", [("x", TensorProto.FLOAT, [3]), ("y", TensorProto.FLOAT, [3])], {},
     "works on integers"),
    ("BitCast", [("x", TensorProto.FLOAT, [3])], {"to": TensorProto.INT64},
     "must have the same width"),
    ("DFT", [("x", TensorProto.FLOAT, [2, 8, 1])], {"axis": 2}, "not a signal axis"),
    ("NegativeLogLikelihoodLoss", [("x", TensorProto.FLOAT, [2, 3]),
                                   ("t", TensorProto.FLOAT, [2])], {}, "integer tensor"),
    ("SoftmaxCrossEntropyLoss", [("x", TensorProto.FLOAT, [2, 3]),
                                 ("t", TensorProto.INT64, [2])], {"reduction": "max"},
     "must be none, sum or mean"),
    ("Bernoulli", [("x", TensorProto.INT64, [3])], {}, "float tensor"),
    ("Multinomial", [("x", TensorProto.FLOAT, [2, 3])], {"dtype": TensorProto.FLOAT},
     "int32 or int64"),
    ("RandomNormal", [], {"shape": [2], "seed": -3.0}, "seed"),
    ("EyeLike", [("x", TensorProto.FLOAT, [2, 3, 4])], {}, "2-d input"),
]


@pytest.mark.parametrize("op_type,inputs,attrs,message", BAD,
                         ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_nodes_give_one_error_naming_the_node(op_type, inputs, attrs, message):
    from flowgrad.errors import FlowgradError
    m = _one_node(op_type, inputs, attrs, opset={"BitCast": 26, "DFT": 19}.get(op_type, 22))
    with pytest.raises(FlowgradError) as info:
        flowgrad.load(m, dynamic_batch=False)
    text = str(info.value)
    assert "'bad'" in text and op_type in text and message in text, text


@pytest.mark.parametrize("mode", ["TF", "IDF", "TFIDF"])
@pytest.mark.parametrize("lengths,skips", [((1, 1), 3), ((1, 3), 2), ((2, 3), 0)])
def test_tfidf_vectorizer_matches_onnx_reference(mode, lengths, skips):
    """Every mode, unigrams with skips (counted once), trigrams with skips; the node tests
    only cover TF."""
    rng = np.random.default_rng(4)
    x = rng.integers(0, 4, size=(3, 11)).astype(np.int64)
    pool = [0, 1, 3, 0, 1, 2, 2, 3, 3, 0, 1, 2, 3, 3, 0]      # 3 unigrams, 3 bigrams, 2 trigrams
    attrs = dict(mode=mode, min_gram_length=lengths[0], max_gram_length=lengths[1],
                 max_skip_count=skips, ngram_counts=[0, 3, 9],
                 ngram_indexes=[7, 0, 1, 2, 3, 4, 5, 6], pool_int64s=pool)
    if mode != "TF":
        attrs["weights"] = [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0]
    node = helper.make_node("TfIdfVectorizer", ["x"], ["y"], **attrs)
    for tokens in (x, x[0]):                        # (N, C) and (C,)
        m = model(node, [helper.make_tensor_value_info("x", TensorProto.INT64, tokens.shape)],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
        (expected,) = ReferenceEvaluator(m).run(None, {"x": tokens})
        np.testing.assert_array_equal(run_onnx(m, {"x": tokens})["y"], expected)


RANDOM = """
flowgrad: 1
name: breadth_random
inputs:
  p: {shape: [5]}
  logits: {shape: [4]}
nodes:
  u: {op: random_uniform, shape: [3, 2], low: 2.0, high: 3.0}
  n: {op: random_normal, in: p, mean: 10.0, scale: 0.1}
  b: {op: bernoulli, in: p}
  m: {op: multinomial, in: logits, sample_size: 6, dtype: int64}
  eye: {op: eye_like, in: {x: u}, k: 1}
outputs: [u, n, b, m, eye]
"""


def test_random_ops_export_and_onnxruntime_draws_from_the_same_distributions(tmp_path):
    """onnxruntime's generator differs from numpy's: the draws are compared by shape, dtype and
    support (eye_like exactly)."""
    import onnx
    from flowgrad.onnx.export import export_onnx
    ort = pytest.importorskip("onnxruntime")
    path = tmp_path / "r.yaml"
    path.write_text(RANDOM)
    graph = flowgrad.load(str(path))
    proto = export_onnx(graph)
    onnx.checker.check_model(proto, full_check=True)
    rng = np.random.default_rng(0)
    feeds = {"p": rng.uniform(size=(2, 5)).astype(np.float32),
             "logits": rng.standard_normal((2, 4)).astype(np.float32)}
    ours = flowgrad.compile(graph).forward(feeds, grad=False)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    theirs = dict(zip(graph.outputs, session.run(None, feeds)))
    for name in graph.outputs:
        assert theirs[name].shape == ours[name].shape and theirs[name].dtype == ours[name].dtype
    for got in (ours, theirs):
        assert ((got["u"] >= 2) & (got["u"] < 3)).all() and abs(got["n"].mean() - 10) < 0.3
        assert set(np.unique(got["b"])) <= {0, 1} and ((got["m"] >= 0) & (got["m"] < 4)).all()
    np.testing.assert_array_equal(theirs["eye"], ours["eye"])
