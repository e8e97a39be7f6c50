"""Inputs with free dims other than the batch (an image's height and width, a text line's
width): declared with ``null`` in YAML, written so by ``convert``, exported as their own
``dim_param``s, and given real sizes for the random comparisons with ``--shape``."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import flowgrad
from flowgrad.cli import main


def _pooling_model() -> onnx.ModelProto:
    """Conv 3x3 -> MaxPool 4x4 -> global average -> flatten, on x: [N, 2, H, W] with H and W
    free: at the comparisons' default size 2 the pool's window does not fit."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 2, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("MaxPool", ["c"], ["p"], kernel_shape=[4, 4], strides=[4, 4]),
             helper.make_node("GlobalAveragePool", ["p"], ["g"]),
             helper.make_node("Flatten", ["g"], ["y"])]
    graph = helper.make_graph(
        nodes, "pooling",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_yaml_declares_free_dims_and_runs_any_size(tmp_path):
    path = tmp_path / "free.yaml"
    path.write_text("flowgrad: 1\nname: free\ninputs:\n  x: {shape: [3, null, null]}\n"
                    "nodes:\n  s: {op: reduce_sum, in: x, axes: [2, 3], keepdims: false}\n"
                    "outputs: [s]\n")
    graph = flowgrad.load(path)
    assert graph.spec_of("x").shape == (None, 3, None, None)
    net = flowgrad.compile(graph, dtype="float64")
    for shape in [(1, 3, 5, 7), (2, 3, 2, 9)]:
        x = np.random.default_rng(0).standard_normal(shape)
        np.testing.assert_allclose(net.forward({"x": x})["s"], x.sum(axis=(2, 3)))
        grads = net.backward({"s": np.ones((shape[0], 3))}, wrt=["x"])
        np.testing.assert_array_equal(grads["x"], np.ones(shape))


def test_a_bad_shape_is_shown_as_written_with_its_nulls(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("flowgrad: 1\nname: bad\ninputs:\n  x: {shape: [3, null, -4]}\n"
                    "nodes:\n  y: {op: relu, in: x}\noutputs: [y]\n")
    assert main(["check", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:4:14: error:" in err and "got [3, null, -4]" in err


def test_convert_and_export_keep_free_dims(tmp_path, capsys):
    model = tmp_path / "pooling.onnx"
    onnx.save(_pooling_model(), model)
    out = tmp_path / "pooling.yaml"
    # the comparison's random batch gives every free dim 2: the 4x4 pool cannot take it, and
    # the error says how to give real sizes (and leaves no files behind)
    assert main(["convert", str(model), str(out)]) == 1
    err = capsys.readouterr().err
    assert "input 'x' is [?, 2, ?, ?]; give real sizes with --shape x=D,D,..." in err
    assert not out.exists() and not out.with_suffix(".npz").exists()
    assert main(["convert", str(model), str(out), "--shape", "x=1,2,8,12"]) == 0
    assert "largest output difference 0" in capsys.readouterr().out
    assert "x: {shape: [2, null, null]}" in out.read_text()

    graph = flowgrad.load(out)
    net = flowgrad.compile(graph)
    session = ort.InferenceSession(model.read_bytes(), providers=["CPUExecutionProvider"])
    for shape in [(1, 2, 8, 12), (3, 2, 16, 4)]:
        x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
        np.testing.assert_allclose(net.forward({"x": x}, grad=False)["y"],
                                   session.run(None, {"x": x})[0], rtol=1e-5, atol=1e-6)

    exported = tmp_path / "back.onnx"
    assert main(["export", str(out), str(exported), "--verify", "--shape", "x=2,2,8,8"]) == 0
    assert "onnxruntime vs flowgrad: largest absolute difference" in capsys.readouterr().out
    dims = [d.dim_param or d.dim_value
            for d in onnx.load(exported).graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", 2, "x_2", "x_3"]        # height and width are not tied to each other


@pytest.mark.parametrize("flag, message", [
    ("x=1,3,8,8", "--shape x: [1, 3, 8, 8] does not fit the input's declared shape [?, 2, ?, ?]"),
    ("y=1,2,8,8", "--shape y: the graph has no input 'y' (inputs: x)"),
    ("x=1,2,eight,8", "--shape expects NAME=D,D,... with positive sizes, got 'x=1,2,eight,8'"),
])
def test_convert_shape_flag_mistakes(tmp_path, capsys, flag, message):
    model = tmp_path / "pooling.onnx"
    onnx.save(_pooling_model(), model)
    out = tmp_path / "pooling.yaml"
    assert main(["convert", str(model), str(out), "--shape", flag]) == 1
    assert message in capsys.readouterr().err
    assert not out.exists()
