"""Backward through imported ONNX models, checked against finite differences (float64).

* every float node test of every claimed op whose forward passes, w.r.t. its float inputs
  and initializers, at the test's own inputs;
* every pytorch-converted and pytorch-operator model (inputs and initializers);
* a small CNN with BatchNormalization, pooling and Gemm built with onnx.helper, whose
  imported graph is then fine-tuned a few steps (the loss goes down).
"""
from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import flowgrad
from flowgrad.gradcheck import check_graph_gradients, random_feeds
from flowgrad.onnx import conformance as C

#: node tests whose inputs sit where the function is not differentiable (finite differences
#: cannot agree there), or whose output length depends on a float input
NOT_SMOOTH = {
    "test_scatternd_min": "updates tie with data (5 = 5, ...): min's kink",
    "test_gridsample_bilinear": "grid on pixel centres (kinks)",
    "test_gridsample_aligncorners_true": "grid on pixel centres (kinks)",
    "test_gridsample_bilinear_align_corners_1_additional_1": "grid on pixel centres (kinks)",
    "test_gridsample_volumetric_bilinear_align_corners_0": "grid on pixel centres (kinks)",
    "test_gridsample_volumetric_bilinear_align_corners_1": "grid on pixel centres (kinks)",
    "test_gridsample_nearest": "grid halfway between pixels (jumps)",
    "test_gridsample_nearest_align_corners_0_additional_1": "grid halfway between pixels (jumps)",
    "test_gridsample_nearest_align_corners_1_additional_1": "grid halfway between pixels (jumps)",
    "test_gridsample_volumetric_nearest_align_corners_0": "grid halfway between pixels (jumps)",
    "test_gridsample_volumetric_nearest_align_corners_1": "grid halfway between pixels (jumps)",
    "test_elu_example": "x contains 0, where elu's derivative jumps",
    "test_leakyrelu_example": "x contains 0, where leaky_relu's derivative jumps",
    "test_selu_example": "x contains 0, where selu's derivative jumps",
    "test_floor_example": "floor jumps at the integers in x",
    "test_round": "x holds halves, where round jumps",
    "test_thresholdedrelu_example": "x holds alpha, where thresholded_relu jumps",
    "test_reduce_min_default_axes_keepdims_example": "tied minima",
    "test_maxpool_3d_dilations": "tied maxima in the window",
    "test_maxpool_3d_dilations_use_ref_impl": "tied maxima in the window",
    "test_pow": "x^y with x near 0 and y < 0: central differences are inaccurate",
    "test_range_float_type_positive_delta": "the output length depends on start",
    "test_range_float16_type_positive_delta": "the output length depends on start",
    "test_acosh_example": "x contains 1, the end of acosh's domain (infinite derivative)",
    "test_l2normalization_axis_0": "a column of x is all zeros: its norm is 0, where the "
                                   "normalised value jumps",
    # zero offsets put the sampling points on whole pixel coordinates, where bilinear
    # interpolation has kinks (checked at fractional offsets in tests/cases/conv.py)
    **{f"test_{name}": "offsets of 0: sampling points on the interpolation's kinks"
       for name in ("basic_deform_conv_with_padding", "basic_deform_conv_without_padding",
                    "deform_conv_with_mask_bias", "deform_conv_with_multiple_offset_groups")},
}


@pytest.fixture(scope="module")
def gradient_results():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return C.by_group(C.gradient_results(C.CLAIMED_OPS))


@pytest.mark.parametrize("op", C.CLAIMED_OPS)
def test_backward_on_node_tests(op, gradient_results):
    bad = {r.name: r.message for r in gradient_results.get(op, []) if r.status == "fail"
           and r.name not in NOT_SMOOTH}
    assert not bad, "\n".join(f"{k}: {v}" for k, v in bad.items())


def test_most_node_tests_are_gradient_checked(gradient_results):
    checked = sum(r.status != "excluded" for rs in gradient_results.values() for r in rs)
    assert checked >= 350


MODEL_DIRS = [d for kind in ("pytorch-converted", "pytorch-operator")
              for d in C.model_dirs(kind)]


@pytest.mark.parametrize("case_dir", MODEL_DIRS, ids=os.path.basename)
def test_backward_on_pytorch_models(case_dir):
    graph = flowgrad.load(os.path.join(case_dir, "model.onnx"), dynamic_batch=False)
    feeds = random_feeds(graph, seed=1)
    if os.path.basename(case_dir) in ("test_operator_pow", "test_operator_sqrt"):
        feeds = {k: np.abs(v) + 0.5 for k, v in feeds.items()}      # stay in the domain
    checks = check_graph_gradients(graph, feeds=feeds, max_elements=4, rtol=1e-3, atol=1e-5)
    floats = [n for n in graph.inputs if graph.spec_of(n).dtype.kind == "f"]
    assert len(checks) == len(floats) + sum(graph.is_trainable(p) for p in graph.params)
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]


def small_cnn():
    rng = np.random.default_rng(0)

    def init(name, shape, scale=0.3):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32),
                                       name)
    inits = [init("W1", (4, 1, 3, 3)), init("b1", (4,)), init("gamma", (4,), 1.0),
             init("beta", (4,)), numpy_helper.from_array(np.zeros(4, np.float32), "mean"),
             numpy_helper.from_array(np.ones(4, np.float32), "var"), init("W2", (3, 4)),
             init("b2", (3,))]
    nodes = [helper.make_node("Conv", ["x", "W1", "b1"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"],
                              ["n"]),
             helper.make_node("Relu", ["n"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("GlobalAveragePool", ["p"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "W2", "b2"], ["logits"], transB=1)]
    graph = helper.make_graph(nodes, "cnn",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                             ["N", 1, 6, 6])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                                             ["N", 3])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_backward_through_imported_cnn_and_fine_tune():
    graph = flowgrad.load(small_cnn())
    checks = check_graph_gradients(graph, max_elements=6, rtol=1e-3, atol=1e-6)
    assert {c.name for c in checks} == {"x", "W1", "b1", "gamma", "beta", "W2", "b2"}
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]

    # fine-tune: attach a loss to the imported logits and take a few SGD steps
    from flowgrad.ops.losses import SoftmaxCrossEntropy
    from flowgrad.op import Spec
    g = graph.copy()
    g.add_input("label", Spec((None,), np.int64))
    g.add_op("loss", SoftmaxCrossEntropy())
    g.connect(g.resolve(graph.outputs[0])[0], 0, "loss", 0)
    g.connect("label", 0, "loss", 1)
    g.outputs.append("loss")
    plan = flowgrad.compile(flowgrad.prepare(g))
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 1, 6, 6)).astype(np.float32)
    y = rng.integers(0, 3, 8)
    losses = []
    for _ in range(30):
        out = plan.forward({"x": x, "label": y})
        losses.append(float(out["loss"]))
        for name, grad in plan.backward({"loss": 1.0}).items():
            plan.params[name] -= 0.2 * grad
    assert losses[-1] < 0.7 * losses[0]
