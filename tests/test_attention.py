"""Transformer, normalization and pooling breadth (issue 15, item 5): the ONNX ops beyond the
node tests' reach.

* a PyTorch pre-norm transformer block (causal grouped-query ``scaled_dot_product_attention``,
  ``nn.RMSNorm``), exported by torch's ONNX exporter as opset-23 ``Attention`` and
  ``RMSNormalization`` nodes (``tests/data/attention/make_block.py``, committed: CI has no
  torch): flowgrad's output and gradients match PyTorch autograd, its output matches
  onnxruntime, and flowgrad's export of the imported graph runs in onnxruntime;
* single-node models of every new op, with the attributes the node tests leave out (3-D
  grouped-query attention with a short float mask, a KV cache and softcap, the qk output,
  GroupNormalization's opset-18 per-group scale, GlobalLpPool...): flowgrad against
  onnxruntime (where it runs the op) and onnx's reference evaluator, then exported back by
  flowgrad and run again;
* malformed nodes give one error naming the node and what to change.
"""
from __future__ import annotations

import os
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import flowgrad
from flowgrad.errors import FlowgradError
from flowgrad.gradcheck import check_graph_gradients
from flowgrad.onnx.backend import FlowgradBackend
from flowgrad.onnx.export import export_onnx

ort = pytest.importorskip("onnxruntime")

FIXTURES = os.path.join(os.path.dirname(__file__), "data", "attention")

F32 = TensorProto.FLOAT


def _grad(grads: dict, name: str):
    """A parameter's gradient by its ONNX name (or the sanitized alias YAML needs)."""
    for key in (name, name.replace(".", "_")):
        if key in grads:
            return grads[key]
    raise KeyError(f"no gradient for {name!r}; have {sorted(grads)}")


def test_pytorch_block_matches_torch_and_onnxruntime():
    path = os.path.join(FIXTURES, "block.onnx")
    with np.load(os.path.join(FIXTURES, "block_torch.npz")) as saved:
        ref = dict(saved)
    graph = flowgrad.load(path)
    types = {graph.op_of(n).type for n in graph.ops}
    assert {"attention", "rms_normalization"} <= types, types
    net = flowgrad.compile(graph)
    x_name = graph.inputs[0]
    out = graph.outputs[0]
    y = net.forward({x_name: ref["x"]})[out]
    np.testing.assert_allclose(y, ref["y"], rtol=1e-4, atol=1e-5)

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"x": ref["x"]})[0], y, rtol=1e-4, atol=1e-5)

    grads = net.backward({out: ref["w"]}, wrt=[x_name])
    names = [k.split("/", 1)[1] for k in ref if k.startswith("grad/")]
    assert len(names) >= 8          # x, both RMSNorm scales, every bias
    for name in names:
        got = grads[x_name] if name == "x" else _grad(grads, name)
        np.testing.assert_allclose(got, ref[f"grad/{name}"], rtol=1e-4, atol=1e-5,
                                   err_msg=name)

    exported = export_onnx(graph)
    assert {n.op_type for n in exported.graph.node} >= {"Attention", "RMSNormalization"}
    assert exported.opset_import[0].version >= 23
    again = ort.InferenceSession(exported.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {again.get_inputs()[0].name: ref["x"]}
    np.testing.assert_allclose(again.run(None, feed)[0], ref["y"], rtol=1e-4, atol=1e-5)


def test_pytorch_block_fine_tunes():
    """Every imported weight of the block (projections, norm scales, biases) trains: a few
    gradient steps towards a target halve the squared error."""
    graph = flowgrad.load(os.path.join(FIXTURES, "block.onnx"))
    net = flowgrad.compile(graph)
    x_name, out = graph.inputs[0], graph.outputs[0]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 16)).astype(np.float32)
    target = rng.standard_normal((2, 5, 16)).astype(np.float32)
    losses = []
    for _ in range(40):
        diff = net.forward({x_name: x})[out] - target
        losses.append(float(np.mean(diff * diff)))
        grads = net.backward({out: 2 * diff / diff.size})
        assert len(grads) == 12                 # 5 weight matrices, 5 biases, 2 norm scales
        for name, grad in grads.items():
            net.params[name] -= 0.5 * grad
    assert losses[-1] < 0.5 * losses[0], losses


# -- single-node models -------------------------------------------------------------------------

def _model(op_type, inputs, outputs, opset, initializers=(), **attrs):
    """A one-node model: ``inputs`` is ``[(name, elem_type, shape)]``, ``outputs`` names."""
    node = helper.make_node(op_type, [i[0] for i in inputs] + [i.name for i in initializers],
                            outputs, **attrs)
    graph = helper.make_graph(
        [node], op_type.lower(),
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(o, F32, None) for o in outputs],
        initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = helper.find_min_ir_version_for(list(model.opset_import))
    # the outputs' types as onnx infers them (a checked model needs their shapes)
    inferred = onnx.shape_inference.infer_shapes(model)
    known = {v.name: v for v in inferred.graph.value_info}
    known.update({v.name: v for v in inferred.graph.output})
    for out in model.graph.output:
        if out.name in known and known[out.name].type.tensor_type.HasField("shape"):
            out.CopyFrom(known[out.name])
        else:                       # (ops onnx cannot infer keep their input's shape here)
            out.type.CopyFrom(model.graph.input[0].type)
    return model


def _reference(model, feeds):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ReferenceEvaluator(model).run(None, feeds)


def _onnxruntime(model, feeds):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _check(model, feeds, runtimes=("reference", "onnxruntime"), rtol=1e-4, atol=1e-5,
           export=True):
    """flowgrad's outputs against each runtime, then flowgrad's export of the imported graph
    run by onnxruntime (or, for ops it lacks, the reference) against flowgrad's outputs."""
    ours = FlowgradBackend.prepare(model).run([feeds[i.name] for i in model.graph.input])
    for runtime in runtimes:
        theirs = (_reference if runtime == "reference" else _onnxruntime)(model, feeds)
        for k, (a, b) in enumerate(zip(ours, theirs)):
            np.testing.assert_allclose(a, b, rtol=rtol, atol=atol,
                                       err_msg=f"{runtime}, output {k}")
    if export:
        exported = export_onnx(flowgrad.load(model))
        names = [i.name for i in exported.graph.input]
        run = _onnxruntime if "onnxruntime" in runtimes else _reference
        again = run(exported, dict(zip(names, [feeds[i.name] for i in model.graph.input])))
        for k, (a, b) in enumerate(zip(ours, again)):
            np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=f"export, output {k}")
    return ours


def _rand(*shape, seed=0):
    return np.random.default_rng(seed + len(shape)).standard_normal(shape).astype(np.float32)


def test_attention_3d_gqa_mask_cache_softcap_and_qk_output():
    """3-D inputs, 4 query heads over 2 key/value heads, a float mask covering 5 of the 6
    keys (the sixth is masked), a KV cache (present = past + new), softcap and the qk output
    after the bias (mode 2)."""
    b, sq, skv, past, d = 2, 3, 2, 4, 4
    inputs = [("Q", F32, [b, sq, 4 * d]), ("K", F32, [b, skv, 2 * d]), ("V", F32, [b, skv, 2 * 3]),
              ("mask", F32, [sq, past + skv - 1]), ("past_key", F32, [b, 2, past, d]),
              ("past_value", F32, [b, 2, past, 3])]
    feeds = {n: _rand(*s, seed=i) for i, (n, _, s) in enumerate(inputs)}
    model = _model("Attention", inputs, ["Y", "present_key", "present_value", "qk"], 23,
                   q_num_heads=4, kv_num_heads=2, softcap=2.0, qk_matmul_output_mode=2)
    y, present_k, present_v, qk = _check(model, feeds, runtimes=("reference",))
    assert y.shape == (b, sq, 4 * 3) and present_k.shape == (b, 2, past + skv, d)
    assert np.isneginf(qk[..., -1]).all()           # the key the short mask leaves out


def test_attention_4d_causal_bool_mask_scale_matches_onnxruntime():
    inputs = [("Q", F32, [2, 2, 4, 8]), ("K", F32, [2, 2, 6, 8]), ("V", F32, [2, 2, 6, 8]),
              ("mask", TensorProto.BOOL, [4, 6])]
    feeds = {n: _rand(*s, seed=i) for i, (n, _, s) in enumerate(inputs[:3])}
    feeds["mask"] = np.random.default_rng(5).random((4, 6)) < 0.8
    feeds["mask"][:, 0] = True
    model = _model("Attention", inputs, ["Y"], 23, scale=0.3)
    _check(model, feeds)
    causal = _model("Attention", inputs[:3], ["Y"], 23, is_causal=1)
    _check(causal, {k: feeds[k] for k in ("Q", "K", "V")})


def test_attention_padded_cache_and_window_export_at_their_opsets():
    """nonpad_kv_seqlen (opset 24) with a sliding window (opset 25): the export asks for the
    opset that has them, and onnx's reference agrees before and after."""
    inputs = [("Q", F32, [2, 2, 3, 4]), ("K", F32, [2, 2, 6, 4]), ("V", F32, [2, 2, 6, 4]),
              ("", 0, None), ("", 0, None), ("", 0, None), ("lens", TensorProto.INT64, [2])]
    real = [i for i in inputs if i[0]]
    feeds = {n: _rand(*s, seed=i) for i, (n, _, s) in enumerate(real[:3])}
    feeds["lens"] = np.array([6, 4], dtype=np.int64)
    node = helper.make_node("Attention", [i[0] for i in inputs], ["Y"], is_causal=1,
                            left_window_size=2)
    graph = helper.make_graph([node], "window", [helper.make_tensor_value_info(n, t, s)
                                                 for n, t, s in real],
                              [helper.make_tensor_value_info("Y", F32, [2, 2, 3, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 25)])
    model.ir_version = 11
    _check(model, feeds, runtimes=("reference",))
    exported = export_onnx(flowgrad.load(model))
    assert exported.opset_import[0].version >= 25


def test_rotary_embedding_and_rms_norm_match_onnxruntime():
    inputs = [("X", F32, [2, 3, 8]), ("cos", F32, [6, 2]), ("sin", F32, [6, 2]),
              ("pos", TensorProto.INT64, [2, 3])]
    angles = np.arange(6)[:, None] * np.array([1.0, 0.1])
    feeds = {"X": _rand(2, 3, 8), "cos": np.cos(angles).astype(np.float32),
             "sin": np.sin(angles).astype(np.float32),
             "pos": np.array([[0, 1, 2], [3, 4, 5]], dtype=np.int64)}
    model = _model("RotaryEmbedding", inputs, ["Y"], 23, num_heads=2, rotary_embedding_dim=4,
                   interleaved=1)
    _check(model, feeds)
    rms = _model("RMSNormalization", [("X", F32, [2, 3, 4]), ("scale", F32, [3, 4])], ["Y"],
                 23, axis=1, epsilon=1e-3)
    _check(rms, {"X": _rand(2, 3, 4), "scale": _rand(3, 4, seed=3)})


def test_group_normalization_18_per_group_scale():
    """Opset 18's scale and bias hold one value per group: they train through the gather that
    repeats them per channel."""
    inputs = [("X", F32, [2, 6, 3]), ("scale", F32, [3]), ("bias", F32, [3])]
    feeds = {"X": _rand(2, 6, 3), "scale": _rand(3, seed=1), "bias": _rand(3, seed=2)}
    model = _model("GroupNormalization", inputs, ["Y"], 18, num_groups=3, epsilon=1e-3)
    graph = flowgrad.load(model)     # (onnx's checker calls the opset-18 form deprecated)
    ours = flowgrad.compile(graph).forward(feeds)[graph.outputs[0]]
    x = feeds["X"].reshape(2, 3, -1)
    normed = ((x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-3))
    want = normed * feeds["scale"][None, :, None] + feeds["bias"][None, :, None]
    np.testing.assert_allclose(ours, want.reshape(2, 6, 3), rtol=1e-4, atol=1e-5)
    checks = check_graph_gradients(graph, feeds=feeds, rtol=1e-3, atol=1e-5)
    assert all(c.ok for c in checks), [(c.name, c.max_abs_error) for c in checks]
    # the opset-21 form (per-channel scale and bias) is what flowgrad exports
    inputs21 = [("X", F32, [2, 6, 3]), ("scale", F32, [6]), ("bias", F32, [6])]
    model21 = _model("GroupNormalization", inputs21, ["Y"], 21, num_groups=3, epsilon=1e-3)
    _check(model21, {"X": feeds["X"], "scale": _rand(6, seed=1), "bias": _rand(6, seed=2)})


def test_pooling_ops_match_onnxruntime():
    x = _rand(1, 2, 5, 6)
    lp = _model("LpPool", [("X", F32, [1, 2, 5, 6])], ["Y"], 18, kernel_shape=[3, 2],
                strides=[2, 2], pads=[1, 0, 1, 1], p=3, ceil_mode=1)
    _check(lp, {"X": x}, runtimes=("reference",))
    glp = _model("GlobalLpPool", [("X", F32, [1, 2, 5, 6])], ["Y"], 18, p=3)
    _check(glp, {"X": x}, runtimes=("onnxruntime",))     # (onnx's reference lacks it)
    indices = np.array([[[[0, 3], [13, 15]], [[16, 19], [29, 30]]]], dtype=np.int64)
    shape = helper.make_tensor("shape", TensorProto.INT64, [4], [1, 2, 5, 5])
    unpool = _model("MaxUnpool", [("X", F32, [1, 2, 2, 2]), ("I", TensorProto.INT64,
                                                              [1, 2, 2, 2])],
                    ["Y"], 11, initializers=[shape], kernel_shape=[2, 2], strides=[2, 2])
    y = _check(unpool, {"X": _rand(1, 2, 2, 2), "I": indices}, runtimes=("reference",))[0]
    assert y.shape == (1, 2, 5, 5)


def test_col2im_and_deform_conv_match_onnxruntime():
    image = helper.make_tensor("image", TensorProto.INT64, [2], [5, 5])
    block = helper.make_tensor("block", TensorProto.INT64, [2], [2, 3])
    col = _model("Col2Im", [("X", F32, [2, 2 * 6, 4])], ["Y"], 18, initializers=[image, block],
                 strides=[2, 2], dilations=[2, 1], pads=[1, 0, 0, 1])
    _check(col, {"X": _rand(2, 12, 4)})
    offsets = np.random.default_rng(3).uniform(-1.5, 1.5, (1, 2 * 4 * 2, 3, 3))
    mask = np.random.default_rng(4).uniform(0, 1, (1, 2 * 4, 3, 3))
    inputs = [("X", F32, [1, 4, 4, 4]), ("W", F32, [2, 2, 2, 2]), ("offset", F32, [1, 16, 3, 3]),
              ("B", F32, [2]), ("mask", F32, [1, 8, 3, 3])]
    feeds = {"X": _rand(1, 4, 4, 4), "W": _rand(2, 2, 2, 2, seed=1),
             "offset": offsets.astype(np.float32), "B": _rand(2, seed=2),
             "mask": mask.astype(np.float32)}
    deform = _model("DeformConv", inputs, ["Y"], 19, group=2, offset_group=2)
    _check(deform, feeds)


def test_normalizations_match_onnxruntime():
    x = _rand(3, 4, 2, 2)
    _check(_model("MeanVarianceNormalization", [("X", F32, [3, 4, 2, 2])], ["Y"], 13,
                  axes=[0, 2]), {"X": x})
    # onnx's reference sums x, not |x|, for p=1 (its node tests hold positive inputs);
    # onnxruntime takes the L1 norm
    _check(_model("LpNormalization", [("X", F32, [3, 4, 2, 2])], ["Y"], 13, axis=1, p=1),
           {"X": x}, runtimes=("onnxruntime",))


# -- errors -------------------------------------------------------------------------------------

@pytest.mark.parametrize("op_type,inputs,opset,attrs,expect", [
    ("Attention", [("Q", [1, 3, 8]), ("K", [1, 3, 8]), ("V", [1, 3, 8])], 23, {},
     "3-D inputs need 'q_num_heads' and 'kv_num_heads'"),
    ("Attention", [("Q", [1, 3, 8]), ("K", [1, 3, 8]), ("V", [1, 3, 8])], 23,
     {"q_num_heads": 3, "kv_num_heads": 2}, "does not split into 3 heads"),
    ("Attention", [("Q", [1, 2, 3, 4]), ("K", [1, 2, 3, 4]), ("V", [1, 2, 3, 4])], 23,
     {"softmax_precision": 7}, "softmax_precision 7 is not a float type"),
    ("Attention", [("Q", [1, 2, 3, 4]), ("K", [1, 2, 3, 4]), ("V", [1, 2, 3, 4]),
                   ("mask", [1, 5, 3])], 23, {}, "does not broadcast"),
    ("RotaryEmbedding", [("X", [1, 2, 3, 6]), ("cos", [1, 3, 1]), ("sin", [1, 3, 1])], 23,
     {"rotary_embedding_dim": 3}, "'rotary_embedding_dim' must be even"),
    ("GroupNormalization", [("X", [2, 6, 3]), ("scale", [6]), ("bias", [6])], 21,
     {"num_groups": 4}, "6 channels do not split into num_groups=4"),
    ("LpNormalization", [("X", [2, 3])], 13, {"p": 3}, "attribute 'p' must be one of 1, 2"),
    ("DeformConv", [("X", [1, 2, 4, 4]), ("W", [2, 2, 2, 2]), ("offset", [1, 6, 3, 3])], 19, {},
     "'offset' must have shape"),
])
def test_malformed_nodes_are_reported_with_the_node(op_type, inputs, opset, attrs, expect):
    model = _model(op_type, [(n, F32, s) for n, s in inputs], ["out"], opset, **attrs)
    with pytest.raises(FlowgradError) as info:
        flowgrad.load(model)
    message = str(info.value)
    assert expect in message and "out" in message and op_type in message, message


def test_recurrent_attention_ops_round_trip():
    """LinearAttention (gated delta rule, grouped heads, a past state), CausalConvWithState
    (a decode step with state and SiLU) and SwiGLU, against onnx's reference and exported
    back (onnxruntime has no kernels for these opset-27/28 ops yet)."""
    rng = np.random.default_rng(7)
    inputs = [("q", F32, [2, 3, 8]), ("k", F32, [2, 3, 4]), ("v", F32, [2, 3, 6]),
              ("past", F32, [2, 2, 2, 3]), ("decay", F32, [2, 3, 2]), ("beta", F32, [2, 3, 2])]
    feeds = {n: _rand(*s, seed=i) for i, (n, _, s) in enumerate(inputs)}
    feeds["decay"] = rng.uniform(-1, -0.1, (2, 3, 2)).astype(np.float32)
    feeds["beta"] = rng.uniform(0.1, 1, (2, 3, 2)).astype(np.float32)
    linear = _model("LinearAttention", inputs, ["out", "present"], 27, q_num_heads=4,
                    kv_num_heads=2, update_rule="gated_delta")
    _check(linear, feeds, runtimes=("reference",))
    conv_inputs = [("x", F32, [2, 3, 1]), ("w", F32, [3, 1, 4]), ("b", F32, [3]),
                   ("state", F32, [2, 3, 3])]
    conv = _model("CausalConvWithState", conv_inputs, ["y", "present"], 27, activation="silu")
    _check(conv, {n: _rand(*s, seed=i) for i, (n, _, s) in enumerate(conv_inputs)},
           runtimes=("reference",))
    swiglu = _model("SwiGLU", [("a", F32, [2, 5]), ("b", F32, [2, 5])], ["y"], 28, alpha=1.702)
    _check(swiglu, {"a": _rand(2, 5), "b": _rand(2, 5, seed=1)}, runtimes=("reference",))


def test_flex_attention_inlines_its_score_mod_and_differentiates():
    """FlexAttention (preview domain) with a soft-capping score_mod and grouped heads: its mod
    becomes flowgrad ops of the graph, matching onnx's reference, and the whole node passes a
    finite-difference check."""
    cap = helper.make_tensor("cap", F32, [], [2.0])
    score_mod = helper.make_graph(
        [helper.make_node("Div", ["s", "cap"], ["t"]), helper.make_node("Tanh", ["t"], ["u"]),
         helper.make_node("Mul", ["u", "cap"], ["s_out"])], "soft_cap",
        [helper.make_tensor_value_info("s", F32, None)],
        [helper.make_tensor_value_info("s_out", F32, None)], initializer=[cap])
    node = helper.make_node("FlexAttention", ["Q", "K", "V"], ["Y"], domain="ai.onnx.preview",
                            score_mod=score_mod, scale=0.5)
    shapes = {"Q": [1, 4, 3, 2], "K": [1, 2, 5, 2], "V": [1, 2, 5, 3]}
    graph = helper.make_graph([node], "flex", [helper.make_tensor_value_info(n, F32, s)
                                               for n, s in shapes.items()],
                              [helper.make_tensor_value_info("Y", F32, [1, 4, 3, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 26),
                                                    helper.make_opsetid("ai.onnx.preview", 1)])
    model.ir_version = 11
    feeds = {n: _rand(*s, seed=i) for i, (n, s) in enumerate(shapes.items())}
    imported = flowgrad.load(model)
    assert "tanh" in {imported.op_of(n).type for n in imported.ops}
    y = flowgrad.compile(imported).forward(feeds)[imported.outputs[0]]
    np.testing.assert_allclose(y, _reference(model, feeds)[0], rtol=1e-4, atol=1e-5)
    checks = check_graph_gradients(imported, feeds=feeds, rtol=1e-3, atol=1e-5)
    assert all(c.ok for c in checks), [(c.name, c.max_abs_error) for c in checks]


def test_causal_conv_weights_train_and_state_stays_an_activation():
    """Stored CausalConvWithState weight and bias are learned params (flowgrad.onnx.trainable);
    the state flows in and out as an activation."""
    w = helper.make_tensor("w", F32, [3, 1, 4], _rand(3, 1, 4).ravel())
    b = helper.make_tensor("b", F32, [3], _rand(3, seed=1).ravel())
    node = helper.make_node("CausalConvWithState", ["x", "w", "b", "state"], ["y", "present"])
    graph = helper.make_graph(
        [node], "conv", [helper.make_tensor_value_info("x", F32, [2, 3, 5]),
                         helper.make_tensor_value_info("state", F32, [2, 3, 3])],
        [helper.make_tensor_value_info("y", F32, [2, 3, 5]),
         helper.make_tensor_value_info("present", F32, [2, 3, 3])], initializer=[w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 27)])
    model.ir_version = 11
    imported = flowgrad.load(model)
    assert set(imported.params) == {"w", "b"}
    assert all(imported.is_trainable(p) for p in imported.params)
