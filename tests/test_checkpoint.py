"""Checkpoints: atomic private writes, exact contents, resume bit-identical to an uninterrupted
run (or a line saying why not), and every damaged checkpoint refused before it is used."""
from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys

import numpy as np
import pytest

import flowgrad
from flowgrad.checkpoint import load_checkpoint, load_params, save_checkpoint
from flowgrad.data import load_data
from flowgrad.errors import FlowgradError
from flowgrad.train import Trainer, TrainingInterrupted

# dropout draws from the plan's generator and batch norm updates running statistics, so the
# test covers every kind of state a run carries
NET = """
flowgrad: 1
name: stateful
inputs: {x: {shape: [64]}, label: {shape: [], dtype: int64}}
params:
  W1: {shape: [64, 24], init: {kind: he_normal}}
  gamma: {shape: [24], init: {kind: constant, value: 1.0}}
  beta: {shape: [24], init: {kind: zeros}}
  mean: {shape: [24], init: {kind: zeros}, trainable: false}
  var: {shape: [24], init: {kind: constant, value: 1.0}, trainable: false}
  W2: {shape: [24, 10], init: {kind: glorot_uniform}}
  b2: {shape: [10], init: {kind: zeros}}
nodes:
  fc1: {op: dense, in: {x: x, W: W1}}
  bn: {op: batch_norm, in: {x: fc1, scale: gamma, bias: beta, mean: mean, var: var}}
  h1: {op: relu, in: bn}
  drop: {op: dropout, in: h1, ratio: 0.3}
  logits: {op: dense, in: {x: drop, W: W2, b: b2}}
  loss: {op: softmax_cross_entropy, in: {logits: logits, labels: label}}
outputs: [logits, loss]
train:
  optimizer: {kind: OPT, lr: 0.01}
  schedule: {kind: cosine, warmup_epochs: 1}
  clip_grad_norm: 5.0
  epochs: 4
  batch_size: 50
  validation_split: 0.2
  early_stopping: {monitor: val_loss, patience: 10}
"""


@pytest.fixture(scope="module")
def data():
    return load_data("digits").subset(np.arange(300))


def make(tmp_path, optimizer="adam", dtype=np.float32, schedule="cosine", **kwargs):
    path = tmp_path / "net.yaml"
    path.write_text(NET.replace("OPT", optimizer).replace("cosine", schedule))
    plan = flowgrad.compile(flowgrad.load(str(path)), dtype=dtype)
    return Trainer(plan, **kwargs)


def fingerprint(trainer):
    rows = [{k: v for k, v in r.items() if k != "seconds"} for r in trainer.history.rows]
    return (trainer.plan.state_dict(), trainer.optimizer.state_dict(), rows,
            trainer.rng.bit_generator.state, trainer.plan.rng.bit_generator.state)


def assert_identical(a, b):
    for x, y in zip(a[:2], b[:2]):
        assert x.keys() == y.keys()
        for k in x:
            assert np.array_equal(x[k], y[k]), k
    assert a[2:] == b[2:]


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_resume_at_epoch_boundary_is_bit_identical(tmp_path, data, optimizer):
    full = make(tmp_path, optimizer)
    full.fit(data)
    ckpt = str(tmp_path / "ckpt.npz")

    def crash(trainer):
        if trainer.step == 11:           # first step of epoch 3 (5 steps per epoch)
            raise RuntimeError("power cut")

    first = make(tmp_path, optimizer)
    first.callbacks.append(crash)
    with pytest.raises(RuntimeError):
        first.fit(data, checkpoint=ckpt)
    assert load_checkpoint(ckpt).meta["epoch"] == 2
    resumed = make(tmp_path, optimizer)
    resumed.fit(data, resume=ckpt)
    assert resumed.epoch == 4
    assert_identical(fingerprint(full), fingerprint(resumed))


def test_ctrl_c_mid_epoch_saves_and_resumes_bit_identically(tmp_path, data):
    full = make(tmp_path)
    full.fit(data)
    ckpt = str(tmp_path / "ckpt.npz")

    def press_ctrl_c(trainer):
        if trainer.step == 7:            # in the middle of epoch 2 (5 steps per epoch)
            signal.raise_signal(signal.SIGINT)

    interrupted = make(tmp_path)
    interrupted.callbacks.append(press_ctrl_c)
    with pytest.raises(TrainingInterrupted) as e:
        interrupted.fit(data, checkpoint=ckpt)
    assert e.value.path == ckpt
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    meta = load_checkpoint(ckpt).meta
    assert (meta["epoch"], meta["batch_in_epoch"], meta["step"]) == (1, 2, 7)
    resumed = make(tmp_path)
    resumed.fit(data, resume=ckpt)
    assert_identical(fingerprint(full), fingerprint(resumed))


def test_checkpoint_contents_are_exact(tmp_path, data):
    trainer = make(tmp_path, dtype=np.float64)
    trainer.fit(data, epochs=1)
    path = str(tmp_path / "c.npz")
    trainer.save(path)
    ckpt = load_checkpoint(path)
    for name, value in trainer.plan.params.items():
        assert ckpt.params[name].dtype == np.float64
        assert np.array_equal(ckpt.params[name], value)
    assert not np.array_equal(ckpt.params["mean"], np.zeros(24))     # running statistics
    assert set(ckpt.arrays["optimizer"]) >= {"W1/m", "W1/v", "#steps"}
    assert ckpt.meta["plan_rng"] == trainer.plan.rng.bit_generator.state
    other = make(tmp_path, dtype=np.float64)
    load_params(other.plan, path)
    assert np.array_equal(other.plan.params["W2"], trainer.plan.params["W2"])


def test_write_is_atomic(tmp_path, monkeypatch):
    path = str(tmp_path / "c.npz")
    save_checkpoint(path, {"params": {"w": np.arange(3.0)}}, {"epoch": 1})

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", fail)
    with pytest.raises(OSError):
        save_checkpoint(path, {"params": {"w": np.zeros(3)}}, {"epoch": 2})
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["c.npz"]                    # no temporary file left
    ckpt = load_checkpoint(path)
    assert ckpt.meta["epoch"] == 1 and np.array_equal(ckpt.params["w"], np.arange(3.0))


def test_mismatched_checkpoints_are_errors(tmp_path, data):
    path = str(tmp_path / "c.npz")
    save_checkpoint(path, {"params": {"W1": np.zeros((2, 2))}}, {})
    trainer = make(tmp_path)
    with pytest.raises(FlowgradError, match="missing params"):
        load_params(trainer.plan, path)
    trainer.save(path)
    sgd = make(tmp_path, "sgd")
    with pytest.raises(FlowgradError, match="optimizer 'adam'"):
        sgd.load(path)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(FlowgradError, match="cannot read checkpoint"):
        load_checkpoint(str(tmp_path / "junk.npz"))


# -- checked before resuming ---------------------------------------------------------------

@pytest.fixture(scope="module")
def saved(tmp_path_factory, data):
    """A checkpoint after one epoch (adam, early stopping: every group there is)."""
    folder = tmp_path_factory.mktemp("saved")
    trainer = make(folder)
    trainer.fit(data, epochs=1, checkpoint=str(folder / "c.npz"))
    return str(folder / "c.npz")


def rewrite(path, out, meta=None, drop=(), add=None, change=None):
    """``path``'s checkpoint with metadata keys changed (None: dropped) and arrays edited."""
    ckpt = load_checkpoint(path)
    record = {k: v for k, v in ckpt.meta.items() if k not in ("format", "version")}
    for key, value in (meta or {}).items():
        if value is None:
            record.pop(key)
        else:
            record[key] = value
    arrays = {g: dict(values) for g, values in ckpt.arrays.items()}
    for group, name in drop:
        del arrays[group][name]
    for (group, name), value in {**(add or {}), **(change or {})}.items():
        arrays[group][name] = value
    save_checkpoint(out, arrays, record)
    return str(out)


def meta_key(key):
    return rf"metadata '{key}' \(in '#meta'\): "


BAD = {
    "epoch missing": (dict(meta={"epoch": None}), meta_key("epoch") + "is missing"),
    "negative epoch": (dict(meta={"epoch": -1}),
                       meta_key("epoch") + "must be a non-negative integer, got -1"),
    "fractional step": (dict(meta={"step": 2.5}), meta_key("step") + "must be a non-negative"),
    "text epoch": (dict(meta={"epoch": "2"}), meta_key("epoch") + "must be a non-negative"),
    "bad rng": (dict(meta={"rng": {"bit_generator": "PCG64", "state": 3}}),
                meta_key("rng") + "must be a numpy generator state"),
    "history without epochs": (dict(meta={"history": [{"loss": 1.0}]}), meta_key("history")),
    "early": (dict(meta={"early": {"best": None}}), meta_key("early") + "must be an object"),
    "missing param": (dict(drop=[("params", "W1")]), r"missing params: W1"),
    "extra param": (dict(add={("params", "W9"): np.zeros(2, np.float32)}),
                    r"unknown params: W9"),
    "param shape": (dict(change={("params", "W1"): np.zeros((24, 64), np.float32)}),
                    r"array 'params/W1': has shape \(24, 64\) in the checkpoint but \(64, 24\)"),
    "param dtype": (dict(change={("params", "W2"): np.zeros((24, 10))}),
                    r"'params/W2': has dtype float64 .* float32 \(resume with the --dtype"),
    "param NaN": (dict(change={("params", "b2"): np.full(10, np.nan, np.float32)}),
                  r"'params/b2': holds NaN or infinity"),
    "buffer shape": (dict(change={("optimizer", "W1/m"): np.zeros((64,), np.float32)}),
                     r"'optimizer/W1/m': has shape \(64,\), but param 'W1' has \(64, 24\)"),
    "unknown leaf": (dict(add={("optimizer", "mean/m"): np.zeros(24, np.float32)}),
                     r"'optimizer/mean/m': is state for no trainable param"),
    "missing buffer": (dict(drop=[("optimizer", "W2/v")]),
                       r"'optimizer/W2/v': is missing, while other params have it"),
    "steps": (dict(change={("optimizer", "#steps"): np.asarray(-4)}),
              r"'optimizer/#steps': must be the integer 5"),
    "best shape": (dict(change={("best", "W1"): np.zeros(3, np.float32)}), r"'best/W1'"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_damaged_checkpoints_are_refused_before_anything_is_loaded(tmp_path, saved, case):
    edit, message = BAD[case]
    path = rewrite(saved, tmp_path / "bad.npz", **edit)
    trainer = make(tmp_path)
    before = fingerprint(trainer)
    with pytest.raises(FlowgradError, match=re.escape(path) + ".*" + message):
        trainer.load(path)
    assert_identical(before, fingerprint(trainer))


def test_metadata_that_is_not_json_is_refused(tmp_path, saved):
    arrays = dict(np.load(saved))
    for text, message in (("{not json", "is not valid JSON"), ("[1, 2]", "must be a JSON "
                                                                         "object"),
                          ('{"format": "other", "version": 1}', "unsupported checkpoint")):
        np.savez(tmp_path / "m.npz", **{**arrays, "#meta": np.asarray(text)})
        with pytest.raises(FlowgradError, match=r"m.npz: array '#meta': " + message):
            load_checkpoint(tmp_path / "m.npz")
    np.savez(tmp_path / "m.npz", **{**arrays, "#meta": np.asarray(3.0)})
    with pytest.raises(FlowgradError, match=r"'#meta': must be one JSON string"):
        load_checkpoint(tmp_path / "m.npz")
    np.savez(tmp_path / "m.npz", **{**arrays, "W1": np.zeros(2)})
    with pytest.raises(FlowgradError, match=r"array 'W1': is not a checkpoint entry"):
        load_checkpoint(tmp_path / "m.npz")


def test_evaluating_checks_the_params_too(tmp_path, saved):
    trainer = make(tmp_path)
    bad = rewrite(saved, tmp_path / "nan.npz",
                  change={("params", "W1"): np.full((64, 24), np.inf, np.float32)})
    with pytest.raises(FlowgradError, match=r"nan.npz: array 'params/W1': holds NaN"):
        load_params(trainer.plan, bad)
    ints = rewrite(saved, tmp_path / "int.npz",
                   change={("params", "b2"): np.zeros(10, np.int32)})
    with pytest.raises(FlowgradError, match=r"'params/b2': has dtype int32"):
        load_params(trainer.plan, ints)
    load_params(make(tmp_path, dtype=np.float64).plan, saved)   # another float width: fine


# -- files ---------------------------------------------------------------------------------

def test_checkpoints_are_private_and_stale_temporaries_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = [tmp_path / f".ckpt-{dead.pid}-abcd1234.npz.tmp",     # its process was killed
             tmp_path / ".ckpt-k2j4h5g6.npz.tmp"]                 # from an older flowgrad
    live = tmp_path / f".ckpt-{os.getppid()}-zz.npz.tmp"          # a save in progress
    for path in (*stale, live):
        path.write_bytes(b"half a checkpoint")
    save_checkpoint(tmp_path / "c.npz", {"params": {"w": np.zeros(2)}}, {})
    assert sorted(os.listdir(tmp_path)) == sorted(["c.npz", live.name])
    assert stat.S_IMODE(os.stat(tmp_path / "c.npz").st_mode) == 0o600


# -- resuming with another number of epochs ------------------------------------------------

def notes(lines: list[str]) -> list[str]:
    """The log without the one-line-per-epoch progress a run without a terminal prints."""
    return [line for line in lines if not line.startswith("epoch ")]


@pytest.mark.parametrize("schedule", ["step", "constant"])
def test_resuming_to_more_epochs_is_exact_when_the_schedule_allows(tmp_path, data, schedule):
    full = make(tmp_path, schedule=schedule)
    full.fit(data, epochs=4)
    ckpt = str(tmp_path / "c.npz")
    make(tmp_path, schedule=schedule).fit(data, epochs=2, checkpoint=ckpt)
    lines = []
    resumed = make(tmp_path, schedule=schedule, log=lines.append)
    resumed.fit(data, epochs=4, resume=ckpt)
    assert lines[0] == f"resuming from epoch 2 of 4 ({ckpt}, step 10)"
    assert "exactly an uninterrupted 4-epoch run" in lines[1]
    assert_identical(fingerprint(full), fingerprint(resumed))


def test_a_schedule_over_the_whole_run_says_resuming_is_not_exact(tmp_path, data):
    ckpt = str(tmp_path / "c.npz")
    make(tmp_path).fit(data, epochs=2, checkpoint=ckpt)          # cosine over 2 epochs
    lines = []
    make(tmp_path, log=lines.append).fit(data, epochs=3, resume=ckpt)
    assert notes(lines) == [f"resuming from epoch 2 of 3 ({ckpt}, step 10)",
                     "note: the 'cosine' schedule depends on the run's length: steps 1-10 "
                     "followed it for 2 epochs, the rest follow it for 3, so this is not "
                     "bit-identical to an uninterrupted 3-epoch run"]
    lines.clear()
    make(tmp_path, log=lines.append).fit(data, epochs=2, resume=ckpt)
    assert lines[1] == "nothing to train: the checkpoint's run has done 2 epochs"


def test_resuming_inside_an_epoch_needs_the_same_batches(tmp_path, data):
    ckpt = str(tmp_path / "c.npz")

    def press_ctrl_c(trainer):
        if trainer.step == 3:
            signal.raise_signal(signal.SIGINT)

    with pytest.raises(TrainingInterrupted):
        make(tmp_path, callbacks=[press_ctrl_c]).fit(data, checkpoint=ckpt)
    lines = []
    other = make(tmp_path, log=lines.append)
    other.config.batch_size = 40
    with pytest.raises(FlowgradError, match=r"stopped inside epoch 1 \(after batch 3\) of a run "
                                            r"on 240 samples in batches of 50; this run has 240 "
                                            r"in batches of 40"):
        other.fit(data, resume=ckpt)
    make(tmp_path, log=lines.append).fit(data, resume=ckpt)
    assert notes(lines) == [f"resuming from epoch 0 of 4, batch 3 of 5 of epoch 1 ({ckpt}, "
                            "step 3)"]
