"""``flowgrad demo``: train the digits MLP, plot its curves, visualize its class logits and
round-trip it through ONNX (:func:`flowgrad.workflows.run_demo` does the work).  The graph
ships in the package, so the demo runs from a plain install in any folder."""
from __future__ import annotations

from ._common import at_least

HELP = "train the digits MLP, plot its curves, visualize its logits, round-trip it via ONNX"


def add_arguments(parser):
    parser.add_argument("--graph", metavar="GRAPH",
                        help="the graph (default: the digits_mlp.yaml shipped with flowgrad)")
    parser.add_argument("--out", default="out/demo", metavar="DIR",
                        help="output directory (default out/demo)")
    parser.add_argument("--epochs", type=int, help="training epochs (default: the graph's)")
    parser.add_argument("--steps", type=int, help="visualization steps (default: the graph's)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args, registry):
    from ..workflows import run_demo
    at_least("--epochs", args.epochs, 1)
    at_least("--steps", args.steps, 1)
    run_demo(args.out, args.graph or None, epochs=args.epochs, steps=args.steps,
             registry=registry, progress=not args.no_progress, log=print)
    return 0
