"""ONNX export: checker-valid models that onnxruntime runs like flowgrad, exact round trips
(YAML -> ONNX -> flowgrad and ONNX -> YAML + npz -> flowgrad), and the export/convert CLI."""
from __future__ import annotations

import glob
import os

import numpy as np
import onnx
import pytest

import flowgrad
from flowgrad.cli import main
from flowgrad.errors import FlowgradError
from flowgrad.onnx.export import export_onnx
from flowgrad.onnx.to_yaml import write_yaml
from flowgrad.gradcheck import random_feeds
from flowgrad.loaders.yaml_loader import load_yaml

ort = pytest.importorskip("onnxruntime")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: graphs whose ops all have an ONNX form (plugins_demo needs its plugins)
GRAPHS = [p for p in sorted(glob.glob(os.path.join(ROOT, "graphs", "*.yaml")))
          if os.path.basename(p) != "plugins_demo.yaml"]

UNEXPORTABLE = """
flowgrad: 1
name: unexportable
inputs:
  x: {shape: [1, 2, 2]}
  t: {shape: [1, 4, 4]}
nodes:
  up: {op: resize, in: x, scales: [1, 1, 2, 2]}
  p: {op: sigmoid, in: up}
  loss: {op: binary_cross_entropy, in: [p, t]}
outputs: [loss]
"""


def _forward(graph, feeds):
    return flowgrad.compile(graph).forward({k: feeds[k] for k in graph.inputs}, grad=False)


@pytest.mark.parametrize("path", GRAPHS, ids=os.path.basename)
def test_yaml_to_onnx_matches_onnxruntime_and_reimports_identically(path):
    graph = flowgrad.load(path)
    proto = export_onnx(graph)
    onnx.checker.check_model(proto, full_check=True)
    feeds = random_feeds(graph, batch=3, dtype=np.float32)
    ours = _forward(graph, feeds)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    theirs = session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})
    for ref, value in zip(graph.outputs, theirs):
        # float32 sums of a deep net's random weights reach ~50: allow rounding at that scale
        scale = max(1.0, float(np.abs(ours[ref]).max()))
        np.testing.assert_allclose(value, ours[ref], rtol=1e-4, atol=1e-5 * scale)
    back = flowgrad.load(proto)
    again = _forward(back, feeds)
    for a, b in zip(graph.outputs, back.outputs):
        np.testing.assert_array_equal(again[b], ours[a])


def test_unexportable_ops_are_listed_together():
    graph = load_yaml("unexportable.yaml", text=UNEXPORTABLE)
    with pytest.raises(FlowgradError) as err:
        export_onnx(graph)
    assert [d.node for d in err.value.diagnostics] == ["up", "loss"]
    assert all("has no ONNX export" in d.message for d in err.value.diagnostics)


def test_export_after_training_carries_the_new_params():
    graph = flowgrad.load(os.path.join(ROOT, "graphs", "digits_mlp.yaml"))
    plan = flowgrad.compile(graph)
    feeds = random_feeds(graph, batch=4, dtype=np.float32)
    plan.forward(feeds)
    grads = plan.backward({"loss": 1.0})
    for name, g in grads.items():
        plan.params[name] -= 0.5 * g
    trained = plan.export_graph()
    back = flowgrad.load(export_onnx(trained))
    np.testing.assert_array_equal(back.value_of("W1"), plan.params["W1"])


def test_convert_writes_yaml_and_weights_that_load_identically(tmp_path):
    from flowgrad.onnx.conformance import light_inputs, light_models
    path = [p for p in light_models() if "squeezenet" in p][0]
    graph = flowgrad.load(path)
    out = tmp_path / "squeezenet.yaml"
    weights = write_yaml(graph, str(out))
    assert os.path.exists(weights) and "weights: squeezenet.npz" in out.read_text()
    back = flowgrad.load(str(out))
    x = light_inputs(onnx.load(path))[0]
    a = _forward(graph, {graph.inputs[0]: x})
    b = _forward(back, {back.inputs[0]: x})
    np.testing.assert_array_equal(a[graph.outputs[0]], b[back.outputs[0]])
    assert set(back.params) == set(graph.params)


def test_cli_export_convert_run_show_check(tmp_path, capsys):
    onnx_path = str(tmp_path / "mlp.onnx")
    yaml_path = str(tmp_path / "mlp.yaml")
    assert main(["export", os.path.join(ROOT, "graphs", "digits_mlp.yaml"), onnx_path,
                 "--verify"]) == 0
    assert "largest absolute difference" in capsys.readouterr().out
    assert main(["convert", onnx_path, yaml_path]) == 0
    assert "largest output difference 0" in capsys.readouterr().out
    x = tmp_path / "x.npy"
    np.save(x, np.ones((2, 64), np.float32))
    assert main(["run", onnx_path, "-i", f"x={x}", "--outputs", "logits"]) == 0
    assert "logits: float32[2, 10]" in capsys.readouterr().out
    assert main(["show", onnx_path]) == 0
    assert "matmul" in capsys.readouterr().out
    assert main(["check", onnx_path]) == 0
    assert main(["convert", os.path.join(ROOT, "graphs", "xor.yaml"), yaml_path]) == 1
