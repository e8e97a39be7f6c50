"""Optimizers, schedules and clipping against their textbook formulas; the plugin hook."""
from __future__ import annotations

import math

import numpy as np
import pytest

import flowgrad
from flowgrad.errors import FlowgradError, PluginError
from flowgrad.optim import (SGD, Adam, AdamW, Optimizer, RMSprop, clip_by_global_norm,
                            global_norm, make_optimizer, make_schedule, optimizer_kinds)

G = [np.array([0.5, -1.0, 2.0]), np.array([-0.25, 0.75, 1.5]), np.array([1.0, 1.0, -3.0])]


def run(opt_cls, steps=3, **kw):
    p = np.array([1.0, -2.0, 0.5])
    opt = opt_cls({"p": p}, **kw)
    for g in G[:steps]:
        opt.step({"p": g})
    return p


def test_sgd_plain_momentum_nesterov_match_reference():
    lr, mu, wd = 0.1, 0.9, 0.01
    for nesterov in (False, True):
        p, v = np.array([1.0, -2.0, 0.5]), np.zeros(3)
        for g in G:
            g = g + wd * p
            v = mu * v + g
            p = p - lr * (g + mu * v if nesterov else v)
        got = run(SGD, lr=lr, momentum=mu, nesterov=nesterov, weight_decay=wd)
        np.testing.assert_allclose(got, p, rtol=1e-12)
    np.testing.assert_allclose(run(SGD, steps=1, lr=0.5), [1.0, -2.0, 0.5] - 0.5 * G[0])


def test_adam_and_adamw_match_reference():
    lr, b1, b2, eps, wd = 0.01, 0.9, 0.999, 1e-8, 0.1
    for decoupled in (False, True):
        p, m, v = np.array([1.0, -2.0, 0.5]), np.zeros(3), np.zeros(3)
        for t, g in enumerate(G, 1):
            if decoupled:
                p = p - lr * wd * p
            else:
                g = g + wd * p
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            p = p - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
        got = run(AdamW if decoupled else Adam, lr=lr, weight_decay=wd)
        np.testing.assert_allclose(got, p, rtol=1e-12)


def test_rmsprop_matches_reference():
    lr, alpha, eps = 0.01, 0.99, 1e-8
    p, sq = np.array([1.0, -2.0, 0.5]), np.zeros(3)
    for g in G:
        sq = alpha * sq + (1 - alpha) * g * g
        p = p - lr * g / (np.sqrt(sq) + eps)
    np.testing.assert_allclose(run(RMSprop, lr=lr), p, rtol=1e-12)


def test_lr_mult_and_decay_mult_are_per_leaf():
    a, b = np.ones(2), np.ones(2)
    opt = SGD({"a": a, "b": b}, lr=0.1, weight_decay=1.0, lr_mult={"b": 2.0},
              decay_mult={"a": 0.0})
    opt.step({"a": np.zeros(2), "b": np.zeros(2)})
    np.testing.assert_allclose(a, [1.0, 1.0])              # no decay on a
    np.testing.assert_allclose(b, [0.8, 0.8])              # decay 1.0 at lr 0.2


def test_float32_leaves_stay_float32():
    p = np.ones(4, dtype=np.float32)
    for cls in (SGD, Adam, AdamW, RMSprop):
        opt = cls({"p": p}, lr=0.1, weight_decay=0.01)
        opt.step({"p": np.full(4, 0.5, dtype=np.float32)})
        assert p.dtype == np.float32
        assert all(v.dtype == np.float32 for v in opt.state["p"].values())


def test_state_dict_round_trip_continues_identically():
    def fresh():
        return np.array([1.0, -2.0, 0.5])
    p1 = fresh()
    a = Adam({"p": p1}, lr=0.05)
    for g in G[:2]:
        a.step({"p": g})
    p2 = p1.copy()
    b = Adam({"p": p2}, lr=0.05)
    b.load_state_dict(a.state_dict())
    a.step({"p": G[2]})
    b.step({"p": G[2]})
    assert np.array_equal(p1, p2)
    assert b.steps == 3


def test_unknown_setting_and_kind_are_errors():
    with pytest.raises(FlowgradError, match="did you mean 'momentum'"):
        SGD({"p": np.ones(1)}, momentun=0.9)
    with pytest.raises(FlowgradError, match="did you mean 'adam'"):
        make_optimizer("adan", {"p": np.ones(1)})


def test_clip_by_global_norm():
    grads = {"a": np.array([3.0, 0.0]), "b": np.array([0.0, 4.0])}
    assert global_norm(grads) == pytest.approx(5.0)
    clipped, norm = clip_by_global_norm(grads, 1.0)
    assert norm == pytest.approx(5.0)
    assert global_norm(clipped) == pytest.approx(1.0)
    np.testing.assert_allclose(clipped["a"] / clipped["b"].sum(), [0.75, 0.0])
    same, _ = clip_by_global_norm(grads, 10.0)
    assert same["a"] is grads["a"]


def test_schedules():
    step = make_schedule(1.0, 100, 10, kind="step", step_epochs=2, gamma=0.5)
    assert [step(s) for s in (0, 19, 20, 40)] == [1.0, 1.0, 0.5, 0.25]
    cosine = make_schedule(1.0, 100, 10, kind="cosine", min_lr=0.1)
    assert cosine(0) == pytest.approx(1.0)
    assert cosine(50) == pytest.approx(0.55)
    assert cosine(100) == pytest.approx(0.1)
    warm = make_schedule(1.0, 100, 10, kind="cosine", warmup_epochs=1)
    assert [warm(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert warm(10) == pytest.approx(1.0)
    with pytest.raises(FlowgradError, match="did you mean 'cosine'"):
        make_schedule(1.0, 10, 1, kind="cosin")


class SignSGD(Optimizer):
    """A plugin optimizer: step by the sign of the gradient."""

    kind = "signsgd"
    defaults = {"scale": 1.0}

    def update(self, name, leaf, grad, state, lr, decay):
        leaf -= lr * self.hyper["scale"] * np.sign(grad)


class OptimizerPlugin:
    @flowgrad.hookimpl
    def flowgrad_register_optimizers(self, optimizers):
        optimizers.add(SignSGD)


def test_plugin_optimizer_through_hook_trains_from_yaml(tmp_path):
    registry = flowgrad.make_registry(plugins=[OptimizerPlugin()], autoload=False)
    assert optimizer_kinds(registry)["signsgd"] is SignSGD
    p = np.array([1.0, -1.0])
    make_optimizer("signsgd", {"p": p}, registry=registry, lr=0.5, scale=2.0).step(
        {"p": np.array([3.0, -0.1])})
    np.testing.assert_allclose(p, [0.0, 0.0])
    path = tmp_path / "g.yaml"
    path.write_text(LINEAR.replace("OPTIMIZER", "{kind: signsgd, lr: 0.01, scale: 1.0}"))
    graph = flowgrad.load(str(path), registry=registry)
    from flowgrad.data import Dataset
    from flowgrad.train import Trainer
    plan = flowgrad.compile(graph)
    trainer = Trainer(plan, registry=registry)
    assert trainer.optimizer.kind == "signsgd"
    x = np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32)
    before = plan.params["W"].copy()
    trainer.fit(Dataset(x, (x[:, 0] > 0).astype(np.int64)), epochs=1)
    moves = np.abs(plan.params["W"] - before) / 0.01     # sign steps of exactly lr each
    assert moves.max() > 0
    np.testing.assert_allclose(moves, np.round(moves), atol=1e-3)


def test_plugin_optimizer_clash_is_an_error():
    class Clash(SignSGD):
        kind = "sgd"

    class Plugin:
        @flowgrad.hookimpl
        def flowgrad_register_optimizers(self, optimizers):
            optimizers.add(Clash)

    registry = flowgrad.make_registry(plugins=[Plugin()], autoload=False)
    with pytest.raises(PluginError, match=r"optimizer 'sgd' is registered by more than one "
                                          r"plugin: 'flowgrad' \(flowgrad\) and 'Plugin'"):
        optimizer_kinds(registry)


LINEAR = """
flowgrad: 1
name: linear
inputs: {x: {shape: [2]}, label: {shape: [], dtype: int64}}
params:
  W: {shape: [2, 2], init: {kind: glorot_uniform}}
  b: {shape: [2], init: {kind: zeros}}
nodes:
  logits: {op: dense, in: {x: x, W: W, b: b}}
  loss: {op: softmax_cross_entropy, in: {logits: logits, labels: label}}
outputs: [logits, loss]
train: {optimizer: OPTIMIZER, epochs: 1, batch_size: 16}
"""


def test_input_optimization_uses_the_same_optimizers():
    """An optimizer does not care whether a leaf is a weight or an input: minimise |x - t|^2."""
    x = np.zeros(3)
    target = np.array([1.0, -2.0, 3.0])
    opt = make_optimizer("adam", {"x": x}, lr=0.1)
    for _ in range(300):
        opt.step({"x": 2 * (x - target)})
    np.testing.assert_allclose(x, target, atol=1e-2)
    assert math.isfinite(float(x.sum()))
