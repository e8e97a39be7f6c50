"""Names as the model wrote them (issue 15, item 6), used the way a user uses them.

An exporter's names — PyTorch's ``input.1``, ``0.weight``, ``onnx::Conv_12``, Paddle's
``save_infer_model/scale_0.tmp_1``, a TensorFlow-style ``y:0`` — are what users read in Netron,
onnxruntime or a ``state_dict``.  After import they name the inputs, params, outputs and
gradients in every dictionary the API returns, every CLI flag, checkpoints and visualize
references; ``convert`` keeps them as YAML ``aliases:``; export writes them back.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import flowgrad
from flowgrad.cli import main
from flowgrad.errors import FlowgradError, GraphError
from flowgrad.onnx.export import export_onnx
from flowgrad.onnx.to_yaml import write_yaml
from flowgrad.render import to_text

OUT = "save_infer_model/scale_0.tmp_1"
CONV = "layer/conv_1:3"          # '/' and ':' in one name (no channel suffix: see visualize)


def _model(nodes, inputs, outputs, inits):
    graph = helper.make_graph(nodes, "names", inputs, outputs,
                              initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def cnn() -> onnx.ModelProto:
    """A PyTorch-style CNN on 8x8 images: conv -> relu -> pool -> flatten -> linear."""
    rng = np.random.default_rng(0)
    inits = {"0.weight": rng.normal(0, 0.5, (4, 1, 3, 3)).astype(np.float32),
             "0.bias": rng.normal(0, 0.1, 4).astype(np.float32),
             "fc.weight": rng.normal(0, 0.5, (10, 4)).astype(np.float32),
             "fc.bias": np.zeros(10, np.float32)}
    nodes = [
        helper.make_node("Conv", ["input.1", "0.weight", "0.bias"], ["onnx::Conv_12"],
                         pads=[1, 1, 1, 1], name="/0/Conv"),
        helper.make_node("Relu", ["onnx::Conv_12"], [CONV], name="/1/Relu"),
        helper.make_node("GlobalAveragePool", [CONV], ["/pool/output_0"], name="/pool"),
        helper.make_node("Flatten", ["/pool/output_0"], ["onnx::Gemm_15"], name="/Flatten"),
        helper.make_node("Gemm", ["onnx::Gemm_15", "fc.weight", "fc.bias"], [OUT], transB=1,
                         name="/fc/Gemm"),
    ]
    return _model(nodes, [helper.make_tensor_value_info("input.1", TensorProto.FLOAT,
                                                        ["N", 1, 8, 8])],
                  [helper.make_tensor_value_info(OUT, TensorProto.FLOAT, ["N", 10])], inits)


def mlp() -> onnx.ModelProto:
    """A PyTorch-style MLP on the 64 digit features, for training from the CLI."""
    rng = np.random.default_rng(1)
    inits = {"0.weight": rng.normal(0, 0.2, (32, 64)).astype(np.float32),
             "0.bias": np.zeros(32, np.float32),
             "2.weight": rng.normal(0, 0.2, (10, 32)).astype(np.float32),
             "2.bias": np.zeros(10, np.float32)}
    nodes = [helper.make_node("Gemm", ["input.1", "0.weight", "0.bias"], ["onnx::Relu_5"],
                              transB=1, name="/0/Gemm"),
             helper.make_node("Relu", ["onnx::Relu_5"], ["/1/Relu_output_0"], name="/1/Relu"),
             helper.make_node("Gemm", ["/1/Relu_output_0", "2.weight", "2.bias"], [OUT],
                              transB=1, name="/2/Gemm")]
    return _model(nodes, [helper.make_tensor_value_info("input.1", TensorProto.FLOAT,
                                                        ["N", 64])],
                  [helper.make_tensor_value_info(OUT, TensorProto.FLOAT, ["N", 10])], inits)


def images(n=2, seed=3):
    return np.random.default_rng(seed).normal(size=(n, 1, 8, 8)).astype(np.float32)


def ort_run(model: onnx.ModelProto, feeds, outputs=None):
    """onnxruntime's results, by name; ``outputs`` may name inner values too."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    declared = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.ValueInfoProto(name=n) for n in outputs or ()
                              if n not in declared)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = outputs or [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def test_the_api_speaks_the_models_names():
    g = flowgrad.load(cnn())
    assert g.inputs == ["input.1"]
    assert g.params == ["0.weight", "0.bias", "fc.weight", "fc.bias"]
    assert g.outputs == [OUT]
    assert {"onnx::Conv_12", CONV, "/pool/output_0", "onnx::Gemm_15"} <= set(g.dag.nodes)
    assert g.aliases == {}                 # every value is its own node: nothing to alias
    plan = flowgrad.compile(g)
    assert list(plan.params) == ["0.weight", "0.bias", "fc.weight", "fc.bias"]
    x = images()
    out = plan.forward({"input.1": x}, outputs=[OUT, CONV, "onnx::Conv_12"])
    assert list(out) == [OUT, CONV, "onnx::Conv_12"]
    expect = ort_run(cnn(), {"input.1": x}, [OUT, CONV])
    np.testing.assert_allclose(out[OUT], expect[OUT], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[CONV], expect[CONV], rtol=1e-5, atol=1e-5)
    grads = plan.backward({OUT: 1.0}, wrt=["input.1"])
    assert set(grads) == {"0.weight", "0.bias", "fc.weight", "fc.bias", "input.1"}
    assert grads["input.1"].shape == x.shape
    assert set(plan.state_dict()) == set(plan.params)
    plan.load_state_dict({"0.bias": np.ones(4, np.float32)})
    np.testing.assert_array_equal(plan.params["0.bias"], 1.0)


def test_a_value_without_a_node_of_its_own_is_an_alias():
    """Split's second output is port 1 of the split node, a name with '#' cannot be a node
    name (it marks flowgrad's own nodes): both are reachable by the model's names, the
    gradient of an input renamed that way comes back under its own name, and export writes
    every name back."""
    nodes = [helper.make_node("Split", ["in#0"], ["left:0", "right:0"], axis=1, num_outputs=2),
             helper.make_node("Mul", ["left:0", "w.0"], ["prod.0"])]
    model = helper.make_model(helper.make_graph(
        nodes, "split", [helper.make_tensor_value_info("in#0", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 2])
         for n in ("prod.0", "right:0")],
        initializer=[numpy_helper.from_array(np.full(2, 3.0, np.float32), "w.0")]),
        opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    g = flowgrad.load(model)
    assert g.outputs == ["prod.0", "right:0"]
    assert "in#0" not in g.dag and g.resolve("in#0") == (g.inputs[0], 0)
    assert g.resolve("right:0") == (g.resolve("left:0")[0], 1)
    assert "  aliases: in#0 = in_0, right:0 = left:0.1" in to_text(g)
    plan = flowgrad.compile(g)
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    out, grads = plan.forward_backward({"in#0": x}, {"prod.0": 1.0, "right:0": 1.0},
                                       wrt=["in#0"])
    np.testing.assert_array_equal(out["prod.0"], 3 * x[:, :2])
    np.testing.assert_array_equal(out["right:0"], x[:, 2:])
    assert "in#0" in grads
    np.testing.assert_array_equal(grads["in#0"], [[3, 3, 1, 1]] * 2)
    exported = export_onnx(g)
    assert [i.name for i in exported.graph.input] == ["in#0"]
    assert [i.name for i in exported.graph.initializer] == ["w.0"]
    assert [o.name for o in exported.graph.output] == ["prod.0", "right:0"]
    ran = ort_run(exported, {"in#0": x})
    np.testing.assert_array_equal(ran["right:0"], x[:, 2:])


def test_export_writes_the_names_back_directly_and_through_yaml(tmp_path):
    model = cnn()
    names = ([i.name for i in model.graph.input], sorted(i.name for i in model.graph.initializer),
             [o.name for o in model.graph.output])
    g = flowgrad.load(model)
    direct = export_onnx(g)
    assert ([i.name for i in direct.graph.input], sorted(i.name for i in direct.graph.initializer),
            [o.name for o in direct.graph.output]) == names
    produced = {o for n in direct.graph.node for o in n.output}
    assert {"onnx::Conv_12", CONV, "/pool/output_0", "onnx::Gemm_15"} <= produced
    x = images()
    np.testing.assert_allclose(ort_run(direct, {"input.1": x})[OUT],
                               ort_run(model, {"input.1": x})[OUT], rtol=1e-5, atol=1e-6)

    assert main(["convert", _save(model, tmp_path / "m.onnx"), str(tmp_path / "m.yaml")]) == 0
    text = (tmp_path / "m.yaml").read_text()
    assert "aliases:" in text and "  0.weight: 0_weight" in text and "input.1: input_1" in text
    assert f"{OUT}: save_infer_model/scale_0_tmp_1" in text
    assert "'onnx::Conv_12': {op: conv" in text          # YAML allows ':' and '/' as they are
    y = flowgrad.load(str(tmp_path / "m.yaml"))
    assert y.outputs == [OUT]
    back = export_onnx(y)
    assert ([i.name for i in back.graph.input], sorted(i.name for i in back.graph.initializer),
            [o.name for o in back.graph.output]) == names
    np.testing.assert_allclose(ort_run(back, {"input.1": x})[OUT],
                               ort_run(model, {"input.1": x})[OUT], rtol=1e-5, atol=1e-6)


def test_the_yaml_of_a_converted_model_answers_to_the_models_names(tmp_path):
    g = flowgrad.load(cnn())
    write_yaml(g, str(tmp_path / "m.yaml"))
    y = flowgrad.load(str(tmp_path / "m.yaml"))
    assert y.params == ["0_weight", "0_bias", "fc_weight", "fc_bias"]   # what YAML declares
    plan = flowgrad.compile(y)
    x = images()
    out, grads = plan.forward_backward({"input.1": x}, {OUT: 1.0}, wrt=["input.1", "0.weight"],
                                       outputs=[OUT, CONV])
    expect = flowgrad.compile(g).forward({"input.1": x}, outputs=[OUT, CONV], grad=False)
    np.testing.assert_allclose(out[OUT], expect[OUT], rtol=1e-6)
    np.testing.assert_allclose(out[CONV], expect[CONV], rtol=1e-6)
    assert {"input.1", "0.weight", "0_weight"} <= set(grads)
    np.testing.assert_array_equal(grads["0.weight"], grads["0_weight"])
    plan.load_state_dict({"fc.bias": np.full(10, 2.0, np.float32)})
    np.testing.assert_array_equal(plan.params["fc_bias"], 2.0)
    made = flowgrad.visualize(plan, [f'channel("{CONV}", 0)'], input="input.1", steps=1)
    assert made.views.shape[0] == 1
    with pytest.raises(FlowgradError, match="cannot optimize '0.weight': it is not a float "
                                            r"input of the graph \(float inputs: input_1\)"):
        flowgrad.visualize(plan, [f'channel("{CONV}", 0)'], input="0.weight", steps=1)


def test_cli_run_feeds_and_writes_by_the_models_names(tmp_path, capsys):
    path = _save(cnn(), tmp_path / "m.onnx")
    x = images(3)
    np.save(tmp_path / "x.npy", x)
    assert main(["run", path, "-i", f"input.1={tmp_path / 'x.npy'}",
                 "-o", str(tmp_path / "out.npz"), "--outputs", OUT, CONV]) == 0
    assert f"{OUT}: float32[3, 10]" in capsys.readouterr().out
    with np.load(tmp_path / "out.npz") as saved:
        assert sorted(saved.files) == sorted([OUT, CONV])
        np.testing.assert_allclose(saved[OUT], ort_run(cnn(), {"input.1": x})[OUT],
                                   rtol=1e-5, atol=1e-5)
    assert main(["run", path, "-i", f"input_1={tmp_path / 'x.npy'}"]) == 1
    err = capsys.readouterr().err
    assert "the graph has no input 'input_1'; did you mean 'input.1'?" in err
    # the converted YAML takes the same flags
    assert main(["convert", path, str(tmp_path / "m.yaml")]) == 0
    assert main(["run", str(tmp_path / "m.yaml"), "-i", f"input.1={tmp_path / 'x.npy'}",
                 "-o", str(tmp_path / "y.npz")]) == 0
    with np.load(tmp_path / "y.npz") as saved:
        assert saved.files == [OUT]


def test_training_from_the_cli_keeps_the_names_in_the_checkpoint(tmp_path, capsys):
    path = _save(mlp(), tmp_path / "mlp.onnx")
    out = tmp_path / "run"
    assert main(["train", path, "--epochs", "1", "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    with np.load(out / "checkpoint.npz") as ckpt:
        params = sorted(k for k in ckpt.files if k.startswith("params/"))
        trained = ckpt["params/0.weight"]
    assert params == ["params/0.bias", "params/0.weight", "params/2.bias", "params/2.weight"]
    start = numpy_helper.to_array(mlp().graph.initializer[0])
    assert trained.shape == start.shape and not np.array_equal(trained, start)
    x = np.random.default_rng(0).normal(size=(2, 64)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert main(["run", path, "--checkpoint", str(out / "checkpoint.npz"),
                 "-i", f"input.1={tmp_path / 'x.npy'}", "-o", str(tmp_path / "o.npz")]) == 0
    with np.load(tmp_path / "o.npz") as ran:
        assert ran.files == [OUT]
        tuned = ran[OUT]
    # the checkpoint, keyed by the model's names, also loads into the model's YAML form
    assert main(["convert", path, str(tmp_path / "mlp.yaml")]) == 0
    assert main(["run", str(tmp_path / "mlp.yaml"), "--checkpoint", str(out / "checkpoint.npz"),
                 "-i", f"input.1={tmp_path / 'x.npy'}", "-o", str(tmp_path / "y.npz")]) == 0
    with np.load(tmp_path / "y.npz") as ran:
        np.testing.assert_allclose(ran[OUT], tuned, rtol=1e-6)


def test_visualize_refers_to_values_by_the_models_names(tmp_path, capsys):
    """A name with '/', ':' or '.' is quoted in an objective; a channel is always an argument
    (``channel("layer/conv_1:3", 2)``) or an index (``"...scale_0.tmp_1"[3]``), never a
    suffix of the name, so a name ending in ':3' is not ambiguous."""
    plan = flowgrad.compile(flowgrad.load(cnn()))
    result = flowgrad.visualize(plan, [f'channel("{CONV}", 2)', f'"{OUT}"[3]'], steps=2)
    assert len(result.values[-1]) == 2
    path = _save(cnn(), tmp_path / "m.onnx")
    grid = tmp_path / "grid.png"
    status = main(["visualize", path, "--layer", CONV, "--channels", "0", "1", "--steps", "2",
                   "--out", str(grid), "--no-progress"])
    text = capsys.readouterr().out
    assert status == 0 and grid.is_file()
    assert f"{CONV} channel 1" in text
    assert main(["visualize", path, "--objective", "layer('onnx::Conv_12')",
                 "--objective", f"-'{OUT}'[0] + '{OUT}'[1]", "--steps", "2",
                 "--out", str(tmp_path / "g2.png"), "--no-progress"]) == 0
    assert np.load(tmp_path / "g2.npy").shape[0] == 2
    capsys.readouterr()
    assert main(["visualize", path, "--each", OUT, "--steps", "2",
                 "--out", str(tmp_path / "g3.png"), "--no-progress"]) == 0
    assert np.load(tmp_path / "g3.npy").shape[0] == 10
    assert main(["visualize", path, "--layer", "layer/conv_1", "--all-channels", "--steps", "2",
                 "--out", str(tmp_path / "g4.png"), "--no-progress"]) == 1
    assert f"did you mean '{CONV}'" in capsys.readouterr().err


def test_show_lists_the_models_names(tmp_path, capsys):
    assert main(["show", _save(cnn(), tmp_path / "m.onnx")]) == 0
    text = capsys.readouterr().out
    for name in ("input.1", "0.weight", "onnx::Conv_12", CONV, OUT):
        assert name in text


def test_a_yaml_alias_that_cannot_work_is_one_located_error(tmp_path):
    base = ("flowgrad: 1\ninputs:\n  x: {shape: [2]}\nnodes:\n  y: {op: relu, in: {x: x}}\n")
    for section, message in (
            ("aliases:\n  y: x\n", "alias 'y' is already declared as a name in the graph"),
            ("aliases:\n  input.1: z\n", "alias 'input.1': unknown value 'z'"),
            ("aliases: [a]\n", "'aliases' must be a mapping")):
        path = tmp_path / "g.yaml"
        path.write_text(base + section + "outputs: [y]\n")
        with pytest.raises(GraphError) as err:
            flowgrad.load(str(path))
        assert message in str(err.value) and "g.yaml:" in str(err.value)
    path.write_text(base + "aliases:\n  output:0: y\n  input.1: x\noutputs: ['output:0']\n")
    g = flowgrad.load(str(path))
    out = flowgrad.compile(g).forward({"input.1": np.array([[-1.0, 2.0]])})
    assert list(out) == ["output:0"]
    assert [o.name for o in export_onnx(g).graph.output] == ["output:0"]
    assert [i.name for i in export_onnx(g).graph.input] == ["input.1"]


def test_an_alias_never_hides_a_node():
    g = flowgrad.load(cnn())
    with pytest.raises(GraphError, match="alias 'fc.bias' is already a node's name"):
        g.add_alias("fc.bias", "0.bias")
    with pytest.raises(KeyError, match="unknown value 'nothing'"):
        g.add_alias("bias", "nothing")
    with pytest.raises(FlowgradError, match="unknown input 'input.2'"):
        flowgrad.compile(g).forward({"input.2": images()})


def _save(model: onnx.ModelProto, path) -> str:
    onnx.save(model, str(path))
    return str(path)


def test_yaml_names_never_collide(tmp_path):
    """``x.1`` cannot be declared in YAML and ``x_1`` is taken by another value: the first is
    declared as ``x_1_1`` and keeps its name as an alias; both round-trip to export."""
    nodes = [helper.make_node("Relu", ["x"], ["x.1"]), helper.make_node("Neg", ["x"], ["x_1"]),
             helper.make_node("Add", ["x.1", "x_1"], ["y.0"])]
    model = helper.make_model(helper.make_graph(
        nodes, "clash", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 3]) for n in ("y.0", "x.1")]),
        opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    write_yaml(flowgrad.load(model), str(tmp_path / "c.yaml"))
    text = (tmp_path / "c.yaml").read_text()
    assert "  x_1_1: {op: relu" in text and "  x_1: {op: neg" in text
    assert "  x.1: x_1_1" in text
    y = flowgrad.load(str(tmp_path / "c.yaml"))
    x = np.array([[-1.0, 0.5, 2.0]], np.float32)
    out = flowgrad.compile(y).forward({"x": x})
    assert list(out) == ["y.0", "x.1"]
    np.testing.assert_array_equal(out["y.0"], np.maximum(x, 0) - x)
    back = export_onnx(y)
    assert [o.name for o in back.graph.output] == ["y.0", "x.1"]
    assert {"x.1", "x_1", "y.0"} <= {o for n in back.graph.node for o in n.output}


def test_batch_inference_on_workers_takes_the_models_names(tmp_path):
    """``flowgrad run --data input.1=FILE`` (here its function, on one local worker) on the
    model and on its YAML conversion, where ``input.1`` is an alias of ``input_1``."""
    pytest.importorskip("distributed")      # the dev extra: never skipped in CI
    import flowgrad.distributed as fd
    path = _save(cnn(), tmp_path / "m.onnx")
    assert main(["convert", path, str(tmp_path / "m.yaml")]) == 0
    x = images(5)
    np.save(tmp_path / "x.npy", x)
    expect = ort_run(cnn(), {"input.1": x})[OUT]
    with fd.connect(workers=1) as client:
        for graph in (path, str(tmp_path / "m.yaml")):
            done = fd.run_distributed(graph, str(tmp_path / "x.npy"), str(tmp_path / "o.npy"),
                                      client=client, input="input.1", output=OUT)
            assert done.output == OUT
            np.testing.assert_allclose(np.load(tmp_path / "o.npy"), expect, rtol=1e-5,
                                       atol=1e-5)
