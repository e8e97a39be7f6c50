"""The real-model suite (models trained by others, from public wheels): flowgrad vs onnxruntime.

    .venv/bin/python benchmarks/bench_real_models.py [--threads N] [--repeat 7] [names...]

For every model of ``tests/real_models.toml`` that flowgrad imports (the manifest's ``xfail``
ones are tried too and reported as failing to load, with the reason), one line with:

* the model's size: ONNX nodes (subgraphs included), distinct op types, float weights stored
  in the file (initializers and ``Constant`` nodes) and how many flowgrad trains by default;
* agreement: the largest |flowgrad - onnxruntime| over the outputs (and the manifest's
  ``compare`` values), absolute and relative to the largest reference magnitude;
* the gradient check of ``tests/test_real_models.py`` (float64 directional derivatives by
  central differences against backward): the largest relative error over the checked leaves;
* forward time at batch 1 on the manifest's input (flowgrad ``forward(grad=False)`` of a
  frozen plan vs an onnxruntime session), contenders timed alternately
  (``_timing.interleaved``), medians of ``--repeat`` rounds (default 7) and the median of the
  per-round ratios.

Models are fetched into the model cache first (``tools/fetch_models.py``); a model that cannot
be fetched is skipped with the reason.  Both runtimes get the same thread count (``--threads N``,
default 1).  The inputs are the test suite's small ones (a 64 x 64 image for the detectors, a
48 x 80 text line, 2,048 bytes, 4 or 1 audio windows): the ratios are for those sizes.
"""
from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(1, ROOT)
from _timing import (emit_ratio, emit_value, import_onnxruntime, interleaved,  # noqa: E402
                     set_threads, thread_header)
from _timing import ratio as per_round_ratio  # noqa: E402

THREADS = set_threads()
RUN_ALL_THREADS = (1,)

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import numpy_helper  # noqa: E402

import flowgrad  # noqa: E402

ort = import_onnxruntime()


def model_facts(path) -> tuple[int, int, int]:
    """(ONNX nodes with subgraphs, distinct op types, float weights stored in the file)."""
    model = onnx.load(str(path))
    nodes, types, weights = 0, set(), 0

    def walk(graph):
        nonlocal nodes, weights
        for init in graph.initializer:
            if numpy_helper.to_array(init).dtype.kind == "f":
                weights += int(np.prod(init.dims))
        for node in graph.node:
            nodes += 1
            types.add(node.op_type)
            for attr in node.attribute:
                if node.op_type == "Constant" and attr.HasField("t") and \
                        numpy_helper.to_array(attr.t).dtype.kind == "f":
                    weights += int(np.prod(attr.t.dims))
                if attr.HasField("g"):
                    walk(attr.g)
                for g in attr.graphs:
                    walk(g)
    walk(model.graph)
    return nodes, len(types), weights


def bench_model(T, name: str, repeat: int) -> None:
    spec = T.SPECS[name]
    try:
        path = T.F.fetch(spec)
    except T.F.FetchError as e:
        print(f"{name}: skipped, cannot fetch: {e}")
        return
    nodes, types, weights = model_facts(path)
    try:
        _, _, graph, _, feeds = T.loaded(name)
    except flowgrad.FlowgradError as e:
        text = " ".join(str(e).split())
        print(f"{name}: {nodes} nodes, {types} op types, {weights:,} weights; flowgrad cannot "
              f"load it: {text[:400]}" + (f"  [manifest xfail: {spec.xfail}]" if spec.xfail else ""))
        return
    session = T.ort_session(spec, path, THREADS)
    net = flowgrad.compile(graph)
    trainable = sum(net.params[p].size for p in net.trainable)
    net.freeze()            # inference, as an onnxruntime session is frozen
    names = T.output_names(graph, session)
    reference = session.run(names, feeds)
    ours = net.forward(feeds, outputs=names, grad=False)
    diff = scale = 0.0
    for out, ref in zip(names, reference):
        if ref.dtype.kind == "f" and ref.size:
            diff = max(diff, float(np.max(np.abs(np.asarray(ours[out], np.float64) - ref))))
            scale = max(scale, float(np.max(np.abs(ref))))
    start = time.perf_counter()
    try:
        checks = T.directional_checks(spec, graph, feeds)
        grad_err = max((abs(a - n) / max(abs(n), 1e-300) for _, a, n in checks),
                       default=float("nan"))
        grad_text = (f"gradient check: {len(checks)} direction(s), max relative error "
                     f"{grad_err:.2g}")
    except flowgrad.FlowgradError as e:
        checks, grad_err = [], float("nan")
        grad_text = f"gradient refused: {' '.join(str(e).split())[:160]}"
    grad_time = time.perf_counter() - start
    samples = interleaved({"flowgrad": lambda: net.forward(feeds, outputs=names, grad=False),
                           "onnxruntime": lambda: session.run(names, feeds)},
                          repeat=repeat, warmup=2)
    t_fg, t_ort = (statistics.median(samples[k]) for k in ("flowgrad", "onnxruntime"))
    ratio = per_round_ratio(samples, "flowgrad", "onnxruntime")
    print(f"{name}: {nodes} nodes, {types} op types, {weights:,} weights "
          f"({trainable:,} trainable in flowgrad)\n"
          f"    max |diff| {diff:.2g} (relative {diff / max(scale, 1e-300):.2g} of "
          f"{scale:.3g}); {grad_text} ({grad_time:.1f} s)\n"
          f"    forward: flowgrad {t_fg * 1e3:8.2f} ms   onnxruntime {t_ort * 1e3:8.2f} ms   "
          f"ratio {ratio:5.2f}x", flush=True)
    emit_ratio(f"flowgrad {name} forward batch 1", ratio, "onnxruntime")
    emit_value(f"{name} max relative diff vs onnxruntime", diff / max(scale, 1e-300), "1")
    if checks:
        emit_value(f"{name} gradient check max relative error", grad_err, "1")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("names", nargs="*", help="models (default: all of the manifest)")
    args = parser.parse_args()
    if ort is None:
        return 0
    from tests import test_real_models as T
    unknown = [n for n in args.names if n not in T.SPECS]
    if unknown:
        sys.exit(f"bench_real_models: unknown model(s) {', '.join(unknown)}; known: "
                 f"{', '.join(T.SPECS)}")
    print("bench_real_models: " + thread_header(THREADS))
    flowgrad.default_registry()
    for name in args.names or T.SPECS:
        bench_model(T, name, max(5, args.repeat))
    return 0


if __name__ == "__main__":
    sys.exit(main())
