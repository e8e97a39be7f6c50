"""The commands' work as Python calls, used the way a script would: flowgrad.train_and_report,
evaluate_checkpoint, visualize_checkpoint and run_demo return what they did and write files."""
from __future__ import annotations

import json

import numpy as np
import pytest

import flowgrad
from flowgrad.errors import FlowgradError

from .conftest import GRAPHS

MLP = str(GRAPHS / "digits_mlp.yaml")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    lines = []
    run = flowgrad.train_and_report(MLP, str(out), epochs=3, batch_size=64, lr=0.01,
                                    log=lines.append)
    return run, out, lines


def test_train_and_report_trains_writes_and_returns_the_run(trained):
    run, out, lines = trained
    assert (run.config.epochs, run.config.batch_size, run.config.lr) == (3, 64, 0.01)
    assert run.config.optimizer["kind"] == "adam"           # the graph's, lr overridden
    assert len(run.history) == 3 and run.trainer.epoch == 3
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.npz", "curves.png",
                                                    "history.json", "metrics.json"]
    assert sorted(run.files) == sorted(str(p) for p in out.iterdir())
    assert json.loads((out / "metrics.json").read_text()) == run.metrics
    assert run.metrics["test_accuracy"] > 0.8
    assert "1438 train / 359 test samples" in lines[0] and lines[-1].startswith("trained in")


def test_evaluate_checkpoint_scores_the_held_out_split(trained):
    run, _, _ = trained
    result = flowgrad.evaluate_checkpoint(MLP, run.checkpoint)
    assert (result.split, result.samples) == ("test", 359)
    assert result.metrics["accuracy"] == run.metrics["test_accuracy"]
    assert flowgrad.evaluate_checkpoint(MLP, run.checkpoint, split_name="all").samples == 1797
    with pytest.raises(FlowgradError, match="unknown split"):
        flowgrad.evaluate_checkpoint(MLP, run.checkpoint, split_name="val")


def test_visualize_checkpoint_uses_the_section_with_overrides(trained, tmp_path):
    run, _, _ = trained
    grid = tmp_path / "logits.png"
    done = flowgrad.visualize_checkpoint(MLP, str(grid), checkpoint=run.checkpoint, steps=5)
    assert done.config.each == "logits" and done.config.steps == 5     # section, then override
    assert done.config.penalties == {"tv": 30.0, "blur": 100.0}
    assert (done.config.param, done.config.start) == ("pixels", "mean:digits")
    assert not done.random
    assert done.result.labels == [f"logits[{k}]" for k in range(10)]
    assert grid.is_file() and np.array_equal(np.load(tmp_path / "logits.npy"),
                                             done.result.images)
    assert done.files == [str(grid), str(tmp_path / "logits.npy")]


def test_run_demo_reports_every_stage(tmp_path):
    report = flowgrad.run_demo(str(tmp_path / "demo"), epochs=8, steps=60)
    assert report.training.trainer.epoch == 8
    assert len(report.predicted) == 10 and report.hits >= 8
    assert report.probabilities.shape == (10, 10)
    assert report.onnx.predictions_agree and report.onnx.max_diff < 1e-4
    for path in report.files:
        assert (tmp_path / "demo" / path.rsplit("/", 1)[-1]).is_file(), path


def test_render_layer_checkpoint_renders_a_trained_layer_resumably(trained, tmp_path):
    run, _, _ = trained
    grid = tmp_path / "h1.png"
    seen = []
    done = flowgrad.render_layer_checkpoint(MLP, "fc1", str(grid), checkpoint=run.checkpoint,
                                            channels=range(6), batch=4, steps=3,
                                            on_batch=lambda k, n: seen.append((k, n)))
    assert not done.random and done.layer == "fc1" and done.config.steps == 3
    assert done.render.channels == list(range(6)) and done.render.resumed == 0
    assert seen == [(4, 6), (6, 6)]
    assert done.render.penalties.shape == (6,) and done.render.penalties.min() > 0
    assert np.load(tmp_path / "h1.npy").shape == (6, 1, 8, 8)
    again = flowgrad.render_layer_checkpoint(MLP, "fc1", str(grid), checkpoint=run.checkpoint,
                                             channels=range(6), batch=4, steps=3)
    assert again.render.resumed == 6
    np.testing.assert_array_equal(again.render.views, done.render.views)


def test_visualize_checkpoint_says_when_the_weights_are_random(tmp_path):
    done = flowgrad.visualize_checkpoint(MLP, str(tmp_path / "r.png"), objectives=["logits[0]"],
                                         steps=2, thresholds=[1, 2])
    assert done.random and done.config.thresholds == (1, 2)
    assert [f.rsplit("/", 1)[1] for f in done.files] == ["r.png", "r.npy", "r_step1.png",
                                                         "r_step2.png"]
    assert done.result.captions()[0].startswith("logits[0]\n= ")
    assert "\npenalties " in done.result.captions()[0]


@pytest.mark.parametrize("kind", ["pixels", "fourier"])
def test_start_from_an_image_is_that_image(kind):
    """start: mean:DATA — the parameterization's first image is the data's mean input."""
    from flowgrad.visualize import Pipeline
    from flowgrad.workflows.visualizing import StartFrom
    image = np.random.default_rng(0).uniform(0.1, 0.9, (1, 8, 8))
    pipeline = Pipeline((1, 8, 8), kind=StartFrom(kind, image, (0.0, 1.0), "sigmoid", "test"))
    first, _ = pipeline.forward(pipeline.init(np.random.default_rng(1))[None])
    np.testing.assert_allclose(first[0], image, atol=1e-9)
    with pytest.raises(FlowgradError, match="has 64 values per sample, the image"):
        Pipeline((1, 4, 4), kind=StartFrom(kind, image, (0.0, 1.0), "sigmoid", "test"))
