"""`flowgrad visualize` as a user runs it, in-process: whole-layer grids and their resumption,
imported ONNX models with a free image size or 0-255 pixels, preprocessing, thresholds, the
random-weights note, the inactive-unit line, and a one-line error for every bad value."""
from __future__ import annotations

import numpy as np
import pytest

import flowgrad
from flowgrad.cli import main

from .conftest import GRAPHS

CNN = str(GRAPHS / "digits_cnn.yaml")
MLP = str(GRAPHS / "digits_mlp.yaml")


def visualize(capsys, *args):
    """``flowgrad visualize ARGS --no-progress``: exit status, stdout, stderr."""
    status = main(["visualize", *map(str, args), "--no-progress"])
    out, err = capsys.readouterr()
    return status, out, err


def test_whole_layer_grid_of_the_cnn_first_conv_then_resumed(capsys, tmp_path):
    grid = tmp_path / "grid.png"
    status, out, err = visualize(capsys, CNN, "--layer", "conv1", "--all-channels",
                                 "--steps", "3", "--out", grid)
    assert status == 0, err
    assert np.load(tmp_path / "grid.npy").shape == (16, 1, 8, 8) and grid.is_file()
    lines = out.splitlines()
    assert [l.split(":")[0] for l in lines[:16]] == [f"conv1 channel {k}" for k in range(16)]
    assert "objective" in lines[0] and "penalties" in lines[0]     # apart, as on the grid
    assert "note: random weights" in out and "resumed" not in out
    parts = sorted(p.name for p in (tmp_path / "grid.png.parts").iterdir())
    assert len(parts) == 17 and "settings.json" in parts

    first = np.load(tmp_path / "grid.npy")
    (tmp_path / "grid.png.parts" / "channel_0003.npz").unlink()
    (tmp_path / "grid.png.parts" / "channel_0012.npz").unlink()
    status, out, err = visualize(capsys, CNN, "--layer", "conv1", "--all-channels",
                                 "--steps", "3", "--out", grid)
    assert status == 0, err
    assert "resumed: skipped 14 of 16 channels already rendered" in out
    assert np.array_equal(np.load(tmp_path / "grid.npy"), first)

    status, out, err = visualize(capsys, CNN, "--layer", "conv1", "--all-channels",
                                 "--steps", "4", "--out", grid)
    assert status == 1 and "other settings" in err and "Traceback" not in err


def test_chosen_channels_in_batches_and_the_python_call(capsys, tmp_path):
    status, out, err = visualize(capsys, CNN, "--layer", "conv1", "--channels", "0", "5", "9",
                                 "--batch", "2", "--steps", "2", "--out", tmp_path / "c.png")
    assert status == 0, err
    assert [l.split(":")[0] for l in out.splitlines()[:3]] == [
        "conv1 channel 0", "conv1 channel 5", "conv1 channel 9"]
    done = flowgrad.render_layer_checkpoint(CNN, "conv1", str(tmp_path / "d.png"),
                                            channels=[1, 2], steps=2)
    assert done.random and done.render.channels == [1, 2] and done.config.steps == 2
    assert done.files == [str(tmp_path / "d.png"), str(tmp_path / "d.npy")]


@pytest.fixture(scope="module")
def free_size_cnn(tmp_path_factory):
    """The digits CNN exported to ONNX, its image height and width made symbolic."""
    import onnx
    path = tmp_path_factory.mktemp("onnx") / "cnn.onnx"
    plan = flowgrad.compile(flowgrad.load(CNN))
    flowgrad.save_onnx(plan.export_graph(), str(path), outputs=["logits"])
    model = onnx.load(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for axis, name in ((2, "H"), (3, "W")):
        dims[axis].ClearField("dim_value")
        dims[axis].dim_param = name
    del model.graph.value_info[:]
    onnx.save(model, str(path))
    return path


def test_an_onnx_cnn_with_a_free_image_size_needs_and_takes_input_shape(capsys, tmp_path,
                                                                       free_size_cnn):
    status, out, err = visualize(capsys, free_size_cnn, "--each", "logits", "--steps", "2",
                                 "--out", tmp_path / "g.png")
    assert status == 1 and "free dimensions" in err and "--input-shape" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    status, out, err = visualize(capsys, free_size_cnn, "--objective", "logits[3]",
                                 "--objective", "conv1[2, 4, 4]", "--steps", "2",
                                 "--input-shape", "1", "8", "8", "--out", tmp_path / "g.png")
    assert status == 0, err
    assert np.load(tmp_path / "g.npy").shape == (2, 1, 8, 8)
    assert "random weights" not in out              # an ONNX file's weights are its own


def test_a_whole_layer_grid_of_an_imported_onnx_cnn(capsys, tmp_path, free_size_cnn):
    """Every channel of the imported model's first conv layer, as one grid from the CLI."""
    status, out, err = visualize(capsys, free_size_cnn, "--layer", "conv1", "--all-channels",
                                 "--input-shape", "1", "8", "8", "--steps", "2",
                                 "--out", tmp_path / "layer.png")
    assert status == 0, err
    channels = [line for line in out.splitlines() if line.startswith("conv1 channel ")]
    images = np.load(tmp_path / "layer.npy")
    assert len(channels) == len(images) == 16 and images.shape[1:] == (1, 8, 8)
    assert (tmp_path / "layer.png").stat().st_size > 0


@pytest.fixture(scope="module")
def pixel_model(tmp_path_factory):
    """A 3-channel ONNX conv reading 0-255 pixels (it divides by 255), any image size."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    weights = numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "K")
    scale = numpy_helper.from_array(np.array(255.0, np.float32), "scale")
    graph = helper.make_graph(
        [helper.make_node("Div", ["x", "scale"], ["unit"]),
         helper.make_node("Conv", ["unit", "K"], ["conv"]),
         helper.make_node("Relu", ["conv"], ["act"])],
        "pixels", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("act", TensorProto.FLOAT, None)], [weights, scale])
    path = tmp_path_factory.mktemp("onnx") / "pixels.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_a_model_reading_0_255_pixels_with_range_or_preprocess(capsys, tmp_path, pixel_model):
    common = ("--objective", "conv[1, 2, 2]", "--steps", "5", "--input-shape", "3", "6", "6")
    status, out, err = visualize(capsys, pixel_model, *common, "--range", "0", "255",
                                 "--out", tmp_path / "r.png")
    assert status == 0, err
    images = np.load(tmp_path / "r.npy")
    assert images.shape == (1, 3, 6, 6) and images.max() > 1 and images.max() <= 255
    status, out2, err = visualize(capsys, pixel_model, *common, "--preprocess",
                                  "imagenet_caffe", "--out", tmp_path / "p.png")
    assert status == 0, err
    assert 0 <= np.load(tmp_path / "p.npy").min() and np.load(tmp_path / "p.npy").max() <= 1
    assert out2.split("\n")[0] != out.split("\n")[0]       # the network saw other numbers


def test_thresholds_keep_grids_and_set_the_steps(capsys, tmp_path):
    status, out, err = visualize(capsys, MLP, "--objective", "logits[4]", "--thresholds",
                                 "2", "4", "6", "--out", tmp_path / "t.png")
    assert status == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "t.npy", "t.png", "t_step2.png", "t_step4.png", "t_step6.png"]
    assert "logits[4]: objective" in out and "t_step6.png" in out
    done = flowgrad.visualize_checkpoint(MLP, str(tmp_path / "u.png"), thresholds=[1, 3],
                                         objectives=["logits[2]"])
    assert done.config.steps == 3 and len(done.result.values) == 3
    assert done.result.at(1).shape == (1, 1, 8, 8)


def test_random_weights_note_only_without_trained_weights(capsys, tmp_path):
    status, out, err = visualize(capsys, MLP, "--objective", "logits[1]", "--steps", "2",
                                 "--out", tmp_path / "a.png")
    assert status == 0 and out.count("note: random weights") == 1
    flowgrad.Trainer(flowgrad.compile(flowgrad.load(MLP))).save(str(tmp_path / "ckpt.npz"))
    status, out, err = visualize(capsys, MLP, "--objective", "logits[1]", "--steps", "2",
                                 "--checkpoint", tmp_path / "ckpt.npz", "--out", tmp_path / "b.png")
    assert status == 0, err
    assert "random weights" not in out


DEAD = """\
flowgrad: 1
name: dead
inputs: {x: {shape: [1, 4, 4]}}
params:
  K: {shape: [2, 1, 3, 3], init: {kind: constant, value: -1.0}}
nodes:
  conv: {op: conv, in: {x: x, W: K}, pads: [1, 1, 1, 1]}
  act:  {op: relu, in: conv}
outputs: [act]
"""


def test_a_unit_that_never_activates_is_one_line(capsys, tmp_path):
    path = tmp_path / "dead.yaml"
    path.write_text(DEAD)
    status, out, err = visualize(capsys, path, "--objective", "channel(act, 0)",
                                 "--objective", "channel(conv, 1)", "--steps", "3",
                                 "--out", tmp_path / "d.png")
    assert status == 0, err
    warning = [l for l in out.splitlines() if l.startswith("warning:")]
    assert len(warning) == 1 and "1 of 2 objectives never activated" in warning[0]
    assert "act[0]" in warning[0] and "conv" not in warning[0].split(":")[1]
    assert "InactiveObjectiveWarning" not in err and "warnings.warn" not in err
    status, out, err = visualize(capsys, path, "--layer", "act", "--all-channels", "--steps",
                                 "2", "--out", tmp_path / "layer.png")
    assert status == 0 and not err
    assert "warning: 2 of 2 channels of act never activated" in out


@pytest.mark.parametrize("args,fragment", [
    (("--each", "logits", "--preprocess", "imagenett"),
     "--preprocess: unknown preprocessing 'imagenett'; did you mean 'imagenet'?"),
    (("--each", "logits", "--input-shape", "1", "0", "8"), "--input-shape: input shape must"),
    (("--each", "logits", "--thresholds", "64", "16"),
     "--thresholds: thresholds must increase, got 64 16"),
    (("--each", "logits", "--thresholds", "8", "--steps", "4"),
     "--thresholds: threshold 8 is beyond the 4 steps"),
    (("--all-channels",), "--all-channels: say which layer: --layer NODE"),
    (("--layer", "conv1"), "--layer: add --all-channels"),
    (("--layer", "conv1", "--all-channels", "--each", "logits"), "drop --each"),
    (("--layer", "loss", "--all-channels"), "layer 'loss' has no fixed axis 1"),
    (("--layer", "conv1", "--channels", "3", "99"), "channels must be distinct ids in 0..15"),
    (("--layer", "conv1", "--all-channels", "--batch", "0"), "--batch: must be at least 1"),
    (("--each", "logits", "--start", "median"), "--start: start must be 'noise' or 'mean:DATA'"),
    (("--each", "logits", "--param", "cppn"), "start: 'mean:digits' needs param: pixels"),
])
def test_every_bad_value_is_a_one_line_error(capsys, tmp_path, args, fragment):
    status, out, err = visualize(capsys, CNN, *args, "--out", tmp_path / "x.png")
    assert status == 1, out
    assert fragment in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
