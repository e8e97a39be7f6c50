"""Where a plan's time goes: per-step timing of its compiled programs (``flowgrad profile``).

Why wrap the run lists: a program is a list of calls the hot loops make (:mod:`.programs`), so
timing each call means putting a timer around each entry's function — nothing in the hot loops
has to know about profiling, and a plan that is not profiled pays nothing.  The timed copy of a
list is put in place only for the timed runs and the original list object put back afterwards,
even on an error, so the plan keeps running exactly what it compiled.

A fused step (:mod:`.fusion`) keeps its producer's name in the program and lists the nodes it
absorbed (``Step.nodes``), so the step is shown as what it runs: ``conv+batch_norm+relu`` over
its nodes.

A frozen plan's static steps (:mod:`.memo`: what depends only on input shapes) run only
when their memo misses: the timed runs use the memoised list, with the same timers inside its
groups, so a step the memo skipped shows the calls it really made (0 when every timed run hit)
and the lookups count as framework time.

What the steps do not account for is the *framework* time — the feeds' checks and casts, the
loop's dispatch, buffers released and recycled — reported as the run's wall time minus the sum
of the steps.  The timers' own cost (~0.1 µs a step) lands in the steps.  Runs in training mode
may update running statistics and draw random numbers: both are restored afterwards, so that
profiling changes neither the plan nor what it computes next.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import FlowgradError
from .memo import retimed
from .plan import Plan


@dataclass(frozen=True)
class StepTime:
    """One step of a program: what it ran and how long, summed over the timed runs."""

    name: str                  # the node (a fused step: the node that leads it)
    op: str                    # its op type; a fused step's types joined: "conv+relu"
    phase: str                 # "forward" or "backward"
    nodes: tuple[str, ...]     # every node the step runs (more than one when fused)
    calls: int
    seconds: float

    @property
    def mean(self) -> float:
        """Seconds per call."""
        return self.seconds / max(self.calls, 1)

    @property
    def kind(self) -> str:
        """The op type, with the phase when backward: a conv's backward is timed apart."""
        return self.op if self.phase == "forward" else f"{self.op} (backward)"

    @property
    def label(self) -> str:
        """The step as a table shows it: ``conv1 (+h1)`` for a fused one (a long list of
        fused nodes as their count: :attr:`nodes` has them all)."""
        label = self.name
        if len(self.nodes) > 1:
            names = ", ".join(self.nodes[1:])
            label += f" (+{names})" if len(names) <= 40 else f" (+{len(self.nodes) - 1} fused)"
        return label if self.phase == "forward" else f"{label} (backward)"


@dataclass(frozen=True)
class OpTime:
    """The steps of one op type (and phase) together."""

    kind: str
    steps: int
    calls: int
    seconds: float


@dataclass
class Profile:
    """What :func:`profile` measured: every step in the order it runs (forward, then
    backward), the timed runs' wall time, and the outputs of the last run."""

    graph: str
    runs: int
    grad: bool
    wall: float                      # seconds of all timed runs, each forward (+ backward)
    steps: list[StepTime]
    outputs: dict[str, np.ndarray]

    @property
    def step_seconds(self) -> float:
        return sum(s.seconds for s in self.steps)

    @property
    def framework(self) -> float:
        """Seconds outside every step: feeds, dispatch, memory (the timers too)."""
        return self.wall - self.step_seconds

    def share(self, seconds: float) -> float:
        """``seconds`` as a fraction of the wall time."""
        return seconds / self.wall if self.wall > 0 else 0.0

    def by_op(self) -> list[OpTime]:
        """The steps summed by :attr:`StepTime.kind`, slowest first."""
        groups: dict[str, list[StepTime]] = {}
        for s in self.steps:
            groups.setdefault(s.kind, []).append(s)
        rows = [OpTime(kind, len(g), sum(s.calls for s in g), sum(s.seconds for s in g))
                for kind, g in groups.items()]
        return sorted(rows, key=lambda r: -r.seconds)

    def table(self, top: int = 15) -> str:
        """A readable report: the ``top`` slowest steps, every op type, then the totals;
        times are milliseconds per run."""
        ms = 1e3 / self.runs
        steps = sorted(self.steps, key=lambda s: -s.seconds)[:top]
        width = max([len(s.label) for s in steps] + [4])
        op_width = max([len(r.kind) for r in self.by_op()] + [7])
        what = "forward + backward" if self.grad else "forward, no gradient"
        lines = [f"{self.graph}: {len(self.steps)} steps, {self.runs} timed run(s) ({what})",
                 "", f"top {len(steps)} steps",
                 f"  {'step':<{width}}  {'op':<{op_width}}  {'ms/run':>9}  {'share':>6}"
                 f"  {'calls/run':>9}"]
        for s in steps:
            lines.append(f"  {s.label:<{width}}  {s.kind:<{op_width}}  {s.seconds * ms:9.3f}"
                         f"  {self.share(s.seconds):6.1%}  {s.calls / self.runs:9g}")
        lines += ["", "by op type",
                  f"  {'op type':<{op_width}}  {'steps':>5}  {'ms/run':>9}  {'share':>6}"]
        for r in self.by_op():
            lines.append(f"  {r.kind:<{op_width}}  {r.steps:5d}  {r.seconds * ms:9.3f}"
                         f"  {self.share(r.seconds):6.1%}")
        lines += ["", "totals",
                  f"  steps      {self.step_seconds * ms:9.3f} ms/run  "
                  f"{self.share(self.step_seconds):6.1%}",
                  f"  framework  {self.framework * ms:9.3f} ms/run  "
                  f"{self.share(self.framework):6.1%}  (feeds, dispatch, memory)",
                  f"  wall       {self.wall * ms:9.3f} ms/run"]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def profile(plan: Plan, feeds: Mapping[str, Any], outputs: Sequence[str] | None = None, *,
            repeat: int = 10, warmup: int = 1, grad: bool = False,
            seeds: Mapping[str, Any] | None = None) -> Profile:
    """Time every step of ``plan`` computing ``outputs`` from ``feeds``, ``repeat`` times.

    The ``warmup`` runs before (at least one: it compiles the programs and checks the ops'
    contracts, which later runs skip) are not timed.  With ``grad`` each run is a forward
    then a backward from ``seeds`` — by default the graph's ``train: minimize`` if it has one,
    else 1 for every float output — and the backward's steps are profiled too.  The plan runs
    in its own mode (:meth:`Plan.train` / :meth:`Plan.eval`): evaluated without ``grad``, its
    fused steps are what is timed.
    """
    if repeat < 1 or warmup < 1:
        raise FlowgradError(f"profile needs repeat >= 1 and warmup >= 1 (the first run "
                            f"compiles), got repeat={repeat}, warmup={warmup}")
    outputs = tuple(plan.graph.outputs if outputs is None else outputs)
    if grad:
        seeds = _default_seeds(plan, outputs) if seeds is None else dict(seeds)
        if not seeds:
            raise FlowgradError(f"nothing to backpropagate from: no float output among "
                                f"{', '.join(outputs)}; pass seeds={{output: 1.0}}")
        outputs = tuple(dict.fromkeys(outputs + tuple(seeds)))

    def run() -> dict[str, np.ndarray]:
        out = plan.forward(feeds, outputs, grad=grad)
        if grad:
            plan.backward(seeds)
        return out

    fused = not grad and not plan.training      # as Plan.forward decides
    # (a frozen plan's state cannot change: nothing to restore)
    state = {} if plan.frozen else {name: plan.params[name].copy()
                                    for name in _state_params(plan)}
    rng = plan.rng.bit_generator.state
    try:
        for _ in range(warmup):
            run()
        # the programs those runs compiled, found under the keys Plan.forward/backward use
        forward = plan._forward_programs[(outputs, fused)]
        programs = [(forward, "forward")]
        if grad:
            programs.append((plan._backward_programs[(id(forward), tuple(seeds), ())],
                             "backward"))
        timers = [[[0.0, 0] for _ in program.run] for program, _ in programs]
        originals = [program.run for program, _ in programs]
        static_run = forward.static_run
        wall = 0.0
        try:
            for (program, _), cells in zip(programs, timers):
                program.run = [(_timed(entry[0], cell),) + tuple(entry[1:])
                               for entry, cell in zip(program.run, cells)]
            if static_run is not None:
                forward.static_run = retimed(static_run, forward.run)
            for _ in range(repeat):
                start = time.perf_counter()
                out = run()
                wall += time.perf_counter() - start
        finally:
            for (program, _), run_list in zip(programs, originals):
                program.run = run_list
            forward.static_run = static_run     # (with what its groups keep)
    finally:
        if state:
            plan.load_state_dict(state)
        plan.rng.bit_generator.state = rng
    rows = []
    for (program, phase), run_list, cells in zip(programs, originals, timers):
        for entry, (seconds, calls) in zip(run_list, cells):
            step = entry[5] if phase == "forward" else entry[1]
            nodes = step.nodes
            # a branch absorbed into a fused step runs as nothing: only the ops that compute
            types = [plan.graph.op_of(n).type for n in nodes]
            op = "+".join(types[:1] + [t for t in types[1:] if t != "branch"])
            rows.append(StepTime(step.name, op, phase, nodes, calls, seconds))
    return Profile(plan.graph.name, repeat, grad, wall, rows, out)


def _timed(fn: Any, cell: list) -> Any:
    """``fn`` adding its seconds and calls to ``cell``."""
    def timed(*args):
        start = time.perf_counter()
        result = fn(*args)
        cell[0] += time.perf_counter() - start
        cell[1] += 1
        return result
    return timed


def _state_params(plan: Plan) -> list[str]:
    """The params a run may update in place (batch norm's running statistics)."""
    return sorted({leaf for step in plan.layout.steps.values()
                   for leaf in step.state_leaves.values()})


def _default_seeds(plan: Plan, outputs: tuple[str, ...]) -> dict[str, float]:
    """What a user of ``grad`` most likely means: the loss training minimizes, else every
    float output (an integer one, an argmax, has no gradient to seed)."""
    train = plan.graph.meta.get("train")
    if train is not None and getattr(train, "minimize", None):
        return dict(train.minimize)
    graph = plan.graph
    seeds = {}
    for ref in outputs:
        try:
            name, port = graph.resolve(ref)
        except KeyError:        # the forward names it, in its own words
            continue
        if graph.specs(name)[port].dtype.kind == "f":
            seeds[ref] = 1.0
    return seeds
