"""The command line as a new user meets it (GitHub issue 12): bad flag values are one line
naming the flag (exit 1), nothing a user wrote is overwritten without --force, a trained
checkpoint goes on to export and convert, and the summary's numbers are the hand-counted ones.
Everything runs in-process through :func:`flowgrad.cli.main`."""
from __future__ import annotations

import re

import numpy as np
import pytest

import flowgrad
from flowgrad import cli
from flowgrad.summary import summarize
from flowgrad.workflows.deploy import trained_plan

from .conftest import GRAPHS

XOR = str(GRAPHS / "xor.yaml")
MLP = str(GRAPHS / "digits_mlp.yaml")


def fails(capsys, argv, message, code=1):
    """``flowgrad ARGV`` exits ``code`` with ``message`` in one stderr line, no traceback."""
    assert cli.main([str(a) for a in argv]) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("argv,message", [
    (["export", XOR, "--opset", "5", "-o", "m.onnx"], "--opset: flowgrad exports opsets 20 to"),
    (["visualize", MLP, "--steps", "-5"], "--steps: must be at least 1, got -5"),
    (["visualize", MLP, "--range", "1", "0"], "--range: LOW must be below HIGH, got 1 0"),
    (["visualize", MLP, "--range", "0", "nan"], "--range: LOW and HIGH must be finite"),
    (["visualize", MLP, "--lr", "nan"], "--lr: must be a positive number, got nan"),
    (["visualize", MLP, "--each", "logitz"],
     "--each: unknown value 'logitz'; did you mean 'logits'?"),
    (["visualize", MLP, "--input", "xx", "--each", "logits"],
     "--input: unknown value 'xx'; did you mean 'x'?"),
    (["check", XOR, "--elements", "0"], "--elements: must be at least 1, got 0"),
    (["demo", "--epochs", "0"], "--epochs: must be at least 1, got 0"),
    (["demo", "--steps", "-1"], "--steps: must be at least 1, got -1"),
    (["export", XOR], "say where to write the model"),
    (["train", XOR, "--batch-size", "0"], "--batch-size: must be at least 1, got 0"),
    (["train", XOR, "--batch-size", "-5"], "--batch-size: must be at least 1, got -5"),
    (["train", XOR, "--epochs", "-1"], "--epochs: must be at least 1, got -1"),
    (["train", XOR, "--lr", "-1"], "--lr: must be a positive number, got -1"),
    (["train", XOR, "--lr", "nan"], "--lr: must be a positive number, got nan"),
    (["train", XOR, "--workers", "0"], "--workers: must be at least 1, got 0"),
    (["run", XOR, "--workers", "2"], "add --data FILE.npy"),
    (["run", XOR, "--data", "x.npy", "-o", "y.npz"], "add -o OUT.npy"),
    (["visualize", MLP, "--workers", "2"], "--workers: Dask workers render whole layers"),
])
def test_a_bad_flag_value_is_one_line_naming_the_flag(argv, message, capsys, tmp_path,
                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)
    fails(capsys, argv, message)


def test_a_value_argparse_cannot_read_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as usage:
        cli.main(["visualize", MLP, "--steps", "many"])
    assert usage.value.code == 2
    assert "--steps: invalid int value" in capsys.readouterr().err


def test_a_minimised_objective_is_read_as_a_value(tmp_path, capsys):
    out = tmp_path / "v.png"
    assert cli.main(["visualize", MLP, "--objective", "-logits[3]", "--objective",
                     "logits[1]", "--steps", "2", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "-logits[3]: objective" in printed and "logits[1]: objective" in printed
    assert cli.join_dashed_values(["visualize", "--objective", "-a", "--steps", "2"]) == \
        ["visualize", "--objective=-a", "--steps", "2"]


def test_plugins_are_accepted_before_and_after_the_command(capsys):
    plugins = str(GRAPHS.parent / "plugins")
    demo = str(GRAPHS / "plugins_demo.yaml")
    for argv in (["--plugins", plugins, "check", demo, "--no-gradients"],
                 ["check", "--plugins", plugins, demo, "--no-gradients"],
                 ["check", demo, "-p", plugins, "--no-gradients"]):
        assert cli.main(argv) == 0, capsys.readouterr().err
        assert "plugins_demo:" in capsys.readouterr().out


def test_outputs_go_into_new_folders_and_are_never_overwritten_without_force(tmp_path, capsys):
    onnx_path = tmp_path / "new" / "deeper" / "xor.onnx"
    assert cli.main(["export", XOR, "-o", str(onnx_path)]) == 0
    fails(capsys, ["export", XOR, "-o", onnx_path], f"-o {onnx_path}: the file exists; pass "
                                                    "--force to overwrite it")
    assert cli.main(["export", XOR, str(onnx_path), "--force"]) == 0
    text = tmp_path / "drawn" / "xor.txt"
    assert cli.main(["show", XOR, "-o", str(text)]) == 0
    fails(capsys, ["show", XOR, "-o", text], "the file exists; pass --force")
    yaml_path = tmp_path / "back" / "xor.yaml"
    assert cli.main(["convert", str(onnx_path), str(yaml_path)]) == 0
    fails(capsys, ["convert", onnx_path, yaml_path], f"{yaml_path}: the file exists")
    (tmp_path / "mine.npz").write_bytes(b"keep")
    fails(capsys, ["convert", onnx_path, tmp_path / "mine.yaml"],
          f"{tmp_path / 'mine.npz'}: the file exists")
    assert (tmp_path / "mine.npz").read_bytes() == b"keep"
    assert cli.main(["convert", str(onnx_path), str(yaml_path), "--force"]) == 0
    grid = tmp_path / "grid.png"
    grid.write_bytes(b"mine")
    fails(capsys, ["visualize", MLP, "--each", "logits", "--out", grid],
          f"--out {grid}: the file exists; pass --force")
    fails(capsys, ["show", XOR, "-o", tmp_path], "is a folder")
    feeds = tmp_path / "x.npy"
    np.save(feeds, np.zeros((4, 2), np.float32))
    outputs = tmp_path / "mine" / "y.npz"          # run's -o: the same convention
    assert cli.main(["run", XOR, "-i", f"x={feeds}", "-o", str(outputs)]) == 0
    outputs.write_bytes(b"keep")
    fails(capsys, ["run", XOR, "-i", f"x={feeds}", "-o", outputs],
          f"-o {outputs}: the file exists; pass --force")
    assert outputs.read_bytes() == b"keep"
    assert cli.main(["run", XOR, "-i", f"x={feeds}", "-o", str(outputs), "--force"]) == 0
    assert set(np.load(outputs)) == set(flowgrad.load(XOR).outputs)


def test_train_then_run_export_and_convert_the_checkpoint(tmp_path, capsys):
    runs = tmp_path / "r"
    assert cli.main(["train", MLP, "--out", str(runs), "--epochs", "1", "--no-progress"]) == 0
    checkpoint = str(runs / "checkpoint.npz")
    x = flowgrad.load_data("digits").x[:16].astype(np.float32)
    trained = trained_plan(MLP, checkpoint).forward({"x": x}, outputs=["logits"],
                                                    grad=False)["logits"]
    untrained = trained_plan(MLP).forward({"x": x}, outputs=["logits"], grad=False)["logits"]
    assert not np.allclose(trained, untrained)

    model = tmp_path / "mlp.onnx"
    assert cli.main(["export", MLP, "--checkpoint", checkpoint, "-o", str(model),
                     "--outputs", "logits"]) == 0
    assert f"params from {checkpoint}" in capsys.readouterr().out
    exported = flowgrad.compile(flowgrad.load(str(model)))
    got = exported.forward({"x": x}, grad=False)
    np.testing.assert_allclose(next(iter(got.values())), trained, rtol=1e-5, atol=1e-5)

    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "deep" / "y.txt"           # exactly this path: no '.npz' added
    assert cli.main(["run", MLP, "--checkpoint", checkpoint, "-i", f"x={tmp_path / 'x.npy'}",
                     "--outputs", "logits", "-o", str(out)]) == 0
    assert f"saved 1 output(s) to {out}" in capsys.readouterr().out
    with np.load(out) as ran:
        np.testing.assert_allclose(ran["logits"], trained, rtol=1e-6)

    yaml_path = tmp_path / "mlp.yaml"
    assert cli.main(["convert", str(model), str(yaml_path)]) == 0
    converted = flowgrad.compile(flowgrad.load(str(yaml_path))).forward({"x": x}, grad=False)
    np.testing.assert_allclose(next(iter(converted.values())), trained, rtol=1e-5, atol=1e-5)


def test_a_checkpoint_of_another_graph_is_refused(tmp_path, capsys):
    runs = tmp_path / "r"
    assert cli.main(["train", MLP, "--out", str(runs), "--epochs", "1", "--no-progress"]) == 0
    capsys.readouterr()
    assert cli.main(["export", str(GRAPHS / "digits_cnn.yaml"), "--checkpoint",
                     str(runs / "checkpoint.npz"), "-o", str(tmp_path / "m.onnx")]) == 1
    assert "the checkpoint does not fit this graph" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


def test_the_summary_of_xor_is_counted_by_hand():
    s = summarize(flowgrad.load(XOR))
    # W1 2x2 + b1 2 + W2 2x1 + b2 1
    assert (s.params, s.trainable_params, s.param_bytes) == (9, 9, 36)
    # z1 = x @ W1 + b1: 2*2*2 + 2; h = step(z1): 2; z2: 2*2*1 + 1; y: 1
    assert [(n.name, n.flops) for n in s.nodes] == [("z1", 10), ("h", 2), ("z2", 5), ("y", 1)]
    assert s.flops == 18
    assert s.activation_bytes == (2 + 2 + 1 + 1) * 4


def test_the_summary_of_a_conv_net_is_counted_by_hand():
    s = summarize(flowgrad.load(str(GRAPHS / "digits_cnn.yaml")))
    flops = {n.name: n.flops for n in s.nodes}
    # conv1: 16x8x8 outputs, each 1*3*3 multiply-adds, plus the bias
    assert flops["conv1"] == 16 * 8 * 8 * (2 * 9 + 1)
    assert flops["flat"] == 0                       # a reshape moves no numbers
    assert flops["logits"] == 2 * 256 * 10 + 10
    assert s.params == 16 * 9 + 16 + 256 * 10 + 10


def test_einsum_flops_count_every_product_term():
    from flowgrad.op import Spec
    from flowgrad.summary import op_flops
    registry = flowgrad.default_registry()
    einsum = registry.get("einsum")(equation="bij,bjk->bik")
    a, b = Spec((None, 3, 4), np.float32), Spec((None, 4, 5), np.float32)
    assert op_flops(einsum, [a, b], [Spec((None, 3, 5), np.float32)]) == 2 * 3 * 4 * 5
    implicit = registry.get("einsum")(equation="ij,jk")
    assert op_flops(implicit, [Spec((3, 4), np.float32), Spec((4, 5), np.float32)],
                    [Spec((3, 5), np.float32)]) == 2 * 3 * 4 * 5


def test_show_and_check_print_the_summary(capsys):
    assert cli.main(["show", XOR]) == 0
    out = capsys.readouterr().out
    assert "parameters: 9 (9 trainable, 36 B)" in out and "FLOPs per sample: 18" in out
    assert cli.main(["check", XOR, "--no-gradients"]) == 0
    assert "activation memory per sample: 24 B" in capsys.readouterr().out


def test_check_of_a_long_graph_says_what_the_gradient_check_will_do(capsys, monkeypatch):
    from flowgrad.cli import check
    assert cli.main(["check", XOR]) == 0
    assert capsys.readouterr().err == ""           # a short graph: no progress lines
    monkeypatch.setattr(check, "LONG", 3)
    assert cli.main(["check", XOR]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("check: loaded and validated 4 ops in ")
    # x counted for one sample (2 entries) and the params 4 + 2 + 2 + 1: about 11 entries
    assert err[1] == ("check: gradient check: about 11 entries of 5 inputs and params, 23 "
                      "float64 forward passes of 4 ops (--elements K checks fewer entries, "
                      "--no-gradients none)...")


def test_show_offers_the_formats_render_draws():
    from flowgrad.cli.show import FORMATS
    from flowgrad.render import FORMATS as DRAW
    assert sorted(FORMATS) == sorted(DRAW)


def test_main_leaves_the_default_registry_as_it_found_it(capsys):
    from flowgrad import plugins
    before = plugins.default_registry()
    assert cli.main(["--plugins", str(GRAPHS.parent / "plugins"), "ops", "rms_norm"]) == 0
    assert plugins.default_registry() is before and "rms_norm" not in before.ops


def test_a_run_folder_is_not_trained_over_without_force(tmp_path, capsys):
    runs = tmp_path / "r"
    assert cli.main(["train", MLP, "--out", str(runs), "--epochs", "1", "--no-progress"]) == 0
    capsys.readouterr()
    before = (runs / "checkpoint.npz").read_bytes()
    fails(capsys, ["train", MLP, "--out", runs, "--epochs", "1"],
          "holds an earlier run (checkpoint.npz, history.json, metrics.json, curves.png)")
    assert (runs / "checkpoint.npz").read_bytes() == before
    assert cli.main(["train", MLP, "--out", str(runs), "--epochs", "2", "--no-progress",
                     "--resume", str(runs / "checkpoint.npz")]) == 0
    assert cli.main(["train", MLP, "--out", str(runs), "--epochs", "1", "--no-progress",
                     "--force"]) == 0


def test_without_a_terminal_training_logs_one_line_per_epoch(tmp_path, capsys):
    assert cli.main(["train", MLP, "--out", str(tmp_path / "r"), "--epochs", "3", "--batch-size", "512"]) == 0
    out = capsys.readouterr().out       # captured: not a terminal, so no bar to clear
    lines = [l for l in out.splitlines() if l.startswith("epoch ")]
    assert [l.split(":")[0] for l in lines] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]


def test_float16_is_refused_for_training_with_the_fix():
    plan = flowgrad.compile(flowgrad.load(MLP), dtype="float16")
    with pytest.raises(flowgrad.FlowgradError, match="cannot train in float16.*float32"):
        flowgrad.Trainer(plan)
    assert plan.forward({"x": np.zeros((2, 64), np.float16)}, outputs=["logits"],
                        grad=False)["logits"].dtype == np.float16     # inference still works



def test_the_summary_counts_a_weight_of_unknown_size_as_one():
    """A Gemm whose B is a graph input gets an unknown first dim (found by the ONNX fuzzer)."""
    from flowgrad.op import Spec
    from flowgrad.summary import op_flops
    dense = flowgrad.make_registry(autoload=False).get("dense")()
    specs = [Spec((None, 3), np.float32), Spec((None, 4), np.float32)]
    assert op_flops(dense, specs, [Spec((None, 4), np.float32)]) == 2 * 1 * 4


def test_yaml_weights_take_a_training_checkpoint_and_refuse_a_damaged_file(tmp_path, capsys):
    """`weights:` pointing at `flowgrad train`'s checkpoint gives the trained params; a damaged
    weights file is one located error."""
    runs = tmp_path / "r"
    assert cli.main(["train", MLP, "--out", str(runs), "--epochs", "1", "--no-progress"]) == 0
    text = (GRAPHS / "digits_mlp.yaml").read_text()
    params = trained_plan(MLP, str(runs / "checkpoint.npz")).params
    graph = tmp_path / "trained.yaml"
    text = re.sub(r", init: \{kind: \w+\}", "", text)        # params without init: weights
    graph.write_text(text.replace("\nparams:", "\nweights: r/checkpoint.npz\nparams:", 1))
    loaded = flowgrad.compile(flowgrad.load(str(graph)))
    for name, value in params.items():
        np.testing.assert_array_equal(loaded.params[name], value)
    (runs / "checkpoint.npz").write_bytes(b"PK\x03\x04 damaged")
    assert cli.main(["check", str(graph), "--no-gradients"]) == 1
    err = capsys.readouterr().err
    assert f"{graph}:" in err and "weights file" in err and "Traceback" not in err


def test_check_takes_real_sizes_for_free_dims(tmp_path, capsys):
    """A model whose spatial dims are free (paddle2onnx writes -1) cannot take the random
    inputs' size 2 through a 4-wide pool: check says so and how, and --shape gives the sizes."""
    import onnx
    from onnx import TensorProto, helper as h
    graph = h.make_graph(
        [h.make_node("MaxPool", ["x"], ["pooled"], kernel_shape=[4, 4]),
         h.make_node("Relu", ["pooled"], ["y"])], "free_dims",
        [h.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, "H", "W"])],
        [h.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    path = tmp_path / "free.onnx"
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), path)
    fails(capsys, ["check", str(path)], "give real sizes with --shape x=D,D,...")
    assert cli.main(["check", str(path), "--shape", "x=1,1,8,8"]) == 0
    assert "gradient check passed" in capsys.readouterr().out
    fails(capsys, ["check", str(path), "--shape", "x=1,2,8,8"],
          "--shape x: [1, 2, 8, 8] does not fit the input's declared shape [?, 1, ?, ?]")
    fails(capsys, ["check", str(path), "--shape", "y=1"], "the graph has no input 'y'")
