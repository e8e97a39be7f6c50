"""Run onnx's backend conformance suite against flowgrad and print pass rates.

    .venv/bin/python benchmarks/onnx_conformance.py            # everything
    .venv/bin/python benchmarks/onnx_conformance.py --failures # also list each failure

Node tests: per op (the ops flowgrad claims first, then every other op of the suite), each
with passed / counted and the cases excluded because they use dtypes numpy lacks.  Model
tests: pytorch-converted, pytorch-operator, simple and the 9 light ImageNet models.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from flowgrad.onnx import conformance as C  # noqa: E402


def table(title: str, summary: dict, names) -> tuple[int, int, int]:
    print(f"\n{title}")
    print(f"  {'op / kind':<28}{'passed':>8}{'counted':>9}{'rate':>8}{'excluded':>10}")
    tp = tc = te = 0
    for name in names:
        passed, counted, excluded = summary.get(name, (0, 0, 0))
        tp, tc, te = tp + passed, tc + counted, te + excluded
        if counted or excluded:
            print(f"  {name:<28}{passed:>8}{counted:>9}{C.rate(passed, counted):>7.1f}%"
                  f"{excluded:>10}")
        else:
            print(f"  {name:<28}{'(no node tests in this onnx)':>35}")
    print(f"  {'TOTAL':<28}{tp:>8}{tc:>9}{C.rate(tp, tc):>7.1f}%{te:>10}")
    return tp, tc, te


def whole_model_gradients() -> None:
    """Backward through a whole light model (SqueezeNet) against finite differences.  Its
    ConstantOfShape weights are replaced by random ones first: with every weight equal, max
    pooling windows hold ties and finite differences are meaningless there."""
    import flowgrad
    from flowgrad.gradcheck import check_graph_gradients
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_onnx import light, with_random_weights
    graph = flowgrad.load(with_random_weights(light("squeezenet")), dynamic_batch=False)
    checks = check_graph_gradients(graph, max_elements=4, rtol=1e-3, atol=1e-6)
    bad = [c.name for c in checks if not c.ok]
    print(f"\nbackward through SqueezeNet (random weights): {len(checks) - len(bad)} / "
          f"{len(checks)} leaves (input + params) agree with finite differences"
          + (f"; mismatches: {', '.join(bad)}" if bad else ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--failures", action="store_true", help="list every failing case")
    parser.add_argument("--skip-node", action="store_true", help="model tests only")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    start = time.perf_counter()
    results = []
    if not args.skip_node:
        results += C.node_results()
    node = C.summarize([r for r in results])
    claimed = [op for op in C.CLAIMED_OPS]
    if not args.skip_node:
        table("node tests: ops flowgrad claims", node, claimed)
        below = [op for op in claimed if node.get(op, (0, 0, 0))[1]
                 and C.rate(*node[op][:2]) < 98.0]
        print(f"  claimed ops below 98%: {', '.join(below) if below else 'none'}")
        others = sorted(k for k in node if k not in claimed)
        table("node tests: other ops of the suite (not translated; expanded function tests "
              "are decompositions into other ops)", node, others)
        print("  excluded dtypes (numpy has none): " + ", ".join(sorted(set(
            C.NUMPY_LACKS.values()))))
    if not args.skip_node:
        grads = C.gradient_results(C.CLAIMED_OPS)
        summary = C.summarize(grads)
        table("backward: finite-difference checks on the passing float node tests (excluded: "
              "no float input/output, forward-only op, non-finite outputs)", summary,
              C.CLAIMED_OPS)
        results += [r for r in grads if r.status == "fail"
                    and not setattr(r, "group", f"grad {r.group}")]
    all_node = C.summarize([r for r in results if not r.group.startswith("grad ")])
    passed = sum(v[0] for v in all_node.values())
    counted = sum(v[1] for v in all_node.values())
    if counted:
        print(f"\nall node tests of the suite: {passed} / {counted} "
              f"({C.rate(passed, counted):.1f}%)")
    models = []
    for kind in ("pytorch-converted", "pytorch-operator", "simple"):
        models += [C.run_model_dir(d, kind) for d in C.model_dirs(kind)]
    models += [C.run_light(p) for p in C.light_models()]
    table("model tests", C.summarize(models),
          ["pytorch-converted", "pytorch-operator", "simple", "light"])
    for r in models:
        if r.group == "light":
            print(f"  light {r.name:<16} {r.status}")
    if not args.skip_node:
        whole_model_gradients()
    if args.failures:
        print("\nfailures:")
        for r in results + models:
            if r.status == "fail":
                print(f"  [{r.group}] {r.name}: {r.message.splitlines()[0][:200]}")
    print(f"\n({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
