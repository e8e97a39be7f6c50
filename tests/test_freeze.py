"""``Plan.freeze``: a plan whose params are fixed for inference computes what the live plan
computes, derives what it folds from its weights once, still backpropagates to its inputs, and
refuses, in one clear message, whatever would write its params."""
from __future__ import annotations

import numpy as np
import pytest

import flowgrad
from flowgrad.errors import FlowgradError
from flowgrad.loaders.yaml_loader import load_yaml
from flowgrad.optim import SGD
from flowgrad.plan import fusion

from .conftest import GRAPHS


def _resnet14(seed: int = 0):
    """ResNet-14 with random batch-norm statistics and affine params (a fold that does
    something), and a batch of images."""
    net = flowgrad.compile(flowgrad.load(GRAPHS / "resnet14.yaml"))
    rng = np.random.default_rng(seed)
    values = {}
    for name, value in net.params.items():
        if name.endswith(("_m", "_b")):
            values[name] = rng.normal(0, 0.1, value.shape)
        elif name.endswith(("_v", "_g")):
            values[name] = rng.uniform(0.5, 1.5, value.shape)
    net.load_state_dict(values)
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    return net, {"x": x}


def test_a_frozen_plan_computes_what_the_live_plan_computes_and_folds_once(monkeypatch):
    live, feeds = _resnet14()
    frozen = flowgrad.compile(live.graph)
    frozen.load_state_dict(live.state_dict())
    assert frozen.freeze() is frozen and frozen.frozen and not frozen.training
    folds = []
    fold = fusion._folded
    monkeypatch.setattr(fusion, "_folded", lambda *a: (folds.append(1), fold(*a))[1])
    expected = live.forward(feeds, ["logits"], grad=False)
    assert 0 < len(folds) < 15, "live, only the batch norms cheaper to fold than to run"
    runs, counts = [], []
    for _ in range(3):
        folds.clear()
        runs.append(frozen.forward(feeds, ["logits"], grad=False))
        counts.append(len(folds))
    assert counts == [15, 0, 0], "frozen, all 15 on the first run, and then never again"
    for out in runs:
        for name, value in expected.items():
            # a frozen plan folds every batch norm into its conv; the live plan only where
            # scaling the weights is cheaper than a pass over the output: float32 rounding
            np.testing.assert_allclose(out[name], value, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(runs[0][name], runs[2][name])


def test_a_frozen_plan_backpropagates_to_its_input_and_to_no_param():
    live, feeds = _resnet14(1)
    frozen = flowgrad.compile(live.graph)
    frozen.load_state_dict(live.state_dict())
    frozen.freeze()
    name, out = "x", "logits"
    live.eval()
    _, want = live.forward_backward(feeds, {out: 1.0}, wrt=[name], outputs=[out])
    _, got = frozen.forward_backward(feeds, {out: 1.0}, wrt=[name], outputs=[out])
    assert frozen.trainable == [] and set(got) == {name}
    np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6)


def test_nothing_writes_a_frozen_plans_params():
    net, feeds = _resnet14()
    before = net.state_dict()
    net.freeze()
    name = next(iter(net.params))
    with pytest.raises(ValueError, match="read-only"):
        net.params[name][...] = 0
    for attempt, words in [
            (lambda: net.train(), "cannot train: the plan of 'resnet14' is frozen"),
            (lambda: net.load_state_dict(before), "cannot load params"),
            (lambda: SGD(net.params), f"param '{name}' is read-only"),
    ]:
        with pytest.raises(FlowgradError, match=words):
            attempt()
    net.eval()                                   # (evaluation mode is what it is in)
    after = net.state_dict()
    assert all(np.array_equal(after[k], before[k]) for k in before)


def test_a_frozen_plans_outputs_are_the_callers_own_from_the_first_call():
    """An output that is a frozen param, or derived from one and kept (a transposed weight),
    is handed as a writable copy on every call — the first (checked) call as the memoised
    ones — and writing into it changes neither the plan nor the next call's output."""
    graph = load_yaml("outputs.yaml", text="""
flowgrad: 1
name: outputs
inputs:
  x: {shape: [3]}
params:
  W: {shape: [3, 2], init: {kind: he_normal}}
nodes:
  t: {op: transpose, in: W, perm: [1, 0]}
  w: {op: identity, in: W}
  y: {op: dense, in: {x: x, W: W}}
outputs: [t, w, y]
""")
    net = flowgrad.compile(graph)
    W = net.params["W"].copy()
    net.freeze()
    feeds = {"x": np.ones((2, 3), np.float32)}
    for _ in range(3):
        out = net.forward(feeds, grad=False)
        assert all(v.flags.writeable for v in out.values())
        np.testing.assert_array_equal(out["t"], W.T)
        np.testing.assert_array_equal(out["w"], W)
        for v in out.values():
            v[...] = np.nan
    np.testing.assert_array_equal(net.params["W"], W)


def test_the_cli_runs_and_profiles_a_frozen_plan(tmp_path, capsys):
    """``flowgrad run`` and ``flowgrad profile`` evaluate: they freeze the plan they load, so
    ``run`` writes the Python API's frozen forward, bit for bit."""
    from flowgrad.cli import main
    net, feeds = _resnet14(2)
    model = tmp_path / "resnet14.onnx"
    flowgrad.save_onnx(net.export_graph(), str(model))
    ((name, x),) = feeds.items()
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out.npz"
    assert main(["run", str(model), "-i", f"x={tmp_path / 'x.npy'}", "--outputs", "logits",
                 "-o", str(out)]) == 0
    frozen = flowgrad.compile(flowgrad.load(str(model))).freeze()
    want = frozen.forward({name: x}, ["logits"], grad=False)
    with np.load(out) as got:
        assert set(got) == set(want)
        for key, value in want.items():
            np.testing.assert_array_equal(got[key], value)
    capsys.readouterr()
    assert main(["profile", str(model), "--batch", "2", "--repeat", "2",
                 "--outputs", "logits"]) == 0
    table = capsys.readouterr().out
    assert "no gradient" in table and "conv" in table
