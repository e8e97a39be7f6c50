"""``flowgrad check``: validate a graph, list its nodes, and check its whole backward.

Loading is the validation: the front end reports every mistake of the file at once — YAML,
wiring, shapes and the ``train:`` and ``visualize:`` sections.
"""
from __future__ import annotations

from .. import load
from ..gradcheck import check_graph_gradients
from ..passes import describe
from ..render import fan_summary
from ._common import add_graph_argument

HELP = ("validate a graph, print each node with its op and output shape, and compare its "
        "backward with finite differences on random inputs")


def add_arguments(parser):
    add_graph_argument(parser)
    parser.add_argument("--no-gradients", action="store_true",
                        help="only validate and list the nodes")
    parser.add_argument("--elements", type=int, default=16, metavar="K",
                        help="entries checked per input/param (default 16)")
    parser.add_argument("--seed", type=int, default=0)


def run(args, registry):
    graph = load(args.graph, registry=registry)
    sections = [f"{key}:" for key in ("train", "visualize") if key in graph.meta]
    checked = f", {' and '.join(sections)} section{'s' * (len(sections) > 1)} too" \
        if sections else ""
    print(f"{graph.name}: {len(graph.inputs)} inputs, {len(graph.params)} params, "
          f"{len(graph.ops)} ops, {fan_summary(graph)} (valid{checked})")
    rows = describe(graph)
    width = max((len(r[0]) for r in rows), default=0)
    kind_width = max((len(r[1]) for r in rows), default=0)
    for name, kind, shapes in rows:
        print(f"  {name:<{width}}  {kind:<{kind_width}}  {shapes}")
    if args.no_gradients:
        return 0
    checks = check_graph_gradients(graph, max_elements=args.elements, seed=args.seed)
    if not checks:
        print("gradient check: nothing to check (no float inputs or trainable params)")
        return 0
    print("gradient check (float64, central differences):")
    for c in checks:
        status = "ok" if c.ok else "MISMATCH"
        print(f"  {c.name:<{width}}  {c.checked:>3} entries  max abs error {c.max_abs_error:.2e}"
              f"  max rel error {c.max_rel_error:.2e}  {status}")
    failed = [c.name for c in checks if not c.ok]
    if failed:
        print(f"gradient check FAILED for: {', '.join(failed)}")
        return 1
    print("gradient check passed")
    return 0
