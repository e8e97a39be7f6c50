"""Plan-owned fusion: the ops' declarations (``rowwise``, ``inplace``, ``commutative``,
``affine``, ``channel_weights``), each checked against the op's own forward, and the fused
programs against unfused ones."""
from __future__ import annotations

import numpy as np
import pytest

from flowgrad.backend import DEFAULT
from flowgrad.plan.fusion import Placed, _fold_ports, _folded
from flowgrad.loaders.yaml_loader import load_yaml
from flowgrad.op import Context
from flowgrad.plugins import make_registry
from flowgrad.plan import Plan

from .cases import all_cases

REGISTRY = make_registry()
CASES = all_cases()
INPLACE = sorted(t for t, cls in REGISTRY.ops.items() if cls.inplace)
ROWWISE = sorted(t for t, cls in REGISTRY.ops.items() if cls.rowwise)


def _eval_cases(op_type):
    return [c for c in CASES[op_type] if not c.training]


def _eval(op, *inputs, backend=None):
    return op.forward(Context(grad_enabled=False, backend=backend), *inputs)


def test_the_fusable_ops_are_the_expected_ones():
    assert {"relu", "leaky_relu", "clip", "sigmoid", "tanh", "hard_sigmoid",
            "batch_norm", "add", "sum"} <= set(INPLACE)
    assert {"conv", "conv_transpose", "dense", "sum", "add", "max_pool"} <= set(ROWWISE)
    assert set(INPLACE) <= set(ROWWISE), "a fused consumer runs block by block"


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("op_type", INPLACE)
def test_inplace_ops_run_in_place_when_their_output_is_placed_over_the_input(op_type, dtype):
    checked = 0
    for case in _eval_cases(op_type):
        op = REGISTRY.ops[op_type](**case.attrs)
        inputs = [v if v is None or v.dtype.kind != "f" else v.astype(dtype)
                  for v in case.materialize()]
        (expected,) = _eval(op, *inputs)[:1]
        if expected.shape != inputs[0].shape or expected.dtype != inputs[0].dtype:
            continue                                # (broadcasting x up: not fusable)
        x = inputs[0].copy()
        (y,) = _eval(op, x, *inputs[1:], backend=Placed(DEFAULT, x))[:1]
        assert y is x, f"{op_type} declares inplace but did not take the placed output"
        np.testing.assert_array_equal(x, expected, err_msg=f"{op_type} {case.id}")
        checked += 1
    assert checked, f"{op_type} has no evaluation case where inplace applies"


@pytest.mark.parametrize("op_type", ROWWISE)
def test_rowwise_ops_give_each_batch_row_from_the_same_rows_of_the_inputs(op_type):
    checked = 0
    for case in _eval_cases(op_type):
        op = REGISTRY.ops[op_type](**case.attrs)
        if not op.rowwise:                   # (max_pool's flat indices span the batch)
            continue
        inputs = case.materialize()
        outs = _eval(op, *inputs)
        n = len(inputs[0]) if np.ndim(inputs[0]) else 0
        if n < 2 or any(np.ndim(y) == 0 or len(y) != n for y in outs):
            continue
        # the batched inputs: the first, and those of its very shape (add, sum); weights and
        # broadcast operands are shared by all rows
        rows = [v[1:] if i == 0 or np.shape(v) == np.shape(inputs[0]) else v
                for i, v in enumerate(inputs)]
        for y, part in zip(outs, _eval(op, *rows)):
            np.testing.assert_allclose(part, y[1:], rtol=1e-12, atol=1e-12,
                                       err_msg=f"{op_type} {case.id}")
        checked += 1
    assert checked, f"{op_type} has no evaluation case with a batch of two or more"


AFFINE = sorted(t for t, cls in REGISTRY.ops.items() if cls.affine is not None)
FOLDERS = sorted(t for t, cls in REGISTRY.ops.items() if cls.channel_weights)


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def test_affine_consumers_give_their_forward():
    assert {"batch_norm"} <= set(AFFINE) and {"conv", "dense"} <= set(FOLDERS)
    for op_type in AFFINE:
        assert _eval_cases(op_type), f"{op_type} has no evaluation cases"
        for case in _eval_cases(op_type):
            op = REGISTRY.ops[op_type](**case.attrs)
            x, *rest = case.materialize()
            scale, shift = op.affine(Context(grad_enabled=False), *rest)
            per_channel = (1, -1) + (1,) * (x.ndim - 2)
            (y,) = _eval(op, x, *rest)
            np.testing.assert_allclose(y, x * scale.reshape(per_channel)
                                       + shift.reshape(per_channel), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("op_type,inputs,attrs", [
    ("conv", [_rand(4, 3, 9, 9), _rand(6, 3, 3, 3, seed=1), _rand(6, seed=2)], {"pads": [1] * 4}),
    ("conv", [_rand(4, 4, 7, 7), _rand(6, 2, 1, 1, seed=1), None], {"group": 2}),
    ("dense", [_rand(50, 3), _rand(3, 6, seed=1), _rand(6, seed=2)], {}),
    ("dense", [_rand(50, 3), _rand(3, 6, seed=1), None], {}),
])
def test_folding_into_channel_weights_gives_the_scaled_and_shifted_output(op_type, inputs, attrs):
    op = REGISTRY.ops[op_type](**attrs)
    bn = REGISTRY.ops["batch_norm"]()
    scale, shift = _rand(6, seed=3), _rand(6, seed=4)
    (y,) = _eval(op, *inputs)
    ports = _fold_ports(op, bn, y.ndim)
    folded = list(inputs)
    new = _folded(ports, tuple(inputs[i] for i, _ in ports), scale, shift)
    for (i, _), value in zip(ports, new):
        folded[i] = value
    (z,) = _eval(op, *folded)
    per_channel = (1, -1) + (1,) * (y.ndim - 2)
    np.testing.assert_allclose(z, y * scale.reshape(per_channel) + shift.reshape(per_channel),
                               rtol=1e-10, atol=1e-10)
    for v, before in zip(inputs, [None if v is None else v.copy() for v in inputs]):
        assert v is None or np.array_equal(v, before), "the live weights are left untouched"


def test_dense_on_three_axes_does_not_fold_into_a_channel_affine():
    dense, bn = REGISTRY.ops["dense"](), REGISTRY.ops["batch_norm"]()
    assert _fold_ports(dense, bn, 3) is None and _fold_ports(dense, bn, 2) is not None


NET = """
flowgrad: 1
name: fused
seed: 0
inputs:
  x: {shape: [3, 12, 12]}
params:
  K1: {shape: [8, 3, 3, 3], init: {kind: he_normal}}
  c1: {shape: [8], init: {kind: zeros}}
  g1: {shape: [8], init: {kind: zeros}}
  b1: {shape: [8], init: {kind: zeros}}
  m1: {shape: [8], init: {kind: zeros}, trainable: false}
  v1: {shape: [8], init: {kind: zeros}, trainable: false}
  K2: {shape: [8, 8, 3, 3], init: {kind: he_normal}}
  W: {shape: [288, 5], init: {kind: glorot_uniform}}
nodes:
  conv1: {op: conv, in: {x: x, W: K1, b: c1}, pads: [1, 1, 1, 1]}
  bn1:   {op: batch_norm, in: {x: conv1, scale: g1, bias: b1, mean: m1, var: v1}}
  h1:    {op: relu, in: bn1}
  conv2: {op: conv, in: {x: h1, W: K2}, pads: [1, 1, 1, 1]}
  res:   {op: sum, in: [conv2, h1]}
  h2:    {op: clip, in: res, min: 0.0, max: 6.0}
  pool:  {op: max_pool, in: h2, kernel_shape: [2, 2], strides: [2, 2]}
  flat:  {op: flatten, in: pool}
  fc:    {op: dense, in: {x: flat, W: W}}
  out:   {op: sigmoid, in: fc}
outputs: [out]
"""


@pytest.fixture
def plan(tmp_path):
    plan = Plan(load_yaml(str(tmp_path / "fused.yaml"), text=NET))
    rng = np.random.default_rng(1)
    for name in ("c1", "g1", "b1", "m1"):
        plan.params[name][...] = rng.standard_normal(8)
    plan.params["v1"][...] = rng.uniform(0.5, 2.0, 8)
    return plan


def _x(n=4):
    return np.random.default_rng(2).standard_normal((n, 3, 12, 12)).astype(np.float32)


def _names(plan, outputs, fused):
    program = plan._forward_programs[(outputs, fused)]
    return [step.name for *_, step in program.run]


def test_evaluation_fuses_chains_and_gives_the_unfused_values(plan):
    x = _x()
    unfused = plan.forward({"x": x})["out"]               # grad=True: nothing is fused
    fused = plan.forward({"x": x}, grad=False)["out"]
    np.testing.assert_allclose(fused, unfused, rtol=1e-5, atol=1e-6)   # bn1 folded into K1
    # conv1+bn1+h1, then h1's branch (two readers), conv2+res+h2 (the residual sum's shortcut
    # is ready before conv2 runs), pool, flat, fc+out
    assert _names(plan, ("out",), True) == ["conv1", "h1#branch", "conv2", "pool", "flat", "fc"]
    assert len(_names(plan, ("out",), False)) == 11


def test_training_mode_and_gradients_are_never_fused(plan):
    plan.train()
    plan.forward({"x": _x()}, grad=False)
    assert len(_names(plan, ("out",), False)) == 11
    assert (("out",), True) not in plan._forward_programs


def test_a_requested_intermediate_is_not_fused_away(plan):
    x = _x()
    reference = plan.forward({"x": x}, outputs=("bn1", "out"))
    fused = plan.forward({"x": x}, outputs=("bn1", "out"), grad=False)
    for name in ("bn1", "out"):
        np.testing.assert_allclose(fused[name], reference[name], rtol=1e-5, atol=1e-6)
    assert _names(plan, ("bn1", "out"), True)[:2] == ["conv1", "h1"]


def test_param_changes_show_in_the_next_fused_evaluation(plan):
    """The fused chain reads the live params: nothing is folded in once and kept."""
    x = _x(2)
    before = plan.forward({"x": x}, grad=False)["out"]
    plan.params["m1"][...] += 0.5
    after = plan.forward({"x": x}, grad=False)["out"]
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, plan.forward({"x": x})["out"], rtol=1e-5, atol=1e-6)
