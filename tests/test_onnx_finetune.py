"""Fine-tuning imported ONNX models: which stored tensors train (flowgrad.onnx.trainable),
freeze/unfreeze from the API and the CLI, batch norm in evaluation mode while training, and the
classification loss on logits rather than on a softmax output."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import flowgrad
from flowgrad.cli import main
from flowgrad.errors import FlowgradError, GraphError
from flowgrad.onnx.trainable import set_trainable
from flowgrad.train import Trainer, add_classification_loss
from flowgrad.train_config import TrainConfig
from flowgrad.workflows.training import load_trainable, train_and_report

RNG = np.random.default_rng(0)


def arr(shape, scale=0.3):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def const_node(name, value):
    """A weight stored the way some exporters do: a Constant node, not an initializer."""
    return helper.make_node("Constant", [], [name],
                            value=numpy_helper.from_array(np.asarray(value), name))


def model_of(nodes, inputs, outputs, inits=(), opset=17):
    graph = helper.make_graph(nodes, "m", inputs, outputs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def f32(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def yolo_like():
    """A detection head written as exporters write one: a conv (weights as Constant nodes),
    a decoded box with an anchor grid, strides, a 0.5 offset and a factor 2; a LayerNorm
    spelled out with an epsilon (gamma and beta as initializers); an attention-style score with
    a -inf mask; a scalar loss."""
    grid = np.stack(np.meshgrid(np.arange(4), np.arange(4)), -1).reshape(1, 1, 16, 2)
    mask = np.zeros((1, 1, 16, 2), np.float32)
    mask[..., 1, :] = -np.inf
    inits = [numpy_helper.from_array(grid.astype(np.float32), "grid"),
             numpy_helper.from_array(np.array([8.0], np.float32), "stride"),
             numpy_helper.from_array(np.array([[[[10.0, 13.0]], [[16.0, 30.0]],
                                                [[33.0, 23.0]]]], np.float32), "anchor_grid"),
             numpy_helper.from_array(np.array(2.0, np.float32), "two"),
             numpy_helper.from_array(np.array(0.5, np.float32), "half"),
             numpy_helper.from_array(np.array(1e-5, np.float32), "eps"),
             numpy_helper.from_array(mask, "mask"),
             numpy_helper.from_array(np.ones(2, np.float32), "gamma"),
             numpy_helper.from_array(np.zeros(2, np.float32), "beta"),
             numpy_helper.from_array(np.array([0, 3, 2, 16], np.int64), "shape"),
             numpy_helper.from_array(np.array(2.0, np.float32), "p2")]
    nodes = [const_node("W", arr((6, 2, 3, 3))), const_node("B", arr((6,), 0.1)),
             helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Reshape", ["c", "shape"], ["r"]),
             helper.make_node("Transpose", ["r"], ["t"], perm=[0, 1, 3, 2]),
             helper.make_node("Sigmoid", ["t"], ["s"]),
             helper.make_node("Mul", ["s", "two"], ["s2"]),
             helper.make_node("Sub", ["s2", "half"], ["s3"]),
             helper.make_node("Add", ["s3", "grid"], ["xy"]),
             helper.make_node("Mul", ["xy", "stride"], ["xys"]),
             helper.make_node("Mul", ["xys", "anchor_grid"], ["box"]),
             # LayerNorm over the last axis, spelled out
             helper.make_node("ReduceMean", ["box"], ["mu"], axes=[-1]),
             helper.make_node("Sub", ["box", "mu"], ["d"]),
             helper.make_node("Pow", ["d", "p2"], ["d2"]),
             helper.make_node("ReduceMean", ["d2"], ["var"], axes=[-1]),
             helper.make_node("Add", ["var", "eps"], ["ve"]),
             helper.make_node("Sqrt", ["ve"], ["sd"]),
             helper.make_node("Div", ["d", "sd"], ["n"]),
             helper.make_node("Mul", ["n", "gamma"], ["ng"]),
             helper.make_node("Add", ["ng", "beta"], ["ln"]),
             helper.make_node("Add", ["ln", "mask"], ["masked"]),
             helper.make_node("Softmax", ["masked"], ["y"], axis=2),
             helper.make_node("Mul", ["y", "y"], ["yy"]),
             helper.make_node("ReduceSum", ["yy"], ["loss"], keepdims=0)]
    return model_of(nodes, [f32("x", ["N", 2, 4, 4])], [f32("y", ["N", 3, 16, 2]),
                                                        f32("loss", [])], inits)


STRUCTURAL = ["grid", "stride", "anchor_grid", "two", "half", "eps", "mask", "p2"]


def test_layer_weights_train_and_structural_constants_do_not():
    g = flowgrad.load(yolo_like())
    assert {p for p in g.params if g.is_trainable(p)} == {"W", "B", "gamma", "beta"}
    for name in STRUCTURAL:
        assert name not in g.params, name


def test_one_sgd_step_leaves_structural_constants_bit_identical():
    g = flowgrad.load(yolo_like())
    before = {n: g.value_of(n).copy() for n in g.consts}
    assert {g.extra(n, "onnx_name") or n for n in before} >= {"grid", "anchor_grid", "mask"}
    plan = flowgrad.compile(g)
    config = TrainConfig(minimize={"loss": 1.0}, metrics=[],
                         optimizer={"kind": "sgd", "lr": 1e-2})
    trainer = Trainer(plan, config)
    x = RNG.standard_normal((2, 2, 4, 4)).astype(np.float32)
    w0 = plan.params["W"].copy()
    trainer.train_step({"x": x}, lr=1e-2)            # the -inf mask is not blamed
    assert not np.array_equal(plan.params["W"], w0)
    for n, value in before.items():
        np.testing.assert_array_equal(plan.export_graph().value_of(n), value)
    out = plan.forward({"x": x}, grad=False)
    assert out["y"].shape == (2, 3, 16, 2) and np.all(np.isfinite(out["y"]))


def test_freeze_and_unfreeze_at_load_time():
    g = flowgrad.load(yolo_like(), freeze=["*"], unfreeze=["gamma", "grid"])
    assert {p for p in g.params if g.is_trainable(p)} == {"gamma", "grid"}
    assert not g.is_trainable("W") and "W" in g.params
    with pytest.raises(FlowgradError, match="'nothing\\*'"):
        flowgrad.load(yolo_like(), freeze=["nothing*"])


def test_set_trainable_on_any_graph_and_its_errors():
    g = flowgrad.load(yolo_like())
    changed = set_trainable(g, freeze=["*"], unfreeze=["B"])
    assert {p for p in g.params if g.is_trainable(p)} == {"B"} and "W" in changed
    with pytest.raises(FlowgradError, match="matches no param"):
        set_trainable(g, freeze=["conv9*"])
    with pytest.raises(FlowgradError, match="constant"):
        set_trainable(g, unfreeze=["anchor_grid"])


def const_cnn(softmax=None):
    """Conv → BatchNorm → Relu → pool → Gemm, every weight and statistic a Constant node (as
    the OCR exporter wrote them), optionally ending in a Softmax or LogSoftmax."""
    nodes = [const_node("conv.w", arr((4, 1, 3, 3))), const_node("conv.b", arr((4,), 0.1)),
             const_node("bn.scale", np.ones(4, np.float32)),
             const_node("bn.bias", np.zeros(4, np.float32)),
             const_node("bn.mean", np.zeros(4, np.float32)),
             const_node("bn.var", np.ones(4, np.float32)),
             const_node("fc.w", arr((2, 4))), const_node("fc.b", np.zeros(2, np.float32)),
             helper.make_node("Conv", ["x", "conv.w", "conv.b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization",
                              ["c", "bn.scale", "bn.bias", "bn.mean", "bn.var"], ["n"]),
             helper.make_node("Relu", ["n"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fc.w", "fc.b"],
                              ["logits" if softmax else "out"], transB=1)]
    if softmax:
        op, _, identity = softmax.partition("+")     # "Softmax+Identity": as Paddle exports
        nodes.append(helper.make_node(op, ["logits"], ["probs" if identity else "out"], axis=1))
        if identity:
            nodes.append(helper.make_node("Identity", ["probs"], ["out"]))
    return model_of(nodes, [f32("x", ["N", 1, 6, 6])], [f32("out", ["N", 2])])


def test_constant_node_weights_become_params_and_statistics_state():
    g = flowgrad.load(const_cnn())
    assert {p for p in g.params if g.is_trainable(p)} == {"conv.w", "conv.b", "bn.scale",
                                                          "bn.bias", "fc.w", "fc.b"}
    assert {p for p in g.params if not g.is_trainable(p)} == {"bn.mean", "bn.var"}


def data_file(tmp_path, n=96):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, 1, 6, 6)).astype(np.float32)
    label = (x[:, 0, :3].mean(axis=(1, 2)) > x[:, 0, 3:].mean(axis=(1, 2))).astype(np.int64)
    path = str(tmp_path / "data.npz")
    np.savez(path, x=x, label=label)
    return path


def test_bn_eval_keeps_running_statistics_and_bn_train_updates_them():
    graph = add_classification_loss(flowgrad.load(const_cnn()))
    x = RNG.standard_normal((8, 1, 6, 6)).astype(np.float32)
    feeds = {"x": x, "label": np.arange(8) % 2}
    config = TrainConfig(minimize={"loss": 1.0}, metrics=[])
    for bn_eval, same in ((True, True), (False, False), (None, True)):   # None: ONNX -> on
        plan = flowgrad.compile(graph)
        mean0, var0 = plan.params["bn.mean"].copy(), plan.params["bn.var"].copy()
        trainer = Trainer(plan, config, bn_eval=bn_eval)
        trainer.train_step(feeds, lr=0.1)
        assert np.array_equal(plan.params["bn.mean"], mean0) is same
        assert np.array_equal(plan.params["bn.var"], var0) is same
        # the op's own setting is back after the step
        assert not any(plan.graph.op_of(n).use_running_stats for n in plan.graph.ops
                       if plan.graph.op_of(n).type == "batch_norm")



@pytest.mark.parametrize("last", ["Softmax", "Softmax+Identity", "LogSoftmax"])
def test_the_classification_loss_reads_logits(last):
    g = load_trainable(flowgrad.load(const_cnn(last)))
    (source, _), _ = g.input_sources("loss")
    if last.startswith("Softmax"):
        logits = g.resolve("logits")[0]     # the Gemm's output, through its branch
        assert source == logits or g.input_sources(source)[0][0] == logits
        assert "the logits that softmax 'out' turns into probabilities" in g.meta["loss_on"]
    else:
        assert g.op_of(source).type == "log_softmax"
        assert "negative log-likelihood" in g.meta["loss_on"]


def test_a_constant_weight_model_fine_tunes_with_falling_eval_loss(tmp_path):
    data = data_file(tmp_path, 160)
    run = train_and_report(_saved(tmp_path, const_cnn("Softmax")), str(tmp_path / "run"), data,
                           epochs=6, batch_size=16, lr=0.1, validation_split=0.25)
    val = run.history["val_loss"]
    assert val[-1] < val[0], val
    assert run.trainer.bn_eval


def _saved(tmp_path, model):
    path = str(tmp_path / "model.onnx")
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    return path


def test_cli_train_freeze_unfreeze_and_check_lists_trainable(tmp_path, capsys):
    model = _saved(tmp_path, yolo_like())
    assert main(["check", model, "--no-gradients"]) == 0
    assert "trainable params: 4" in capsys.readouterr().out
    cnn = _saved(tmp_path, const_cnn())
    data = data_file(tmp_path)
    out = str(tmp_path / "run")
    assert main(["train", cnn, "--data", data, "--epochs", "1", "--out", out,
                 "--freeze", "*", "--unfreeze", "fc.*", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "2 of 8 params train: fc.w, fc.b" in text
    assert "batch norm in evaluation mode" in text
    assert os.path.exists(os.path.join(out, "checkpoint.npz"))
    with open(os.path.join(out, "history.json")) as f:
        assert len(json.load(f)) == 1
    assert main(["train", cnn, "--data", data, "--epochs", "1", "--out", out, "--force",
                 "--bn-train", "--freeze", "zzz*", "--no-progress"]) == 1
    assert "'zzz*'" in capsys.readouterr().err


def test_a_mask_stays_a_constant_even_when_unfrozen():
    g = flowgrad.load(yolo_like(), unfreeze=["mask", "grid"])
    assert "mask" not in g.params and g.is_trainable("grid")


YAML = """
flowgrad: 1
name: tiny
inputs:
  x: {shape: [2]}
params:
  W: {shape: [2, 2], init: {kind: zeros}}
nodes:
  y: {op: matmul, in: [x, W]}
  loss: {op: mean, in: y}
outputs: [y, loss]
train: {bn_eval: %s, metrics: []}
"""


def test_bn_eval_is_a_key_of_the_train_section(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(YAML % "true")
    graph = flowgrad.load(str(path))
    assert graph.meta["train"].bn_eval is True
    plan = flowgrad.compile(graph)
    assert Trainer(plan).bn_eval and not Trainer(plan, bn_eval=False).bn_eval
    path.write_text(YAML % "3")
    with pytest.raises(GraphError, match="'bn_eval' must be true or false, got 3"):
        flowgrad.load(str(path))
