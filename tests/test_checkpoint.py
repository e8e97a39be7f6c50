"""Checkpoints: atomic writes, exact contents, and resume bit-identical to an uninterrupted run."""
from __future__ import annotations

import os
import signal

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


def make(tmp_path, optimizer="adam", dtype=np.float32):
    path = tmp_path / "net.yaml"
    path.write_text(NET.replace("OPT", optimizer))
    plan = flowgrad.compile(flowgrad.load(str(path)), dtype=dtype)
    return Trainer(plan)


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
