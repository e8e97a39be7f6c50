"""Static versus dynamic batch (flowgrad.onnx.batch): a model whose own shape arithmetic fixes
its batch keeps it, says so, and refuses another batch instead of answering wrongly; the light
ImageNet models pass `check` and round-trip through `convert`; the unsupported-op report names
the nodes."""
from __future__ import annotations

import os

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import flowgrad
from flowgrad.cli import main
from flowgrad.errors import FlowgradError, GraphError
from flowgrad.onnx.conformance import light_models

#: the light models whose Reshape hard-codes batch 1 (all but DenseNet-121 and SqueezeNet)
FIXED = {"bvlc_alexnet", "inception_v1", "inception_v2", "resnet50", "shufflenet", "vgg19",
         "zfnet512"}
LIGHT = {os.path.basename(p)[len("light_"):-len(".onnx")]: p for p in light_models()}


def head(target, batch=1, transpose=False):
    """A detection-style head: a 1x1 conv to 18 channels, then Reshape to ``target`` — with a
    leading 1 the model hard-codes its batch, and with a -1 a batch of 2 would fold into the
    boxes axis without any error."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((18, 2, 1, 1))
                                .astype(np.float32), "head.weight")
    shape = numpy_helper.from_array(np.array(target, np.int64), "target")
    nodes = [helper.make_node("Conv", ["x", "head.weight"], ["c"], name="head/conv")]
    if transpose:    # time-major and back: the batch leaves axis 0 and returns
        nodes += [helper.make_node("Transpose", ["c"], ["ct"], perm=[1, 0, 2, 3]),
                  helper.make_node("Relu", ["ct"], ["cr"]),
                  helper.make_node("Transpose", ["cr"], ["c2"], perm=[1, 0, 2, 3])]
    nodes.append(helper.make_node("Reshape", ["c2" if transpose else "c", "target"], ["boxes"],
                                  name="head/reshape"))
    graph = helper.make_graph(
        nodes, "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 2, 4, 4])],
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, None)], [w, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_a_batch_folded_into_another_axis_fixes_the_batch_and_is_refused():
    g = flowgrad.load(head([1, -1, 6]))
    fixed = g.meta["onnx"]["fixed_batch"]
    assert fixed == {"batch": 1,
                     "reason": "node 'head/reshape' reshapes to a constant shape [1, -1, 6]"}
    assert g.spec_of("x").shape == (1, 2, 4, 4)
    plan = flowgrad.compile(g)
    x = np.random.default_rng(1).standard_normal((2, 2, 4, 4)).astype(np.float32)
    one = plan.forward({"x": x[:1]}, grad=False)["boxes"]
    assert one.shape == (1, 48, 6)
    import onnxruntime as ort
    session = ort.InferenceSession(head([1, -1, 6]).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(one, session.run(None, {"x": x[:1]})[0], rtol=1e-5, atol=1e-6)
    with pytest.raises(FlowgradError, match=r"got \(2, 2, 4, 4\); the model fixes its batch at "
                                            r"1: node 'head/reshape' reshapes to a constant"):
        plan.forward({"x": x}, grad=False)


def test_a_batch_the_model_carries_stays_dynamic():
    for model in (head([0, -1, 6]), head([0, -1, 6], batch="N"),
                  head([0, -1, 6], transpose=True)):
        g = flowgrad.load(model)
        assert "fixed_batch" not in g.meta["onnx"] and g.spec_of("x").shape[0] is None
        plan = flowgrad.compile(g)
        x = np.random.default_rng(2).standard_normal((3, 2, 4, 4)).astype(np.float32)
        many = plan.forward({"x": x}, grad=False)["boxes"]
        assert many.shape == (3, 48, 6)
        np.testing.assert_allclose(many[1:2], plan.forward({"x": x[1:2]}, grad=False)["boxes"],
                                   rtol=1e-6)


def test_a_reshape_that_fails_at_another_batch_fixes_it():
    g = flowgrad.load(head([1, 3, 6, 16]))
    assert g.meta["onnx"]["fixed_batch"]["reason"] == \
        "node 'head/reshape' reshapes to a constant shape [1, 3, 6, 16]"
    assert flowgrad.load(head([1, 3, 6, 16]), dynamic_batch=False).spec_of("x").shape[0] == 1


def test_unsupported_op_report_names_the_nodes():
    nodes = [helper.make_node("Swish", ["x" if i == 0 else f"v{i - 1}"], [f"v{i}"],
                              name=f"block{i}/swish", domain="com.example") for i in range(5)]
    graph = helper.make_graph(
        nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("v4", TensorProto.FLOAT, ["N", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.example", 1)])
    with pytest.raises(GraphError) as err:
        flowgrad.load(model)
    assert ("Swish (domain com.example, opset 1): 5 node(s) ('block0/swish', 'block1/swish', "
            "'block2/swish' and 2 more); no translation") in str(err.value)


def test_convert_leaves_no_file_behind_when_its_check_fails(tmp_path, monkeypatch, capsys):
    import flowgrad.onnx.verify as verify
    model = tmp_path / "head.onnx"
    model.write_bytes(head([0, -1, 6]).SerializeToString())

    def broken(a, b, shapes=None):
        raise FlowgradError("the outputs differ")
    monkeypatch.setattr(verify, "compare_graphs", broken)
    out = tmp_path / "head.yaml"
    assert main(["convert", str(model), str(out)]) == 1
    assert "the outputs differ" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "head.npz").exists()


@pytest.mark.parametrize("name", sorted(LIGHT))
def test_light_model_passes_check(name, capsys):
    """Gradients only on AlexNet (its weights are constants: the input's 2 entries, a few
    forward passes); the others are validated and listed (--no-gradients), to stay fast."""
    flags = ["--elements", "2"] if name == "bvlc_alexnet" else ["--no-gradients"]
    assert main(["check", LIGHT[name], *flags]) == 0
    text = capsys.readouterr().out
    assert ("batch fixed at 1: node 'n" in text) == (name in FIXED)
    if name == "bvlc_alexnet":
        assert "reshapes to a constant shape [1, 9216]" in text
        assert "gradient check passed" in text


@pytest.mark.parametrize("name", sorted(FIXED - {"vgg19"}))
def test_fixed_batch_light_model_round_trips_through_convert(name, tmp_path, capsys):
    """VGG-19 is left out for time: its 548 MB of weights take 25 s to write and read back
    (it converts the same way: `flowgrad convert light_vgg19.onnx vgg.yaml`)."""
    out = tmp_path / f"{name}.yaml"
    assert main(["convert", LIGHT[name], str(out)]) == 0
    text = capsys.readouterr().out
    assert "largest output difference 0" in text and "batch fixed at 1" in text
    assert "batch: 1" in out.read_text()
    back = flowgrad.load(str(out))
    assert back.spec_of(back.inputs[0]).shape[0] == 1


def test_a_model_that_imports_only_at_its_declared_batch_keeps_it():
    """Hardmax along axis 0 needs that axis static: with a free batch the import fails, so
    the declared batch is kept, and said."""
    graph = helper.make_graph(
        [helper.make_node("Hardmax", ["x"], ["y"], axis=0, name="pick")], "h",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    g = flowgrad.load(model)
    assert g.spec_of("x").shape == (2, 3)
    assert g.meta["onnx"]["fixed_batch"]["reason"] == (
        "with a free batch the import fails (node 'pick': error: ONNX node 'pick' (Hardmax, "
        "opset 13): Hardmax needs a static size along its axis)")
    x = np.array([[1, 5, 0], [2, 1, 3]], np.float32)
    np.testing.assert_array_equal(flowgrad.compile(g).forward({"x": x}, grad=False)["y"],
                                  [[0, 1, 0], [1, 0, 1]])


def test_a_minus_one_input_dim_is_a_free_dim():
    """paddle2onnx writes a dynamic axis as dim_value -1 (the PP-OCR models); onnxruntime
    takes it, and so does flowgrad.  Other negative dims are still refused."""
    model = head([0, -1, 6], batch=-1)
    g = flowgrad.load(model)
    assert g.spec_of("x").shape == (None, 2, 4, 4)
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_value = -2
    with pytest.raises(GraphError, match="negative dims"):
        flowgrad.load(model)
