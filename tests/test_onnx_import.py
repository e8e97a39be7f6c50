"""ONNX import: sources, params vs constants, folding, dynamic batch, versions, errors, hooks,
external data."""
from __future__ import annotations


import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import flowgrad
from flowgrad.errors import GraphError
from flowgrad.hookspecs import hookimpl
from flowgrad.onnx import Translations


def make_model(nodes, inputs, outputs, initializers=(), opset=17, **kw):
    graph = helper.make_graph(nodes, "t", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], **kw)
    model.ir_version = 8
    return model


def tensor(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def mlp(batch="N"):
    rng = np.random.default_rng(0)
    W = rng.standard_normal((4, 3)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    return make_model(
        [helper.make_node("Gemm", ["x", "W", "b"], ["h"], name="fc/1"),
         helper.make_node("Relu", ["h"], ["y:0"], name="relu.1")],
        [tensor("x", [batch, 4])], [tensor("y:0", [batch, 3])], [init("W", W), init("b", b)])


def run(graph, feeds):
    return flowgrad.compile(graph).forward(feeds, grad=False)


def test_load_from_path_bytes_and_proto(tmp_path):
    model = mlp()
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    expect = np.maximum(x @ numpy_helper.to_array(model.graph.initializer[0])
                        + numpy_helper.to_array(model.graph.initializer[1]), 0)
    for source in (str(path), path, model.SerializeToString(), model):
        g = flowgrad.load(source)
        (out,) = run(g, {"x": x}).values()
        np.testing.assert_allclose(out, expect, rtol=1e-5, atol=1e-6)


def test_names_are_the_models_own():
    """Values keep the model's names (tests/test_onnx_names.py has the whole story); the ONNX
    node's name and op type stay in the node's data."""
    g = flowgrad.load(mlp())
    assert g.outputs == ["y:0"]
    assert g.meta["onnx"]["outputs"] == {"y:0": "y:0"}
    assert g.extra("y:0", "onnx_name") == "relu.1" and g.extra("y:0", "onnx_op") == "Relu"
    assert {"x", "W", "b", "h", "y:0"} <= set(g.dag.nodes)


def test_norm_weights_train_statistics_are_state_and_structural_constants_stay():
    """BN scale and shift train, its statistics become non-trainable state; a Mul factor on
    the raw input is structural (a constant: flowgrad.onnx.trainable, tests in
    test_onnx_finetune.py), and an integer initializer (a shape) is a constant."""
    scale = init("scale", np.full((1, 2, 1, 1), 2.0, np.float32))
    bn = [init(n, np.ones(2, np.float32) * v) for n, v in
          (("g", 1.0), ("beta", 0.0), ("mean", 0.5), ("var", 2.0))]
    shape = init("shape", np.array([0, -1], np.int64))
    model = make_model(
        [helper.make_node("Mul", ["x", "scale"], ["m"]),
         helper.make_node("BatchNormalization", ["m", "g", "beta", "mean", "var"], ["n"]),
         helper.make_node("Reshape", ["n", "shape"], ["y"])],
        [tensor("x", ["N", 2, 3, 3])], [tensor("y", ["N", 18])], [scale, shape] + bn)
    g = flowgrad.load(model)
    trainable = {n for n in g.params if g.is_trainable(n)}
    assert trainable == {"g", "beta"}
    assert {n for n in g.params if not g.is_trainable(n)} == {"mean", "var"}
    assert "shape" not in g.params and "scale" in g.consts
    plan = flowgrad.compile(g)
    x = np.ones((2, 2, 3, 3), np.float32)
    plan.forward({"x": x})
    grads = plan.backward({"y": np.ones((2, 18), np.float32)})
    assert set(grads) == {"g", "beta"}


def shape_chain_model(batch):
    """y = reshape(x, [shape(x)[0], -1]) written the way exporters do (Shape/Gather/...)."""
    return make_model(
        [helper.make_node("Shape", ["x"], ["s"]),
         helper.make_node("Constant", [], ["zero"], value=init("zero", np.array(0, np.int64))),
         helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
         helper.make_node("Unsqueeze", ["n", "axes"], ["n1"]),
         helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
         helper.make_node("Reshape", ["x", "target"], ["y"])],
        [tensor("x", [batch, 2, 3])], [tensor("y", [batch, 6])],
        [init("axes", np.array([0], np.int64)), init("minus1", np.array([-1], np.int64))])


def test_shape_arithmetic_on_static_shapes_folds_away():
    g = flowgrad.load(shape_chain_model(4), dynamic_batch=False)
    assert [g.op_of(n).type for n in g.ops] == ["reshape"]
    assert not g.consts and not g.params


def test_dynamic_batch_shape_chain_runs_per_batch():
    g = flowgrad.load(shape_chain_model("N"))
    types = {g.op_of(n).type for n in g.ops}
    assert "shape" in types and "reshape" in types
    plan = flowgrad.compile(g)
    for n in (1, 2, 5):
        x = np.arange(n * 6, dtype=np.float32).reshape(n, 2, 3)
        np.testing.assert_array_equal(plan.forward({"x": x}, grad=False)["y"], x.reshape(n, 6))


def test_static_batch_model_runs_other_batches_by_default():
    g = flowgrad.load(mlp(batch=1))
    x = np.ones((3, 4), np.float32)
    assert run(g, {"x": x})["y:0"].shape == (3, 3)


def test_unsupported_ops_reported_together():
    model = make_model(
        [helper.make_node("StringNormalizer", ["x"], ["a"]),
         helper.make_node("Swish", ["a"], ["b"], domain="com.example"),
         helper.make_node("StringNormalizer", ["b"], ["y"])],
        [tensor("x", ["N", 3])], [tensor("y", ["N", 3])])
    model.opset_import.append(helper.make_opsetid("com.example", 3))
    with pytest.raises(GraphError) as err:
        flowgrad.load(model)
    text = str(err.value)
    assert "2 unsupported op(s)" in text
    assert "StringNormalizer (domain ai.onnx, opset 17): 2 node(s) ('a', 'y')" in text
    assert "Swish (domain com.example, opset 3): 1 node(s)" in text


def test_translation_errors_name_the_onnx_node_and_type():
    model = make_model(
        [helper.make_node("Hardmax", ["x"], ["y"], name="hard/1", axis=1)],
        [tensor("x", ["N", "C"])], [tensor("y", ["N", "C"])])
    with pytest.raises(GraphError) as err:
        flowgrad.load(model)
    assert "ONNX node 'hard/1' (Hardmax" in str(err.value)
    assert err.value.diagnostics[0].node == "hard/1"      # as the model names it


class SwishPlugin:
    """Maps com.example::Swish (x * sigmoid(x)) onto flowgrad's mul and sigmoid."""

    @hookimpl
    def flowgrad_register_onnx(self, onnx):
        T = Translations("swish")

        @T.imports("Swish", domain="com.example")
        def swish(b, attrs, inputs):
            x = inputs[0]
            s = b.op("sigmoid", [x])[0]
            return b.final("mul", [x, s])
        onnx.add(T)


def test_custom_domain_hook():
    model = make_model([helper.make_node("Swish", ["x"], ["y"], domain="com.example")],
                       [tensor("x", ["N", 3])], [tensor("y", ["N", 3])])
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(GraphError, match="Swish"):
        flowgrad.load(model)
    registry = flowgrad.make_registry(plugins=[SwishPlugin()])
    g = flowgrad.load(model, registry=registry)
    x = np.linspace(-3, 3, 6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_allclose(run(g, {"x": x})["y"], x / (1 + np.exp(-x)), rtol=1e-6)


def test_external_data_loaded_and_escapes_refused(tmp_path):
    model = mlp()
    W = numpy_helper.to_array(model.graph.initializer[0])   # saving moves the data out
    folder = tmp_path / "model"
    folder.mkdir()
    path = folder / "m.onnx"
    onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    g = flowgrad.load(str(path))
    np.testing.assert_array_equal(g.value_of("W"), W)
    for location in ("../outside.bin", str(tmp_path / "abs.bin")):
        bad = onnx.load(path, load_external_data=False)
        for t in bad.graph.initializer:
            for entry in t.external_data:
                if entry.key == "location":
                    entry.value = location
        (tmp_path / "outside.bin").write_bytes(b"\0" * 64)
        (tmp_path / "abs.bin").write_bytes(b"\0" * 64)
        onnx.save(bad, folder / "bad.onnx")
        with pytest.raises(GraphError, match="outside the model's folder"):
            flowgrad.load(str(folder / "bad.onnx"))


def test_reshape_versions_attribute_and_input():
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    old = make_model([helper.make_node("Reshape", ["x"], ["y"], shape=[0, 3, 2])],
                     [tensor("x", ["N", 6])], [tensor("y", ["N", 3, 2])], opset=4)
    new = make_model([helper.make_node("Reshape", ["x", "s"], ["y"])],
                     [tensor("x", ["N", 6])], [tensor("y", ["N", 3, 2])],
                     [init("s", np.array([0, 3, 2], np.int64))], opset=13)
    for model in (old, new):
        np.testing.assert_array_equal(run(flowgrad.load(model), {"x": x})["y"],
                                      x.reshape(2, 3, 2))


@pytest.mark.parametrize("opset", [11, 13])
def test_softmax_axis_semantics_by_version(opset):
    """Before opset 13, Softmax(axis=1) on (N, 2, 3) normalises over the flattened 2*3 values."""
    x = np.random.default_rng(0).standard_normal((2, 2, 3)).astype(np.float32)
    model = make_model([helper.make_node("Softmax", ["x"], ["y"], axis=1)],
                       [tensor("x", ["N", 2, 3])], [tensor("y", ["N", 2, 3])], opset=opset)
    y = run(flowgrad.load(model), {"x": x})["y"]
    if opset < 13:
        flat = x.reshape(2, 6)
        e = np.exp(flat - flat.max(1, keepdims=True))
        expect = (e / e.sum(1, keepdims=True)).reshape(2, 2, 3)
    else:
        e = np.exp(x - x.max(1, keepdims=True))
        expect = e / e.sum(1, keepdims=True)
    np.testing.assert_allclose(y, expect, rtol=1e-5)


def test_old_opset_is_normalised_by_version_converter():
    model = make_model([helper.make_node("Relu", ["x"], ["r"]),
                        helper.make_node("Sum", ["r", "x"], ["y"])],
                       [tensor("x", ["N", 3])], [tensor("y", ["N", 3])], opset=5)
    model.ir_version = 3
    g = flowgrad.load(model)
    assert g.meta["onnx"]["source_opset"][""] == 5 and g.meta["onnx"]["opset"][""] == 7
    x = np.array([[-1.0, 0.5, 2.0]], np.float32)
    np.testing.assert_array_equal(run(g, {"x": x})["y"], np.maximum(x, 0) + x)


def test_legacy_broadcast_where_the_converter_fails():
    """onnx's version_converter rejects this opset-6 Add(broadcast=1, axis=1); the opset-1
    translation aligns b with axis 1 itself."""
    model = make_model([helper.make_node("Add", ["x", "b"], ["y"], broadcast=1, axis=1)],
                       [tensor("x", [2, 3, 4])], [tensor("y", [2, 3, 4])],
                       [init("b", np.arange(3, dtype=np.float32))], opset=6)
    g = flowgrad.load(model)
    x = np.zeros((2, 3, 4), np.float32)
    np.testing.assert_array_equal(run(g, {"x": x})["y"], np.arange(3.0)[None, :, None]
                                  + x)


def test_unused_dropout_mask_is_fine_and_dropout_trains():
    model = make_model([helper.make_node("Dropout", ["x", "r"], ["y", "mask"])],
                       [tensor("x", ["N", 100])], [tensor("y", ["N", 100])],
                       [init("r", np.array(0.5, np.float32))])
    g = flowgrad.load(model)
    plan = flowgrad.compile(g)
    x = np.ones((4, 100), np.float32)
    np.testing.assert_array_equal(plan.forward({"x": x}, grad=False)["y"], x)
    plan.train()
    assert (plan.forward({"x": x}, grad=False)["y"] == 0).any()
