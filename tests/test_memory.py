"""Buffer recycling (flowgrad.plan.memory): only memory nothing else can see is reused."""
from __future__ import annotations

import numpy as np
import pytest

import flowgrad
from flowgrad.plan.memory import MIN_BYTES, BufferPool

BIG = (2, MIN_BYTES // 4)          # float32: twice the smallest pooled size


def _release_new(pool, shape=BIG, **flags):
    """Release a fresh array that only the value list refers to; returns its address."""
    vals = [np.ones(shape, np.float32)]
    address = vals[0].ctypes.data
    for name, value in flags.items():
        setattr(vals[0].flags, name, value)
    pool.release(vals, 0)
    assert vals == [None]
    return address


def test_an_unreferenced_array_is_reused_under_another_shape():
    pool = BufferPool()
    address = _release_new(pool)
    reused = pool.empty(BIG[::-1], np.float32)
    assert reused.shape == BIG[::-1] and reused.ctypes.data == address
    assert (pool.reused, pool.allocated) == (1, 0)


def test_releasing_a_view_of_a_pooled_buffer_gives_the_buffer_back():
    pool = BufferPool()
    address = _release_new(pool)
    vals = [pool.empty(BIG, np.float32)[:, :1]]     # e.g. an op cropping its output
    pool.release(vals, 0)
    assert pool.empty(BIG, np.float32).ctypes.data == address
    assert pool.reused == 2


def test_small_and_read_only_arrays_are_not_pooled():
    pool = BufferPool()
    _release_new(pool, shape=(4,))
    _release_new(pool, writeable=False)
    assert pool.nbytes == 0


@pytest.mark.parametrize("holder", ["name", "view", "other_slot"])
def test_memory_that_something_else_can_see_is_not_reused(holder):
    pool = BufferPool()
    vals = [np.ones(BIG, np.float32), None]
    seen = None                     # only the one holder under test refers to the array
    if holder == "name":
        seen = vals[0]
    elif holder == "view":
        seen = vals[0][1:]
    else:
        vals[1] = vals[0]
    pool.release(vals, 0)
    assert pool.nbytes == 0
    pool.empty(BIG, np.float32)[...] = 7
    assert np.all((vals[1] if seen is None else seen) == 1)


def test_the_pool_keeps_no_more_than_one_run_asked_for():
    pool = BufferPool()
    for _ in range(3):
        _release_new(pool)
    pool.empty(BIG, np.float32)                 # asked for one: one of the two left is kept
    pool.end_run()
    assert pool.nbytes == np.ones(BIG, np.float32).nbytes
    pool.end_run()                              # a run that asked for nothing keeps nothing
    assert pool.nbytes == 0


RESIDUAL = """
flowgrad: 1
inputs:
  x: {shape: [4, 24, 24]}
params:
  w1: {shape: [8, 4, 3, 3], init: {kind: he_normal}}
  w2: {shape: [8, 8, 3, 3], init: {kind: he_normal}}
nodes:
  c1: {op: conv, in: {x: x, W: w1}, pads: [1, 1, 1, 1]}
  r1: {op: relu, in: c1}
  c2: {op: conv, in: {x: r1, W: w2}, pads: [1, 1, 1, 1]}
  s:  {op: sum, in: [c2, r1]}
  r2: {op: relu, in: s}
  p:  {op: max_pool, in: r2, kernel_shape: [2, 2], strides: [2, 2]}
outputs: [p]
"""


@pytest.mark.parametrize("grad", [False, True])
def test_a_plan_reuses_its_activations_and_never_touches_what_it_returned(tmp_path, grad):
    path = tmp_path / "residual.yaml"
    path.write_text(RESIDUAL)
    plan = flowgrad.compile(flowgrad.load(path))
    rng = np.random.default_rng(0)
    x1, x2 = (rng.standard_normal((8, 4, 24, 24)).astype(np.float32) for _ in range(2))
    first = plan.forward({"x": x1}, outputs=["p", "r1"], grad=grad)
    saved = {k: v.copy() for k, v in first.items()}
    for _ in range(3):
        second = plan.forward({"x": x2}, outputs=["p", "r1"], grad=grad)
    for k in first:                             # results handed out stay the caller's
        np.testing.assert_array_equal(first[k], saved[k])
        assert not np.shares_memory(first[k], second[k])
    np.testing.assert_allclose(second["p"], plan.forward({"x": x2}, grad=grad)["p"])
    assert plan._pool.reused > 0


TRAINING = """
flowgrad: 1
inputs:
  x: {shape: [4, 24, 24]}
params:
  w1: {shape: [8, 4, 3, 3], init: {kind: he_normal}}
  g: {shape: [8], init: {kind: constant, value: 1.0}}
  b: {shape: [8], init: {kind: zeros}}
  m: {shape: [8], init: {kind: zeros}, trainable: false}
  v: {shape: [8], init: {kind: constant, value: 1.0}, trainable: false}
  w2: {shape: [8, 8, 3, 3], init: {kind: he_normal}}
  W: {shape: [1152, 3], init: {kind: glorot_uniform}}
nodes:
  c1: {op: conv, in: {x: x, W: w1}, pads: [1, 1, 1, 1]}
  n1: {op: batch_norm, in: {x: c1, scale: g, bias: b, mean: m, var: v}}
  r1: {op: relu, in: n1}
  c2: {op: conv, in: {x: r1, W: w2}, pads: [1, 1, 1, 1]}
  s:  {op: sum, in: [c2, r1]}
  p:  {op: max_pool, in: s, kernel_shape: [2, 2], strides: [2, 2]}
  f:  {op: flatten, in: p}
  y:  {op: dense, in: {x: f, W: W}}
  loss: {op: reduce_mean, in: y}
outputs: [loss]
"""


def test_training_steps_recycle_gradients_and_saved_values_and_stay_exact(tmp_path):
    """Backward gives its consumed gradients and saved values back to the pool; the next steps
    reuse them, and every step's gradients are the same bits as a fresh plan's."""
    path = tmp_path / "training.yaml"
    path.write_text(TRAINING)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 4, 24, 24)).astype(np.float32)
    plan = flowgrad.compile(flowgrad.load(path)).train()
    _, first = plan.forward_backward({"x": x}, {"loss": 1.0}, wrt=["x"])
    kept = {k: v.copy() for k, v in first.items()}
    allocated = plan._pool.allocated
    for _ in range(3):
        _, grads = plan.forward_backward({"x": x}, {"loss": 1.0}, wrt=["x"])
    # after the first step, only what is handed to the caller is new: the input's gradient
    # (the params' are below the pool's size); the caller still holds the last one
    assert plan._pool.allocated == allocated + 3
    assert plan._pool.reused > 0
    for k in kept:                       # gradients handed out stay the caller's
        np.testing.assert_array_equal(first[k], kept[k])
        assert not np.shares_memory(first[k], grads[k])
    fresh = flowgrad.compile(flowgrad.load(path)).train()
    for _ in range(4):                   # (the running statistics moved four times too)
        _, expected = fresh.forward_backward({"x": x}, {"loss": 1.0}, wrt=["x"])
    for k in expected:
        np.testing.assert_array_equal(grads[k], expected[k], err_msg=k)
