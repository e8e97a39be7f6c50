"""The real commands: train, eval, visualize, demo; Ctrl-C in a real process; user errors."""
from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np

from flowgrad.checkpoint import load_checkpoint
from flowgrad.cli import main

ROOT = pathlib.Path(__file__).resolve().parent.parent
MLP = str(ROOT / "graphs" / "digits_mlp.yaml")


def test_train_eval_visualize(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", MLP, "--epochs", "4", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "1438 train / 359 test samples" in text and "test: loss" in text
    for name in ("checkpoint.npz", "history.json", "curves.png", "metrics.json"):
        assert (out / name).is_file(), name
    history = json.loads((out / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.8

    assert main(["eval", MLP, "--checkpoint", str(out / "checkpoint.npz"), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["accuracy"] == metrics["test_accuracy"]

    grid = tmp_path / "vis" / "grid.png"
    assert main(["visualize", MLP, "--checkpoint", str(out / "checkpoint.npz"), "--objective",
                 "logits[3]", "--objective", "layer(h1)", "--steps", "10", "--out", str(grid),
                 "--penalty", "l2=0.1", "--snapshot-every", "5", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "logits[3]: objective" in text and "layer(h1): objective" in text
    assert grid.is_file() and (tmp_path / "vis" / "grid_step5.png").is_file()
    assert np.load(tmp_path / "vis" / "grid.npy").shape == (2, 64)


def test_runs_repeat_exactly_and_resume_extends_a_run(tmp_path, capsys):
    full, part = tmp_path / "full", tmp_path / "part"
    main(["train", MLP, "--epochs", "3", "--out", str(full), "--no-progress"])
    main(["train", MLP, "--epochs", "3", "--out", str(part), "--no-progress"])
    first = load_checkpoint(str(part / "checkpoint.npz"))
    assert first.meta["epoch"] == 3
    # resuming a finished run with more epochs continues it
    capsys.readouterr()
    assert main(["train", MLP, "--epochs", "4", "--out", str(part), "--no-progress",
                 "--resume", str(part / "checkpoint.npz")]) == 0
    text = capsys.readouterr().out
    assert f"resuming from epoch 3 of 4 ({part / 'checkpoint.npz'}, step 123)" in text
    assert "note: the 'cosine' schedule depends on the run's length" in text
    assert load_checkpoint(str(part / "checkpoint.npz")).meta["epoch"] == 4
    same = load_checkpoint(str(full / "checkpoint.npz"))
    for name, value in same.params.items():
        assert np.array_equal(value, first.params[name])
    capsys.readouterr()


def test_user_errors_have_no_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(pathlib.Path(MLP).read_text().replace("minimize: loss", "minimise: loss"))
    assert main(["train", str(bad), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "bad.yaml:" in err and "did you mean 'minimize'" in err and "Traceback" not in err
    assert main(["train", MLP, "--data", str(tmp_path / "nope.csv")]) == 1
    assert "not found" in capsys.readouterr().err
    assert main(["visualize", MLP, "--objective", "logits[", "--out",
                 str(tmp_path / "v.png")]) == 1
    assert "cannot parse" in capsys.readouterr().err


def test_ctrl_c_in_a_real_process_saves_a_checkpoint(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "flowgrad", "train", MLP, "--epochs",
                             "100000", "--out", str(out), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while not (out / "checkpoint.npz").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "interrupted; checkpoint saved to" in stdout and "--resume" in stdout
    assert "Traceback" not in stderr
    meta = load_checkpoint(str(out / "checkpoint.npz")).meta
    assert meta["step"] > 0


def test_demo(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--epochs", "8", "--steps", "60",
                 "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "image k classified as k" in text and "ONNX round trip" in text
    assert "predictions agree: True" in text
    for name in ("curves.png", "logits.png", "logits.npy", "checkpoint.npz"):
        assert (out / name).is_file(), name
    assert any(p.suffix == ".onnx" for p in out.iterdir())


def test_an_onnx_classifier_trains_with_an_added_loss(tmp_path, capsys):
    import flowgrad
    from flowgrad.onnx.export import save_onnx
    path = str(tmp_path / "mlp.onnx")
    save_onnx(flowgrad.load(MLP), path, outputs=["logits"])
    out = tmp_path / "run"
    assert main(["train", path, "--epochs", "5", "--lr", "0.1", "--out", str(out),
                 "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "has no loss: treating it as a classifier" in text
    assert json.loads((out / "metrics.json").read_text())["test_accuracy"] > 0.9


def test_regression_and_two_input_data_files(tmp_path, capsys):
    from tests.test_train import REGRESSION, TWO_INPUTS, regression_data
    x, t = regression_data(200)
    np.savez(tmp_path / "reg.npz", x=x, t=t)
    (tmp_path / "reg.yaml").write_text(REGRESSION)
    out = tmp_path / "reg"
    assert main(["train", str(tmp_path / "reg.yaml"), "--data", str(tmp_path / "reg.npz"),
                 "--out", str(out), "--no-progress"]) == 0
    assert json.loads((out / "metrics.json").read_text())["test_loss"] < 1e-3
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(200, 3)), rng.normal(size=(200, 2))
    np.savez(tmp_path / "ab.npz", a=a, b=b, label=(a[:, 0] + b[:, 1] > 0).astype(np.int64))
    (tmp_path / "ab.yaml").write_text(TWO_INPUTS)
    assert main(["train", str(tmp_path / "ab.yaml"), "--data", str(tmp_path / "ab.npz"),
                 "--out", str(tmp_path / "ab"), "--no-progress"]) == 0
    assert main(["eval", str(tmp_path / "ab.yaml"), "--data", str(tmp_path / "ab.npz"),
                 "--checkpoint", str(tmp_path / "ab" / "checkpoint.npz"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["accuracy"] > 0.9


def test_damaged_files_are_one_located_message(tmp_path, capsys):
    from flowgrad.data import load_data
    digits = load_data("digits")
    y = digits.y[:100].copy()
    y[4] = -1
    np.savez(tmp_path / "neg.npz", x=digits.x[:100], y=y)
    assert main(["train", MLP, "--data", str(tmp_path / "neg.npz"), "--out",
                 str(tmp_path / "o"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'neg.npz'}: array 'y': holds -1 at sample" in err
    assert "Traceback" not in err
    assert main(["train", MLP, "--epochs", "1", "--out", str(tmp_path / "run"),
                 "--no-progress"]) == 0
    ckpt = tmp_path / "run" / "checkpoint.npz"
    (tmp_path / "cut.npz").write_bytes(ckpt.read_bytes()[:-100])
    for command in (["eval", MLP, "--checkpoint"], ["train", MLP, "--no-progress", "--out",
                                                     str(tmp_path / "r"), "--resume"]):
        capsys.readouterr()
        assert main(command + [str(tmp_path / "cut.npz")]) == 1
        err = capsys.readouterr().err
        assert f"{tmp_path / 'cut.npz'}: cannot read checkpoint" in err, err
    np.save(tmp_path / "text.npy", np.array(["a", "b"]))
    assert main(["run", str(ROOT / "graphs" / "xor.yaml"), "-i",
                 f"x={tmp_path / 'text.npy'}"]) == 1
    assert "has dtype <U1 (text), but numbers are needed" in capsys.readouterr().err
