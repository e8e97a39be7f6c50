"""`flowgrad check`'s whole-graph gradient check: it catches a wrong backward, and it does not
call backward's own float64 rounding a mismatch (constant-filled weights, as in onnx's "light"
models, where the true gradient is 0 and backward returns amplified roundoff)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

import flowgrad
from flowgrad.cli import main
from flowgrad.gradcheck import check_graph_gradients
from flowgrad.ops.activations import Tanh


def _equal_logits_model(scale: float) -> onnx.ModelProto:
    """x @ W1 * scale @ W2 -> softmax, with W2 a ConstantOfShape fill (a constant, as in
    the light models): every logit is the same whatever x and
    W1 are, so d(output)/d(x, W1) is exactly 0; backward's zero-sum softmax cotangent, summed
    by W2 and multiplied by ``scale``, comes back as rounding noise of size ~1e-16 * scale."""
    rng = np.random.default_rng(0)
    w1 = helper.make_tensor("W1", TensorProto.FLOAT, [4, 16], rng.standard_normal(64).tolist())
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [16, 8])
    k = helper.make_tensor("k", TensorProto.FLOAT, [], [scale])
    half = helper.make_tensor("half", TensorProto.FLOAT, [1], [0.5])
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["W2"], value=half),
             helper.make_node("MatMul", ["x", "W1"], ["h"]),
             helper.make_node("Mul", ["h", "k"], ["hk"]),
             helper.make_node("MatMul", ["hk", "W2"], ["z"]),
             helper.make_node("Softmax", ["z"], ["y"], axis=-1)]
    graph = helper.make_graph(
        nodes, "equal_logits", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], [w1, shape, k])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_backward_rounding_noise_is_not_a_mismatch(tmp_path, capsys):
    path = tmp_path / "equal_logits.onnx"
    onnx.save(_equal_logits_model(1e14), path)
    checks = {c.name: c for c in check_graph_gradients(flowgrad.load(path), max_elements=8)}
    w1 = checks["W1"]
    assert w1.ok and w1.roundoff_limited and w1.max_abs_error > 1e-6 and w1.noise > 0
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "within backward's rounding noise" in out and "gradient check passed" in out


def test_a_wrong_backward_is_still_a_mismatch(tmp_path, capsys, monkeypatch):
    """Wrong by 10 %: well above the tolerance, and no rounding noise explains it."""
    def wrong(self, ctx, gy):
        (y,) = ctx.saved
        return (1.1 * (1 - y * y) * gy,)
    monkeypatch.setattr(Tanh, "backward", wrong)
    path = tmp_path / "tanh.yaml"
    path.write_text("flowgrad: 1\nname: t\ninputs:\n  x: {shape: [3]}\n"
                    "nodes:\n  y: {op: tanh, in: x}\noutputs: [y]\n")
    (check,) = check_graph_gradients(flowgrad.load(path), max_elements=3)
    assert not check.ok and not check.roundoff_limited and check.max_rel_error > 0.05
    assert main(["check", str(path)]) == 1
    out = capsys.readouterr().out
    assert "MISMATCH" in out and "gradient check FAILED for: x" in out
