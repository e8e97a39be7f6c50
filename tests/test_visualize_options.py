"""visualize's render options: thresholds, objective values and penalties reported apart,
the warning for an objective that never moves, model preprocessing, input_shape for free
dimensions, parameterization factories."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import flowgrad
from flowgrad.errors import FlowgradError
from flowgrad.visualize import (PREPROCESS_PRESETS, InactiveObjectiveWarning, LowRes, Preprocess,
                                apply_penalties, save_outputs, visualize)

RNG = np.random.default_rng(5)

DENSE = """
flowgrad: 1
name: gate
inputs: {x: {shape: [3, 2, 2]}}
params:
  W: {init: {kind: value, value: [[-1, 1, 0.5], [-1, -1, 0.2], [-1, 1, -0.3], [-1, -1, 0.1],
                                   [-1, 1, 0.4], [-1, -1, -0.2], [-1, 1, 0.3], [-1, -1, 0.6],
                                   [-1, 1, -0.1], [-1, -1, 0.2], [-1, 1, 0.5], [-1, -1, -0.4]]}}
nodes:
  flat: {op: flatten, in: x}
  z: {op: matmul, in: [flat, W]}
  h: {op: relu, in: z}
outputs: [h]
"""


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    """A 3×2×2 input, three units; unit 0 is relu(-sum x): off for every image in (0, 1)."""
    path = tmp_path_factory.mktemp("graphs") / "gate.yaml"
    path.write_text(DENSE)
    return flowgrad.compile(flowgrad.load(str(path)), dtype="float64")


def test_thresholds_keep_the_images_after_those_steps(plan, tmp_path):
    result = visualize(plan, ["z[1]", "z[2]"], thresholds=(2, 5), transforms=None)
    assert len(result.values) == 5 and [k for k, _ in result.snapshots] == [2, 5]
    np.testing.assert_array_equal(result.at(5), result.views)
    shorter = visualize(plan, ["z[1]", "z[2]"], steps=2)
    np.testing.assert_array_equal(result.at(2), shorter.views)      # the image after 2 steps
    written = save_outputs(result, str(tmp_path / "t.png"))
    assert [p.rsplit("/", 1)[1] for p in written] == ["t.png", "t.npy", "t_step2.png",
                                                      "t_step5.png"]
    with pytest.raises(FlowgradError, match="beyond the 3 steps"):
        visualize(plan, ["z[1]"], steps=3, thresholds=(4,))
    with pytest.raises(FlowgradError, match="no images kept at step 3"):
        result.at(3)


def test_values_and_penalties_are_reported_apart(plan):
    seen = {}
    penalties = {"l2": 3.0, "tv": 2.0}
    result = visualize(plan, ["z[1]", "-z[2]"], steps=4, penalties=penalties, penalty_center=0.5,
                       callback=lambda step, x, total: seen.update(x=x.copy(), total=total))
    x = seen["x"]                                   # the image the last step evaluated
    z = x.reshape(2, -1) @ plan.params["W"]
    np.testing.assert_allclose(result.values[-1], [z[0, 1], -z[1, 2]], rtol=1e-12)
    pen, _ = apply_penalties(x, penalties, 0.5)
    np.testing.assert_allclose(result.penalties[-1], pen, rtol=1e-12)
    np.testing.assert_allclose(seen["total"], result.values[-1] - pen, rtol=1e-12)
    captions = result.captions()
    assert captions[0] == f"z[1]\n= {z[0, 1]:.3g}\npenalties {pen[0]:.3g}"
    plain = visualize(plan, ["z[1]"], steps=2)
    assert plain.captions() == [f"z[1]\n= {plain.values[-1][0]:.3g}"]


def test_an_objective_that_never_moves_is_named(plan):
    with pytest.warns(InactiveObjectiveWarning, match=r"h\[0\]: the gradient of this objective"):
        result = visualize(plan, ["h[0]", "h[2]"], steps=6)
    assert result.inactive == ["h[0]"]
    start = visualize(plan, ["h[0]", "h[2]"], steps=0)
    np.testing.assert_array_equal(result.views[0], start.views[0])      # never moved
    assert not np.array_equal(result.views[1], start.views[1])


@pytest.mark.parametrize("name", ["imagenet", "imagenet_caffe", "inception"])
def test_preprocess_presets_and_backward(name):
    pre = PREPROCESS_PRESETS[name]
    x = RNG.uniform(size=(2, 3, 4, 5))
    y, back = pre.apply(x)
    low, high = pre.value_range
    model = low + (high - low) * x
    if pre.channel_order == "BGR":
        model = model[:, ::-1]
    mean = np.broadcast_to(np.array(pre.mean), (3,))[None, :, None, None]
    std = np.broadcast_to(np.array(pre.std), (3,))[None, :, None, None]
    np.testing.assert_allclose(y, (model - mean) / std, rtol=1e-12)
    g = RNG.normal(size=y.shape)
    dx = RNG.normal(size=x.shape)
    assert np.vdot(pre.apply(x + dx)[0] - y, g) == pytest.approx(np.vdot(dx, back(g)))


def test_imagenet_values():
    y, _ = PREPROCESS_PRESETS["imagenet"].apply(np.full((1, 3, 1, 1), 0.5))
    np.testing.assert_allclose(y.ravel(), [(0.5 - 0.485) / 0.229, (0.5 - 0.456) / 0.224,
                                           (0.5 - 0.406) / 0.225])
    caffe, _ = PREPROCESS_PRESETS["imagenet_caffe"].apply(np.array([1.0, 0.0, 0.0])
                                                           .reshape(1, 3, 1, 1))
    np.testing.assert_allclose(caffe.ravel(), [-103.939, -116.779, 255 - 123.68])  # B, G, R
    with pytest.raises(FlowgradError, match="BGR or RGB|RGB or BGR"):
        Preprocess(channel_order="GBR")


def test_the_network_sees_the_preprocessed_image(plan):
    seen = {}
    pre = Preprocess(mean=(10.0, 20.0, 30.0), std=(2.0,), channel_order="BGR",
                     value_range=(0.0, 255.0))
    result = visualize(plan, ["z[1]"], steps=3, preprocess=pre,
                       callback=lambda step, x, total: seen.update(x=x.copy()))
    fed, _ = pre.apply(seen["x"])
    z = fed.reshape(1, -1) @ plan.params["W"]
    np.testing.assert_allclose(result.values[-1], z[:, 1], rtol=1e-12)
    with pytest.raises(FlowgradError, match="unknown preprocessing 'imagenett'; did you mean"):
        visualize(plan, ["z[1]"], steps=1, preprocess="imagenett")


def free_model(path) -> str:
    weights = numpy_helper.from_array(RNG.normal(size=(4, 3, 3, 3)).astype(np.float32), "K")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "K"], ["conv"], pads=[1, 1, 1, 1])], "free",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("conv", TensorProto.FLOAT, ["N", 4, "H", "W"])],
        [weights])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def test_input_shape_for_free_dimensions(tmp_path):
    plan = flowgrad.compile(flowgrad.load(free_model(str(tmp_path / "free.onnx"))))
    with pytest.raises(FlowgradError, match=r"free dimensions \(3, None, None\): pass "
                                            r"input_shape"):
        visualize(plan, ["channel(conv, 0)"], steps=1)
    with pytest.raises(FlowgradError, match="does not fit"):
        visualize(plan, ["channel(conv, 0)"], steps=1, input_shape=(1, 9, 9))
    result = visualize(plan, ["channel(conv, 0)", "conv[2, 1, 7]"], steps=3,
                       input_shape=(3, 6, 9), preprocess="imagenet")
    assert result.images.shape == (2, 3, 6, 9)
    assert np.all(np.isfinite(result.values[-1]))


def test_parameterization_factories_and_seeds(plan):
    def factory(shape, sd, decay):
        return LowRes(shape, factor=2, sd=sd)
    a = visualize(plan, ["z[1]", "z[2]"], steps=3, param=factory, seed=4)
    b = visualize(plan, ["z[1]", "z[2]"], steps=3, param=factory, seed=4)
    np.testing.assert_array_equal(a.views, b.views)
    # a factor-2 tensor on a 2×2 image is one value per channel: flat channels
    assert np.ptp(a.views, axis=(2, 3)).max() == 0
    cppn = visualize(plan, ["z[1]"], steps=3, param="cppn")
    assert cppn.views.shape == (1, 3, 2, 2)
