"""ONNX translations through the plugin registry: a plugin op exported in its own domain or as a
model-local function, and imported back with the plugin's translations; clashes; the
per-version declarations of the built-in tables."""
from __future__ import annotations

import os

import numpy as np
import onnx
import pytest

import flowgrad
from flowgrad.errors import GraphError, PluginError
from flowgrad.loaders.yaml_loader import load_yaml
from flowgrad.onnx import Translations
from flowgrad.onnx.export import FUNCTION_DOMAIN, as_function, export_onnx
from flowgrad.plugins import load_plugin_path

ort = pytest.importorskip("onnxruntime")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GRAPH = """
flowgrad: 1
name: plugin_op
inputs:
  x: {shape: [6]}
params:
  W: {shape: [6, 6], init: {kind: glorot_uniform, seed: 1}}
  g: {shape: [6], init: {kind: constant, value: 1.5}}
nodes:
  h: {op: matmul, in: [x, W]}
  y: {op: OP, in: ARGS}
outputs: [y]
"""


def _graph(op: str, args: str, registry):
    return load_yaml("plugin_op.yaml", registry,
                     text=GRAPH.replace("OP", op).replace("ARGS", args))


def _run(graph, x):
    return flowgrad.compile(graph).forward({"x": x}, grad=False)[graph.outputs[0]]


def _op_types(graph):
    return [graph.op_of(n).type for n in graph.ops]


X = np.random.default_rng(0).standard_normal((3, 6)).astype(np.float32)


def test_plugin_op_exports_in_its_own_domain_and_imports_back():
    (rms,) = load_plugin_path(os.path.join(ROOT, "plugins", "rms_norm.py"))
    registry = flowgrad.make_registry(plugins=[rms])
    graph = _graph("rms_norm", "[h, g]", registry)
    proto = export_onnx(graph, registry=registry)
    assert {(o.domain, o.version) for o in proto.opset_import} >= {("com.example", 1)}
    assert [(n.domain, n.op_type) for n in proto.graph.node][-1] == ("com.example", "RMSNorm")
    back = flowgrad.load(proto, registry=registry)
    assert _op_types(back) == _op_types(graph)
    np.testing.assert_array_equal(_run(back, X), _run(graph, X))
    with pytest.raises(GraphError, match=r"RMSNorm \(domain com.example, opset 1\)"):
        flowgrad.load(proto)                           # without the plugin


class Cube(flowgrad.Op):
    """y = scale * x**3: an op of a plugin with no single ONNX counterpart."""

    type = "cube"
    attrs = {"scale": flowgrad.Attr("float", 1.0)}

    def infer(self, x):
        return (x,)

    def forward(self, ctx, x):
        ctx.save(x)
        return (self.scale * x * x * x,)

    def backward(self, ctx, gy):
        (x,) = ctx.saved
        return (3 * self.scale * x * x * gy,)


class CubePlugin:
    """Registers ``cube`` and exports it as a function of standard ONNX ops."""

    T = Translations("cube")

    @staticmethod
    @T.exports("cube")
    @as_function
    def _cube(c):
        dtype = c.model.dtypes.get(c.ins[0], np.float32)
        square = c.node("Mul", [c.ins[0], c.ins[0]])
        cube = c.node("Mul", [square[0], c.ins[0]])
        c.node("Mul", [cube[0], c.const(c.op.scale, dtype)], c.outs)

    @flowgrad.hookimpl
    def flowgrad_register_ops(self, ops):
        ops.add(Cube)

    @flowgrad.hookimpl
    def flowgrad_register_onnx(self, onnx):
        onnx.add(self.T)


def test_plugin_op_exports_as_a_function_onnxruntime_runs_and_imports_back():
    registry = flowgrad.make_registry(plugins=[CubePlugin()])
    graph = load_yaml("cube.yaml", registry, text=GRAPH.replace("OP", "cube").replace(
        "ARGS", "h, scale: 0.5"))
    proto = export_onnx(graph, registry=registry)
    onnx.checker.check_model(proto, full_check=True)
    assert [f.name for f in proto.functions] == ["cube"]
    assert proto.graph.node[-1].domain == FUNCTION_DOMAIN
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    (theirs,) = session.run(None, {"x": X})
    ours = _run(graph, X)
    np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-6)
    back = flowgrad.load(proto, registry=registry)
    assert _op_types(back) == _op_types(graph)
    assert back.op_of(back.ops[-1]).scale == 0.5
    np.testing.assert_array_equal(_run(back, X), ours)


def test_inverse_and_logdet_run_in_onnxruntime_and_import_back():
    graph = flowgrad.load(os.path.join(ROOT, "graphs", "matrix_calculus.yaml"))
    proto = export_onnx(graph, outputs=["Cinv", "logdetC"])
    assert ("com.microsoft", "Inverse") in {(n.domain, n.op_type) for n in proto.graph.node}
    assert [f.name for f in proto.functions] == ["logdet"]
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    ours = flowgrad.compile(graph).forward({"x": X[:, :3]}, outputs=["Cinv", "logdetC"],
                                           grad=False)
    inv, logdet = session.run(None, {})
    np.testing.assert_allclose(inv, ours["Cinv"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logdet, ours["logdetC"], rtol=1e-5, atol=1e-5)
    back = flowgrad.load(proto)
    assert {"inverse", "logdet"} <= set(_op_types(back))
    again = flowgrad.compile(back).forward({}, grad=False)
    np.testing.assert_array_equal(again[back.outputs[0]], ours["Cinv"])
    np.testing.assert_array_equal(again[back.outputs[1]], ours["logdetC"])


class ReluAgain:
    T = Translations("relu again")
    T.same("Relu", "relu")

    @flowgrad.hookimpl
    def flowgrad_register_onnx(self, onnx):
        onnx.add(self.T)


def test_a_plugin_translating_a_built_in_op_again_is_a_clash_naming_both():
    registry = flowgrad.make_registry(plugins=[ReluAgain()])
    with pytest.raises(PluginError, match=r"ai.onnx::Relu.*'flowgrad'.*'ReluAgain'"):
        registry.table("onnx_import")


def test_static_and_state_inputs_are_declared_per_version():
    table = flowgrad.make_registry().table("onnx_import")
    assert table[("", "Tile", 1)].static == {1, 2}
    assert table[("", "Tile", 6)].static == {1}
    assert table[("", "Reshape", 5)].static == frozenset()
    assert table[("", "BatchNormalization", 1)].state == {3, 4}
    assert table[("com.microsoft", "Inverse", 1)].handler is not None


class Broken:
    """A plugin whose translations of ``cube`` fail with a bug (not an ImportProblem)."""

    T = Translations("broken")

    @staticmethod
    @T.imports("Cube", domain="com.example")
    def _import(b, attrs, inputs):
        raise ZeroDivisionError("a bug")

    @staticmethod
    @T.exports("cube")
    def _export(c):
        raise ZeroDivisionError("a bug")

    @flowgrad.hookimpl
    def flowgrad_register_ops(self, ops):
        ops.add(Cube)

    @flowgrad.hookimpl
    def flowgrad_register_onnx(self, onnx):
        onnx.add(self.T)


def test_a_failing_translation_names_its_plugin():
    registry = flowgrad.make_registry(plugins=[Broken()])
    graph = _graph("cube", "h", registry)
    with pytest.raises(PluginError, match=r"exporter of op 'cube' from plugin 'Broken'.*node "
                                          r"'y': ZeroDivisionError: a bug"):
        export_onnx(graph, registry=registry)
    node = onnx.helper.make_node("Cube", ["x"], ["y"], domain="com.example")
    model = onnx.helper.make_model(
        onnx.helper.make_graph([node], "m", [onnx.helper.make_tensor_value_info("x", 1, [2])],
                               [onnx.helper.make_tensor_value_info("y", 1, [2])]),
        opset_imports=[onnx.helper.make_opsetid("", 17),
                       onnx.helper.make_opsetid("com.example", 1)])
    with pytest.raises(PluginError, match=r"import translation of Cube from plugin 'Broken'"):
        flowgrad.load(model, registry=registry)


def test_every_built_in_exporter_is_for_a_registered_op():
    registry = flowgrad.make_registry()
    assert set(registry.table("onnx_export")) <= set(registry.ops)
    assert set(registry.ops) - set(registry.table("onnx_export")) == {
        "branch", "binary_cross_entropy", "resize"}
