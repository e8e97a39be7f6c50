"""``flowgrad check``: validate a graph, list its nodes, summarise its size and check its whole
backward.

Loading is the validation: the front end reports every mistake of the file at once — YAML,
wiring, shapes and the ``train:`` and ``visualize:`` sections.  On a long graph the gradient
check runs two forward passes per checked entry, so before it starts a line on stderr says how
many passes it will take and how to make it shorter.
"""
from __future__ import annotations

import sys
import time

from ._common import add_graph_argument, add_shape_argument, at_least, input_shapes, \
    with_shape_hint

HELP = ("validate a graph, print each node with its op and output shape, and compare its "
        "backward with finite differences on random inputs")

#: graphs with more ops than this get progress lines on stderr
LONG = 50


def add_arguments(parser):
    add_graph_argument(parser)
    parser.add_argument("--no-gradients", action="store_true",
                        help="only validate and list the nodes")
    parser.add_argument("--elements", type=int, default=16, metavar="K",
                        help="entries checked per input/param (default 16)")
    parser.add_argument("--seed", type=int, default=0)
    add_shape_argument(parser, "the gradient check")


def run(args, registry):
    from ..loaders import load
    from ..passes import describe
    from ..render import fan_summary
    from ..onnx.trainable import trainable_report
    from ..summary import summarize
    at_least("--elements", args.elements, 1)
    started = time.perf_counter()
    graph = load(args.graph, registry=registry)
    given = input_shapes(graph, args.shape)
    long = len(graph.ops) > LONG
    if long:
        progress(f"loaded and validated {len(graph.ops)} ops in "
                 f"{time.perf_counter() - started:.1f} s")
    sections = [f"{key}:" for key in ("train", "visualize") if key in graph.meta]
    checked = f", {' and '.join(sections)} section{'s' * (len(sections) > 1)} too" \
        if sections else ""
    print(f"{graph.name}: {len(graph.inputs)} inputs, {len(graph.params)} params, "
          f"{len(graph.ops)} ops, {fan_summary(graph)} (valid{checked})")
    fixed = graph.meta.get("onnx", {}).get("fixed_batch")
    if fixed:
        print(f"batch fixed at {fixed['batch']}: {fixed['reason']} (the model's own shape "
              "arithmetic depends on it; other batch sizes are refused)")
    rows = describe(graph)
    width = max((len(r[0]) for r in rows), default=0)
    kind_width = max((len(r[1]) for r in rows), default=0)
    for name, kind, shapes in rows:
        print(f"  {name:<{width}}  {kind:<{kind_width}}  {shapes}")
    print(summarize(graph).text())
    if graph.params:
        print(trainable_report(graph))
    if args.no_gradients:
        return 0
    if long:
        progress(gradient_plan(graph, args.elements))
    return report_gradients(graph, args, width, given)


def report_gradients(graph, args, width: int, shapes: dict | None = None) -> int:
    from ..errors import GraphError, OpError
    from ..gradcheck import check_graph_gradients, random_feeds
    feeds = random_feeds(graph, seed=args.seed, shapes=shapes)
    try:
        checks = check_graph_gradients(graph, feeds, max_elements=args.elements,
                                       seed=args.seed)
    except OpError as e:
        raise with_shape_hint(e, graph, shapes, "the gradient check") from None
    except GraphError as e:
        # a forward-only op (a quantizer, an integer product) between the leaves and the
        # outputs: there is no gradient to check, which is the model's nature, not an error
        node = e.diagnostics[0].node if len(e.diagnostics) == 1 else None
        if node is None or node not in graph.dag or not graph.is_op(node) \
                or graph.op_of(node).differentiable:
            raise
        print(f"gradient check: skipped: the outputs are reached through '{node}' "
              f"({graph.op_of(node).type}), which is forward-only")
        return 0
    if not checks:
        print("gradient check: nothing to check (no float inputs or trainable params)")
        return 0
    print("gradient check (float64, central differences):")
    for c in checks:
        status = ("ok (within backward's rounding noise "
                  f"{c.noise:.1e})" if c.roundoff_limited else "ok") if c.ok else "MISMATCH"
        print(f"  {c.name:<{width}}  {c.checked:>3} entries  max abs error {c.max_abs_error:.2e}"
              f"  max rel error {c.max_rel_error:.2e}  {status}")
    failed = [c.name for c in checks if not c.ok]
    if failed:
        print(f"gradient check FAILED for: {', '.join(failed)}")
        return 1
    print("gradient check passed")
    return 0


def gradient_plan(graph, elements: int) -> str:
    """What the gradient check is about to do, in one line."""
    from ..summary import per_sample
    leaves = [n for n in graph.inputs if graph.spec_of(n).dtype.kind == "f"] + \
        [p for p in graph.params if graph.is_trainable(p)]
    entries = sum(min(elements, per_sample(graph.spec_of(n).shape)) for n in leaves)
    return (f"gradient check: about {entries} entries of {len(leaves)} inputs and params, "
            f"{2 * entries + 1} float64 forward passes of {len(graph.ops)} ops "
            "(--elements K checks fewer entries, --no-gradients none)...")


def progress(line: str) -> None:
    print(f"check: {line}", file=sys.stderr, flush=True)
