"""The profiler: ``flowgrad.profile`` on a small graph (every step timed, fused steps named by
what they run, totals consistent, the plan and its results untouched, backward rows with
``grad``) and ``flowgrad profile`` as a user runs it.  Structure only: no assertion on speed."""
from __future__ import annotations

import numpy as np
import pytest

import flowgrad
from flowgrad.plan.profile import Profile

from .conftest import GRAPHS
from .test_cli import flowgrad as cli

#: conv -> batch norm -> relu (one fused step when evaluating), a residual add, a branch, a
#: classifier and a loss: every kind of step the profile must name
GRAPH = """
flowgrad: 1
name: small
inputs:
  x: {shape: [2, 6, 6]}
  label: {shape: [], dtype: int64}
params:
  K: {shape: [4, 2, 3, 3], init: {kind: he_normal, seed: 1}}
  g: {shape: [4], init: {kind: constant, value: 1.0}}
  b: {shape: [4], init: {kind: zeros}}
  m: {shape: [4], init: {kind: zeros}, trainable: false}
  v: {shape: [4], init: {kind: constant, value: 1.0}, trainable: false}
  W: {shape: [144, 3], init: {kind: glorot_uniform, seed: 2}}
nodes:
  conv: {op: conv, in: {x: x, W: K}, pads: [1, 1, 1, 1]}
  bn: {op: batch_norm, in: {x: conv, scale: g, bias: b, mean: m, var: v}}
  act: {op: relu, in: bn}
  res: {op: add, in: [act, act]}
  flat: {op: flatten, in: res}
  logits: {op: dense, in: {x: flat, W: W}}
  loss: {op: softmax_cross_entropy, in: {logits: logits, labels: label}}
outputs: [logits, loss]
train:
  minimize: loss
"""


@pytest.fixture
def graph_file(tmp_path):
    path = tmp_path / "small.yaml"
    path.write_text(GRAPH)
    return path


@pytest.fixture
def plan(graph_file):
    return flowgrad.compile(flowgrad.load(str(graph_file)))


@pytest.fixture
def feeds():
    rng = np.random.default_rng(0)
    return {"x": rng.standard_normal((3, 2, 6, 6)).astype(np.float32),
            "label": np.array([0, 2, 1])}


def program_nodes(plan, outputs, fuse):
    return [s.name for s in plan._forward_programs[(outputs, fuse)].steps]


def test_every_step_is_a_row_and_fused_steps_say_what_they_run(plan, feeds):
    plan.eval()
    result = flowgrad.profile(plan, feeds, repeat=3)
    assert isinstance(result, Profile) and result.runs == 3 and not result.grad
    nodes = [n for row in result.steps for n in row.nodes]
    assert sorted(nodes) == sorted(program_nodes(plan, ("logits", "loss"), True))
    fused = [row for row in result.steps if len(row.nodes) > 1]
    assert [(r.name, r.op) for r in fused] == [("conv", "conv+batch_norm+relu+add")]
    assert fused[0].nodes[0] == "conv" and set(fused[0].nodes[1:]) >= {"bn", "act", "res"}
    assert fused[0].label.startswith("conv (+")
    assert {r.name for r in result.steps} == {"conv", "flat", "logits", "loss"}
    for row in result.steps:
        assert row.phase == "forward" and row.calls == 3 and row.seconds >= 0
        assert row.mean == pytest.approx(row.seconds / 3)


def test_totals_add_up(plan, feeds):
    result = flowgrad.profile(plan, feeds, repeat=2)
    by_op = result.by_op()
    assert sum(r.seconds for r in by_op) == pytest.approx(result.step_seconds)
    assert sum(r.steps for r in by_op) == len(result.steps)
    assert [r.seconds for r in by_op] == sorted((r.seconds for r in by_op), reverse=True)
    assert result.step_seconds + result.framework == pytest.approx(result.wall)
    assert 0 < result.step_seconds <= result.wall
    table = result.table(top=2)
    for heading in ("top 2 steps", "by op type", "totals", "framework", "wall"):
        assert heading in table
    assert str(result) == result.table()


def test_profiling_changes_neither_results_nor_the_plan(plan, feeds):
    plan.train()              # batch norm updates its running statistics, in place
    before = plan.state_dict()
    rng = plan.rng.bit_generator.state
    result = flowgrad.profile(plan, feeds, repeat=2, grad=True)
    for name, value in plan.state_dict().items():
        np.testing.assert_array_equal(value, before[name])
    assert plan.rng.bit_generator.state == rng
    plan.eval()
    expected = plan.forward(feeds, grad=False)
    programs = {k: (p, p.run, list(p.run)) for k, p in plan._forward_programs.items()}
    profiled = flowgrad.profile(plan, feeds, repeat=2).outputs
    for name, value in plan.forward(feeds, grad=False).items():
        np.testing.assert_array_equal(value, expected[name])
        np.testing.assert_array_equal(profiled[name], expected[name])
    for key, (program, run, entries) in programs.items():
        assert plan._forward_programs[key] is program and program.run is run
        assert program.run == entries          # the very same functions, no timer left
    assert set(result.outputs) == {"logits", "loss"}


def test_grad_profiles_the_backward_of_each_node(plan, feeds):
    plan.train()
    result = flowgrad.profile(plan, feeds, repeat=2, grad=True)
    forward = [r for r in result.steps if r.phase == "forward"]
    backward = [r for r in result.steps if r.phase == "backward"]
    assert [r.name for r in forward] == program_nodes(plan, ("logits", "loss"), False)
    assert all(len(r.nodes) == 1 for r in result.steps)       # nothing fused with a backward
    # the seed is the train: section's loss; backward runs from it to the params
    assert [r.name for r in backward] == ["loss", "logits", "flat", "res",
                                            "act#branch", "act", "bn", "conv"]
    assert backward[0].label == "loss (backward)"
    assert backward[4].op == "branch" and backward[4].kind == "branch (backward)"
    assert "conv (backward)" in {r.kind for r in result.by_op()}


def test_warmup_and_repeat_must_be_positive(plan, feeds):
    with pytest.raises(flowgrad.FlowgradError, match="repeat >= 1 and warmup >= 1"):
        flowgrad.profile(plan, feeds, repeat=0)


def test_grad_needs_a_float_output_to_seed(tmp_path):
    path = tmp_path / "argmax.yaml"
    path.write_text("flowgrad: 1\nname: argmax\ninputs: {x: {shape: [3]}}\n"
                    "nodes:\n  k: {op: argmax, in: x, axis: 1}\noutputs: [k]\n")
    net = flowgrad.compile(flowgrad.load(str(path)))
    with pytest.raises(flowgrad.FlowgradError, match="no float output among k"):
        flowgrad.profile(net, {"x": np.ones((2, 3), np.float32)}, grad=True)


def test_the_command_prints_the_report(graph_file, tmp_path):
    x = tmp_path / "x.npy"
    np.save(x, np.ones((2, 2, 6, 6), np.float32))
    result = cli("profile", graph_file, "-i", f"x={x}", "--repeat", "2", "--top", "3")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("small: 4 steps, 2 timed run(s) (forward, no gradient)")
    assert "top 3 steps" in out and "conv+batch_norm+relu+add" in out
    assert "by op type" in out and "framework" in out


def test_the_command_makes_random_inputs_and_profiles_a_training_step(graph_file):
    result = cli("profile", graph_file, "--batch", "4", "--repeat", "1", "--grad")
    assert result.returncode == 0, result.stderr
    assert "(forward + backward)" in result.stdout and "conv (backward)" in result.stdout


def test_the_installed_command_runs(graph_file):
    from .test_cli import subprocess_flowgrad
    result = subprocess_flowgrad("profile", GRAPHS / "xor.yaml", "--repeat", "1")
    assert result.returncode == 0, result.stderr
    assert "by op type" in result.stdout


@pytest.mark.parametrize("args,message", [
    (["missing.yaml"], "missing.yaml: cannot read"),
    (["{graph}", "--repeat", "0"], "--repeat: must be at least 1, got 0"),
    (["{graph}", "--batch", "0"], "--batch: must be at least 1, got 0"),
    (["{graph}", "-i", "y=missing.npy"], "missing.npy"),
    (["{graph}", "-i", "x"], "--input expects NAME=FILE.npy"),
    (["{graph}", "--shape", "x=1,2"], "--shape x"),
])
def test_bad_input_is_one_message_and_exit_1(graph_file, args, message):
    result = cli("profile", *[a.format(graph=graph_file) for a in args])
    assert result.returncode == 1, result.stdout + result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.count("\n") <= 2


def test_a_free_dim_without_an_array_names_the_input(tmp_path):
    path = tmp_path / "free.yaml"
    path.write_text("flowgrad: 1\nname: free\ninputs: {x: {shape: [3, null]}}\n"
                    "nodes:\n  y: {op: relu, in: x}\noutputs: [y]\n")
    result = cli("profile", path)
    assert result.returncode == 1
    assert "input 'x' has free dims [?, 3, ?]" in result.stderr
    assert "-i x=FILE.npy" in result.stderr and "--shape x=" in result.stderr
    assert cli("profile", path, "--shape", "x=2,3,5", "--repeat", "1").returncode == 0
