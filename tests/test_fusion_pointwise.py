"""One-pass regions (:mod:`flowgrad.plan.pointwise`): the compiled program runner against its
numpy reference, each op's ``pointwise`` declaration against its forward, and fused plans
taking the one-pass route against unfused ones, value for value."""
from __future__ import annotations

import numpy as np
import pytest

from flowgrad.op import Context
from flowgrad.plan import fusion, pointwise
from flowgrad.plugins import make_registry

from . import test_fusion_regions as regions

REGISTRY = make_registry()


def _declaring():
    out = []
    for t, cls in sorted(REGISTRY.ops.items()):
        try:
            op = cls()
        except Exception:           # (ops with required attributes declare nothing here)
            continue
        if op.pointwise() is not None:
            out.append(t)
    return out


def test_the_declaring_ops_are_the_expected_ones():
    assert {"add", "sub", "mul", "div", "relu", "clip", "sigmoid", "tanh",
            "hard_sigmoid"} <= set(_declaring())
    for t in _declaring():
        assert REGISTRY.ops[t].rowwise and REGISTRY.ops[t].inplace, t


@pytest.mark.parametrize("op_type,attrs,other", [
    ("add", {}, True), ("sub", {}, True), ("mul", {}, True), ("div", {}, True),
    ("relu", {}, False), ("clip", {"min": -0.5, "max": 1.5}, False),
    ("sigmoid", {}, False), ("tanh", {}, False),
    ("hard_sigmoid", {"alpha": 0.3, "beta": 0.4}, False)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_one_op_region_gives_the_ops_forward(op_type, attrs, other, dtype):
    """Each declaration, translated and run, against the op's own forward (bit for bit)."""
    op = REGISTRY.ops[op_type](**attrs)
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((2, 3, 5, 7)) * 3).astype(dtype)
    inputs = [x]
    kinds = []
    if other:
        inputs.append(rng.uniform(0.5, 2, (1, 3, 1, 1)).astype(dtype))
        kinds = ["plane"]
    (expected,) = op.forward(Context(grad_enabled=False), *inputs)
    program = pointwise.translate([(op, (0,) + (None,) * len(kinds))], kinds)
    scalars = np.empty((6, max(1, len(program.columns))), dtype)
    for j, (kind, value) in enumerate(program.columns):
        scalars[:, j] = value if kind == "c" else np.broadcast_to(
            inputs[1].reshape(1, 3), (2, 3)).reshape(-1)
    got = x.reshape(6, -1).copy()
    dummy = np.empty((1, 1), dtype)
    pointwise.run_region(program.code, scalars, got, dummy, dummy, got, program.registers,
                  program.result)
    np.testing.assert_array_equal(got.reshape(x.shape), expected)


def test_regions_take_the_one_pass_route_and_give_the_unfused_values(tmp_path, monkeypatch):
    calls = []
    run = pointwise.run_region
    monkeypatch.setattr(pointwise, "run_region", lambda *a: (calls.append(1), run(*a))[1])
    taken = 0
    for seed in range(16):
        text, outputs = regions._random_region(seed)
        plan = regions._plan(tmp_path, text)
        plan.params["k"][...] = np.abs(plan.params["k"]) + 0.5
        feeds = {"x": regions._x(2, 3, 5, 5, seed), "y": regions._x(2, 4, 5, 5, seed + 100)}
        before = len(calls)
        unfused = plan.forward(feeds, outputs=outputs)
        fused = plan.forward(feeds, outputs=outputs, grad=False)
        for name in outputs:
            np.testing.assert_array_equal(fused[name], unfused[name], err_msg=text)
        taken += len(calls) > before
    assert taken >= 8, "most random regions run in one pass"


ROWS = """
flowgrad: 1
name: gates
inputs:
  x: {shape: [16]}
  c: {shape: [8]}
params:
  W: {shape: [16, 8], init: {kind: he_normal}}
  b: {shape: [8], init: {kind: zeros}}
  v: {shape: [8], init: {kind: constant, value: 0.5}}
constants:
  s: {value: 0.25}
nodes:
  d:  {op: dense, in: {x: x, W: W}}
  a:  {op: add, in: [d, BIAS]}
  g:  {op: sigmoid, in: a}
  m:  {op: mul, in: [g, c]}
  t:  {op: tanh, in: m}
  out: {op: sub, in: [t, s]}
outputs: [out]
"""


@pytest.mark.parametrize("bias", ["b", "s"])
@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("frozen", [False, True])
def test_rows_of_features_run_in_one_pass_where_extras_allow(tmp_path, monkeypatch, bias, n,
                                                             frozen):
    """A region on a dense layer's (N, features) output (an LSTM's gates at batch 1): one
    plane of all its values when each extra holds the block's values or is a single value —
    the bias (features,) only at N = 1 — else op by op; bit for bit the unfused values."""
    calls = []
    run = pointwise.run_region
    monkeypatch.setattr(pointwise, "run_region", lambda *a: (calls.append(1), run(*a))[1])
    plan = regions._plan(tmp_path, ROWS.replace("BIAS", bias))
    if frozen:
        plan.freeze()
    rng = np.random.default_rng(n)
    feeds = {"x": rng.standard_normal((n, 16)).astype(np.float32),
             "c": rng.standard_normal((n, 8)).astype(np.float32)}
    if not frozen:
        unfused = plan.forward(feeds)["out"]
    else:
        unfused = regions._plan(tmp_path, ROWS.replace("BIAS", bias)).forward(feeds)["out"]
    for _ in range(2):      # (the second run reads the layout kept, constants baked)
        fused = plan.forward(feeds, grad=False)["out"]
        np.testing.assert_array_equal(fused, unfused)
    assert [s for s in regions._names(plan) if "#" not in s] == ["d"], "one fused step"
    one_pass = bias == "s" or n == 1
    assert bool(calls) == one_pass
