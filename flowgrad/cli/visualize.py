"""``flowgrad visualize``: optimize inputs that maximise neurons, channels, logits, ...

One image per ``--objective`` (or per unit of ``--each NODE``), optimized together in one
batch; writes a labelled PNG grid, the images as ``.npy`` and optional snapshots.  Defaults
come from the graph's ``visualize:`` section, then from these flags.
"""
from __future__ import annotations

from .. import compile, load
from ..checkpoint import load_params
from ..errors import FlowgradError
from ..visualize import parse_penalties, parse_transforms, save_outputs, visualize
from ..visualize.objectives import objective_factories, parse_objective
from ..visualize.optimize import view_shape
from ..visualize.settings import from_graph
from ._common import add_dtype_argument, add_graph_argument

HELP = "optimize input images that maximise chosen neurons/channels/logits; PNG grid + .npy"


def add_arguments(parser):
    add_graph_argument(parser)
    parser.add_argument("--checkpoint", metavar="CKPT", help="trained params (.npz checkpoint)")
    parser.add_argument("--objective", action="append", default=[], metavar="SPEC",
                        help="one image's objective, e.g. 'logits[3]', 'channel(conv1, 2)', "
                             "'layer(h1)', '-logits[0] + logits[1]' (repeatable)")
    parser.add_argument("--each", metavar="NODE",
                        help="one image per unit/channel (axis 1) of NODE")
    parser.add_argument("--out", default="visualize.png", metavar="GRID.png",
                        help="the PNG grid; the images go to GRID.npy (default visualize.png)")
    parser.add_argument("--input", metavar="NAME", help="the input to optimize")
    parser.add_argument("--steps", type=int, help="optimization steps (default 256)")
    parser.add_argument("--lr", type=float, help="learning rate (default 0.05)")
    parser.add_argument("--optimizer", help="optimizer kind (default adam)")
    parser.add_argument("--param", choices=("fourier", "pixels"),
                        help="parameterization (default fourier, 1/f-scaled spectrum)")
    parser.add_argument("--transforms", metavar="SPEC",
                        help="'default', 'none' or 'pad=2,jitter=1,scale=0.9:1.1,rotate=10'")
    parser.add_argument("--penalty", action="append", default=None, metavar="NAME=W",
                        help="l1, l2, tv or blur with a weight (repeatable)")
    parser.add_argument("--diversity", metavar="NODE=W",
                        help="add a Gram-matrix diversity term on NODE with weight W")
    parser.add_argument("--range", nargs=2, type=float, metavar=("LOW", "HIGH"),
                        help="valid input range (default 0 1)")
    parser.add_argument("--clip", action="store_true",
                        help="clip into the range instead of sigmoid squashing")
    parser.add_argument("--seed", type=int, default=0, help="seed of the start and transforms")
    parser.add_argument("--snapshot-every", type=int, default=0, metavar="K",
                        help="also save the grid every K steps")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_dtype_argument(parser)


def objectives_for(graph, specs, each):
    """Objective specs from ``--objective`` or one per unit of axis 1 of ``each``."""
    if specs:
        return list(specs)
    if each:
        node, port = graph.resolve(each)
        spec = graph.specs(node)[port]
        if spec.ndim < 2 or spec.shape[1] is None:
            raise FlowgradError(f"--each {each}: '{each}' has no fixed axis 1 "
                                f"(shape {spec.shape})")
        if spec.ndim == 2:
            return [f"{each}[{k}]" for k in range(spec.shape[1])]
        return [f"channel({each}, {k})" for k in range(spec.shape[1])]
    raise FlowgradError("say what to maximise: --objective SPEC (repeatable) or --each NODE")


def run_visualization(graph, plan, args, registry, settings=None):
    """Run with flags over the graph's ``visualize:`` defaults; returns the result."""
    settings = from_graph(graph) if settings is None else settings
    specs = args.objective or settings.get("objectives")
    specs = objectives_for(graph, specs, args.each or settings.get("each"))
    factories = objective_factories(registry)
    objectives = [parse_objective(s, factories) for s in specs]
    input_name = args.input
    shape = None
    if input_name is None:
        floats = [n for n in graph.inputs if graph.node(n)["spec"].dtype.kind == "f"]
        input_name = floats[0] if len(floats) == 1 else None
    if input_name is not None:
        shape = view_shape(graph.node(input_name)["spec"].shape[1:])
    size = max(shape[1:]) if shape else 8
    transforms = parse_transforms(args.transforms or settings.get("transforms")
                                  or ("default" if size >= 16 else "none"), size)
    penalties = parse_penalties(args.penalty) if args.penalty is not None else \
        {k: float(v) for k, v in (settings.get("penalties") or {}).items()}
    diversity = None
    if args.diversity:
        node, eq, weight = args.diversity.partition("=")
        try:
            diversity = (node, float(weight) if eq else 1.0)
        except ValueError:
            raise FlowgradError(f"--diversity expects NODE=WEIGHT, got '{args.diversity}'") \
                from None
    value_range = tuple(args.range or settings.get("range") or (0.0, 1.0))
    return visualize(
        plan, objectives, input=input_name, steps=args.steps or settings.get("steps", 256),
        lr=args.lr or settings.get("lr", 0.05),
        optimizer=args.optimizer or settings.get("optimizer", "adam"),
        param=args.param or settings.get("param", "fourier"), value_range=value_range,
        range_mode="clip" if args.clip else "sigmoid", transforms=transforms,
        penalties=penalties, diversity=diversity, seed=args.seed,
        progress=not args.no_progress, snapshot_every=args.snapshot_every,
        registry=registry), value_range


def run(args, registry):
    graph = load(args.graph, registry=registry)
    plan = compile(graph, dtype=args.dtype)
    if args.checkpoint:
        load_params(plan, args.checkpoint)
    result, value_range = run_visualization(graph, plan, args, registry)
    final = result.values[-1]
    captions = [f"{label}\n= {v:.3g}" for label, v in zip(result.labels, final)]
    written = save_outputs(result, args.out, value_range=value_range, title=graph.name,
                           captions=captions)
    for label, v in zip(result.labels, final):
        print(f"{label}: objective {v:.4g}")
    print("wrote " + ", ".join(written))
    return 0

