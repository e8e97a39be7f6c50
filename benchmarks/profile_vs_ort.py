"""Where flowgrad loses time to onnxruntime on an ONNX model: both profilers, side by side.

    .venv/bin/python benchmarks/profile_vs_ort.py [--threads N] [--rounds 5] [--repeat 10]
                                                 [--shape NAME=D,D,...] MODEL [MODEL ...]

MODEL is a name of ``tests/real_models.toml`` (fetched into the model cache if needed, fed the
manifest's seeded inputs) or the path of an ``.onnx`` file (fed random inputs of its declared
shapes at batch 1; a free dim other than the batch is refused unless ``--shape`` gives it).
``--shape NAME=D,D,...`` (repeatable) feeds input NAME random values of that whole shape
instead, in the range of the values it replaces: run at a size where the arithmetic is small
(ppocr_cls at ``x=1,3,48,8``), the time left is each runtime's fixed cost per step.  Both
runtimes get the same
thread count (``--threads N``, default 1) and run in alternation: ``--rounds`` rounds of
``--repeat`` timed runs each, a settle pause between turns (see ``_timing.py``), so that they
share the machine's load.

flowgrad's side is :func:`flowgrad.profile` (the plan frozen, no gradient: fused
steps); onnxruntime's is its own profiler (``SessionOptions.enable_profiling``): each
kernel's time from the trace, only within the timed runs' ``model_run`` events.  Both also run
as many times unprofiled, in the same rounds: the ratio printed is of those.

Rows are ONNX op types, so that both sides are read in the model's own terms:

* a flowgrad step counts under the ONNX op of the node that leads it — a fused conv +
  batch norm + hard-swish under ``Conv``, its absorbed ops listed in the notes below the table;
* an onnxruntime kernel counts under the ONNX op of the node it is named after when the name is
  one of the model's nodes (its fusions keep the leading node's name), else under its own op
  type with its fused variants mapped back (``FusedConv`` -> ``Conv``); kernels that exist only
  in onnxruntime (``ReorderInput``/``ReorderOutput``, its blocked NCHWc layout) keep their name.

onnxruntime's profiler is not free: it more than doubles a run of small kernels (it records
memory statistics and shapes for each), several microseconds of it inside each kernel's traced
time.  So its column comes twice: ``ort prof``, the traced times as they are, and ``ort est.``,
each kernel less the profiler's own cost inside the window (measured first on one-element Adds),
scaled to add up to the same runs without the profiler (``unprofiled``, timed in the same
rounds).  flowgrad's profiler costs a timer call a step (~0.1 us), inside the noise.

The gap column is flowgrad's time minus onnxruntime's estimate per run: where flowgrad loses.
An op onnxruntime folded away (a batch norm into its conv's weights) shows 0 on its side, and
the time of what it absorbed is in the leading op's row on both sides; the lines under the
table say what each side ran in the rows with the largest gaps.
"""
from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(1, ROOT)
from _timing import import_onnxruntime, ort_options, set_threads, thread_header  # noqa: E402

THREADS = set_threads()

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter, defaultdict  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402

import flowgrad  # noqa: E402
from flowgrad.gradcheck import random_feeds  # noqa: E402

ort = import_onnxruntime()

#: onnxruntime's fused kernels, by the ONNX op that leads what they fuse (QuickGelu is its
#: x * sigmoid(x), SiLU; DynamicQuantizeMatMul a DynamicQuantizeLinear + MatMulInteger pair)
ORT_FUSED = {"FusedConv": "Conv", "FusedGemm": "Gemm", "FusedMatMul": "MatMul",
             "NhwcMaxPool": "MaxPool", "QuickGelu": "Sigmoid",
             "DynamicQuantizeMatMul": "MatMulInteger"}
SETTLE = 0.15          # seconds between turns (see _timing.py)
GROUPED = "Conv (grouped)"


def _fetch_models():
    """``tools/fetch_models.py`` (the manifest and the model cache), loaded as the tests do."""
    spec = importlib.util.spec_from_file_location("fetch_models",
                                                  os.path.join(ROOT, "tools", "fetch_models.py"))
    module = sys.modules.setdefault("fetch_models", importlib.util.module_from_spec(spec))
    spec.loader.exec_module(module)
    return module


def model_and_feeds(model: str, shapes: dict[str, tuple[int, ...]]
                    ) -> tuple[str, str, object, dict[str, np.ndarray]]:
    """(name, path, flowgrad graph, feeds) of a manifest name or an .onnx path; ``shapes``
    overrides inputs' shapes (``--shape``)."""
    if model.endswith(".onnx"):
        if not os.path.isfile(model):
            sys.exit(f"profile_vs_ort: no such file: {model}")
        graph = flowgrad.load(model)
        for name in graph.inputs:
            shape = graph.spec_of(name).shape
            if None in shape[1:] and name not in shapes:
                sys.exit(f"profile_vs_ort: {model}: input '{name}' has free dims {shape}; "
                         f"give its shape (--shape {name}=1,...) or profile a model of "
                         "tests/real_models.toml, whose inputs are given")
        feeds = random_feeds(graph, batch=1, dtype=np.float32)     # (--shape: see below)
        name, path = os.path.basename(model)[:-5], model
    else:
        F = _fetch_models()
        specs = F.load_manifest()
        if model not in specs:
            sys.exit(f"profile_vs_ort: '{model}' is neither an .onnx file nor a model of "
                     f"tests/real_models.toml ({', '.join(specs)})")
        name, path = model, str(F.fetch(specs[model]))
        rng = np.random.default_rng(0)          # the inputs tests/test_real_models.py feeds
        feeds = {i.name: i.make(rng) for i in specs[model].inputs}
        graph = flowgrad.load(path)
    for key, shape in shapes.items():
        if key not in feeds:
            sys.exit(f"profile_vs_ort: {name}: --shape names no input '{key}' "
                     f"(inputs: {', '.join(feeds)})")
        old = feeds[key]
        low, high = (float(old.min()), float(old.max())) if old.size else (0.0, 1.0)
        values = np.random.default_rng(1).uniform(low, high, shape)
        feeds[key] = values.astype(old.dtype) if old.dtype.kind == "f" else \
            np.rint(values).astype(old.dtype)
    return name, path, graph, feeds


class Side:
    """One runtime's time per ONNX op type: seconds, kernels or steps, and what they were."""

    def __init__(self):
        self.seconds: Counter = Counter()
        self.count: Counter = Counter()
        self.what: dict[str, Counter] = defaultdict(Counter)          # runs of each
        self.what_seconds: dict[str, Counter] = defaultdict(Counter)  # and their time
        self.wall = 0.0                 # the profiled runs'
        self.runs = 0
        self.unprofiled = 0.0           # as many runs without a profiler

    def add(self, key: str, seconds: float, what: str, count: int = 1) -> None:
        self.seconds[key] += seconds
        self.count[key] += count
        self.what[key][what] += count
        self.what_seconds[key][what] += seconds

    @property
    def steps(self) -> float:
        return sum(self.seconds.values())


def flowgrad_key(graph, name: str) -> str:
    """The ONNX op a flowgrad step is counted under (a branch is flowgrad's own); grouped
    convolutions (depthwise) apart, as their kernels differ from the dense ones on both
    sides."""
    key = graph.extra(name, "onnx_op") or f"({graph.op_of(name).type})"
    return GROUPED if key == "Conv" and getattr(graph.op_of(name), "group", 1) > 1 else key


def ort_key(event: dict, onnx_types: dict[str, str]) -> str:
    """The ONNX op an onnxruntime kernel is counted under (see the module doc); a
    convolution is grouped when its weights have one input channel and its input more."""
    name = event["name"].removesuffix("_kernel_time")
    op = event["args"]["op_name"]
    key = onnx_types.get(name) or ORT_FUSED.get(op, op)
    shapes = [next(iter(s.values())) for s in event["args"].get("input_type_shape", [])]
    if key == "Conv" and len(shapes) > 1 and len(shapes[1]) > 2 and shapes[1][1] == 1 \
            and shapes[0][1] > 1:
        return GROUPED
    return key


def profile_flowgrad(plan, feeds, outputs, repeat: int, side: Side) -> None:
    """``repeat`` profiled runs of the plan, added to ``side`` by ONNX op."""
    graph = plan.graph
    result = flowgrad.profile(plan, feeds, outputs, repeat=repeat, warmup=1)
    for row in result.steps:
        # per step: what it ran, in the ONNX ops' names (its absorbed ops after the first)
        absorbed = [flowgrad_key(graph, n) for n in row.nodes[1:] if not graph.is_branch(n)]
        side.add(flowgrad_key(graph, row.name), row.seconds,
                 "+".join([flowgrad_key(graph, row.name), *absorbed]), row.calls)
    side.wall += result.wall
    side.runs += repeat


def ort_events(session, timed: list[bool]) -> list[dict]:
    """The kernel events of the runs flagged in ``timed`` (one flag per ``session.run``, in
    order), and the timed runs' ``model_run`` events; the trace file is removed."""
    path = session.end_profiling()
    try:
        with open(path) as f:
            trace = json.load(f)
    finally:
        os.unlink(path)
    runs = sorted((e for e in trace if e.get("cat") == "Session" and e["name"] == "model_run"),
                  key=lambda e: e["ts"])
    assert len(runs) == len(timed), (len(runs), len(timed))
    windows = [(e["ts"], e["ts"] + e["dur"]) for e, keep in zip(runs, timed) if keep]
    kernels = [e for e in trace if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")
               and any(start <= e["ts"] <= stop for start, stop in windows)]
    return kernels + [e for e, keep in zip(runs, timed) if keep]


def compare(model: str, rounds: int, repeat: int, top: int, floor: float,
            shapes: dict[str, tuple[int, ...]]) -> None:
    """Profile one model on both runtimes, in alternating turns, and print the table."""
    name, path, graph, feeds = model_and_feeds(model, shapes)
    model_proto = onnx.load(path, load_external_data=False)
    onnx_types = {n.name: n.op_type for n in model_proto.graph.node if n.name}
    plan = flowgrad.compile(graph).freeze()
    options = ort_options(THREADS)
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(tempfile.gettempdir(), f"ort_profile_{name}")
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    plain = ort.InferenceSession(path, ort_options(THREADS), providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]
    fg, rt = Side(), Side()
    timed: list[bool] = []              # per run of the profiled session: whether it counts

    def flowgrad_run():
        plan.forward(feeds, outputs, grad=False)

    def ort_run():
        plain.run(outputs, feeds)

    def ort_profiled_run(counts: bool = False):
        session.run(outputs, feeds)
        timed.append(counts)

    def unprofiled(side: Side, run) -> None:
        start = time.perf_counter()
        for _ in range(repeat):
            run()
        side.unprofiled += time.perf_counter() - start

    # (untimed call that wakes the contender, its timed turn)
    turns = [(flowgrad_run, lambda: profile_flowgrad(plan, feeds, outputs, repeat, fg)),
             (ort_profiled_run, lambda: [ort_profiled_run(True) for _ in range(repeat)]),
             (flowgrad_run, lambda: unprofiled(fg, flowgrad_run)),
             (ort_run, lambda: unprofiled(rt, ort_run))]
    for _ in range(3):                  # warm up: compiling, numba, onnxruntime's arenas
        for wake, _ in turns:
            wake()
    for round_ in range(rounds):        # the order rotates; each turn after a pause
        for wake, turn in turns[round_ % 4:] + turns[:round_ % 4]:
            time.sleep(SETTLE)
            wake()
            turn()
    kernels = []
    for event in ort_events(session, timed):
        if event["cat"] == "Session":
            rt.wall += event["dur"] * 1e-6
            rt.runs += 1
        else:
            key = ort_key(event, onnx_types)
            rt.add(key, event["dur"] * 1e-6, event["args"]["op_name"])
            kernels.append((key, event["dur"] * 1e-6))
    print_table(name, fg, rt, ort_estimate(rt, kernels, floor), top)


def print_table(name: str, fg: Side, rt: Side, estimate: Counter, top: int) -> None:
    """The side-by-side table (ms per run, largest gap first), the totals, and what each
    side ran in the rows with the largest gaps."""
    def ms(side: Side, seconds: float) -> float:
        return seconds * 1e3 / side.runs

    def gap(key: str) -> float:
        return ms(fg, fg.seconds[key]) - ms(rt, estimate[key])

    keys = sorted(set(fg.seconds) | set(rt.seconds), key=lambda k: -gap(k))
    width = max(len(k) for k in keys + ["unprofiled"])
    print(f"\n{name}: ms per run ({fg.runs} runs each, {THREADS} thread(s)); largest gap first")
    print(f"  {'ONNX op':<{width}}  {'flowgrad':>9} {'steps':>5}  {'ort prof':>9} "
          f"{'ort est.':>9} {'kernels':>7}  {'gap':>8}")

    def line(key: str, a: float, b: float | None, c: float | None, n: str = "", m: str = "",
             ) -> None:
        raw = "" if b is None else f"{b:9.3f}"
        est = "" if c is None else f"{c:9.3f}"
        diff = "" if c is None else f"{a - c:+8.3f}"
        print(f"  {key:<{width}}  {a:9.3f} {n:>5}  {raw:>9} {est:>9} {m:>7}  {diff:>8}")
    for key in keys:
        line(key, ms(fg, fg.seconds[key]), ms(rt, rt.seconds[key]), ms(rt, estimate[key]),
             f"{fg.count[key] / fg.runs:g}", f"{rt.count[key] / rt.runs:g}")
    print(f"  {'-' * (width + 57)}")
    line("steps", ms(fg, fg.steps), ms(rt, rt.steps), ms(rt, sum(estimate.values())))
    line("framework", ms(fg, fg.wall - fg.steps), ms(rt, rt.wall - rt.steps), None)
    line("wall", ms(fg, fg.wall), ms(rt, rt.wall), None)
    line("unprofiled", ms(fg, fg.unprofiled), None, ms(rt, rt.unprofiled))
    print(f"  flowgrad / onnxruntime without the profilers: {fg.unprofiled / rt.unprofiled:.2f}x")
    print("  what each side ran in the rows with the largest gaps (count and profiled ms per "
          "run):")
    for key in keys[:top]:
        print(f"    {key}: flowgrad {_what(fg, key)}; onnxruntime {_what(rt, key)}")


def ort_estimate(rt: Side, kernels: list[tuple[str, float]], floor: float) -> Counter:
    """onnxruntime's time per op type without its profiler, estimated: each kernel's traced
    time less the profiler's own per-kernel cost (``floor``), scaled so that they add up to
    the unprofiled runs (whose dispatch between kernels costs well under a microsecond)."""
    estimate: Counter = Counter()
    for key, seconds in kernels:
        estimate[key] += max(seconds - floor, 0.0)
    total = sum(estimate.values())
    scale = rt.unprofiled / total if total > 0 else 0.0
    return Counter({key: seconds * scale for key, seconds in estimate.items()})


def profiler_floor() -> float:
    """Seconds onnxruntime's profiler adds inside each kernel's window: the median traced
    time of one-element Adds (whose work is a fraction of a microsecond)."""
    from onnx import TensorProto, helper
    nodes = [helper.make_node("Add", [f"y{i - 1}" if i else "x", "x"], [f"y{i}"],
                              name=f"add{i}") for i in range(100)]
    graph = helper.make_graph(nodes, "floor",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y99", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort_options(THREADS)
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(tempfile.gettempdir(), "ort_profile_floor")
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    feeds = {"x": np.ones(1, np.float32)}
    for _ in range(20):
        session.run(None, feeds)
    events = ort_events(session, [False] * 10 + [True] * 10)
    return float(np.median([e["dur"] for e in events if e["cat"] == "Node"])) * 1e-6


def _what(side: Side, key: str) -> str:
    what = side.what.get(key)
    if not what:
        return "-"
    seconds = side.what_seconds[key]
    return ", ".join(f"{k} x{n / side.runs:g} {seconds[k] * 1e3 / side.runs:.2f} ms"
                     for k, n in sorted(what.items(), key=lambda kv: -seconds[kv[0]])[:4]) + \
        (" ..." if len(what) > 4 else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5,
                        help="turns each runtime takes, alternating (default 5)")
    parser.add_argument("--repeat", type=int, default=10, help="timed runs a turn (default 10)")
    parser.add_argument("--top", type=int, default=6,
                        help="rows whose contents are listed under the table (default 6)")
    parser.add_argument("--shape", action="append", default=[], metavar="NAME=D,D,...",
                        help="feed input NAME random values of this whole shape (repeatable)")
    parser.add_argument("models", nargs="+", metavar="MODEL",
                        help="a model of tests/real_models.toml or an .onnx file")
    args = parser.parse_args()
    if min(args.rounds, args.repeat, args.top) < 1:
        sys.exit("profile_vs_ort: --rounds, --repeat and --top must be at least 1")
    shapes = {}
    for text in args.shape:
        name, _, dims = text.partition("=")
        try:
            shape = tuple(int(d) for d in dims.split(","))
        except ValueError:
            shape = ()
        if not name or not shape or min(shape) < 1:
            sys.exit(f"profile_vs_ort: --shape {text!r}: expected NAME=D,D,... with whole "
                     "numbers >= 1 (e.g. --shape x=1,3,48,8)")
        shapes[name] = shape
    if ort is None:
        return 0
    print("profile_vs_ort: " + thread_header(THREADS))
    floor = profiler_floor()
    print(f"onnxruntime's profiler adds ~{floor * 1e6:.0f} us inside each kernel's window "
          "(taken off in 'ort est.')")
    for model in args.models:
        compare(model, args.rounds, args.repeat, args.top, floor, shapes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
