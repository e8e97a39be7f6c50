"""``flowgrad visualize``: optimize inputs that maximise neurons, channels, logits, ...

One image per ``--objective`` (or per unit of ``--each NODE``), optimized together in one
batch; writes a labelled PNG grid, the images as ``.npy`` and optional snapshots.  Flags
override the graph's ``visualize:`` section (:func:`flowgrad.workflows.visualize_checkpoint`
does the work).
"""
from __future__ import annotations

from ..errors import FlowgradError
from ..visualize import parse_penalties
from ..visualize.settings import VisualizeConfig
from ..workflows import visualize_checkpoint
from ._common import add_dtype_argument, add_graph_argument

#: the defaults the flags override, after the graph's own visualize: section
DEFAULTS = VisualizeConfig()
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
    parser.add_argument("--steps", type=int, help=f"optimization steps (default {DEFAULTS.steps})")
    parser.add_argument("--lr", type=float, help=f"learning rate (default {DEFAULTS.lr})")
    parser.add_argument("--optimizer", help=f"optimizer kind (default {DEFAULTS.optimizer})")
    parser.add_argument("--param", help=f"parameterization: fourier (1/f-scaled spectrum), "
                                        f"pixels, … (default {DEFAULTS.param}; `flowgrad "
                                        f"plugins` lists them all)")
    parser.add_argument("--transforms", metavar="SPEC",
                        help="'default', 'none' or 'pad=2,jitter=1,scale=0.9:1.1,rotate=10'")
    parser.add_argument("--penalty", action="append", default=None, metavar="NAME=W",
                        help="l1, l2, tv or blur with a weight (repeatable)")
    parser.add_argument("--diversity", metavar="NODE=W",
                        help="add a Gram-matrix diversity term on NODE with weight W")
    parser.add_argument("--range", nargs=2, type=float, metavar=("LOW", "HIGH"),
                        help="valid input range (default {:g} {:g})".format(*DEFAULTS.range))
    parser.add_argument("--clip", action="store_true",
                        help="clip into the range instead of sigmoid squashing")
    parser.add_argument("--seed", type=int, default=0, help="seed of the start and transforms")
    parser.add_argument("--snapshot-every", type=int, default=0, metavar="K",
                        help="also save the grid every K steps")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_dtype_argument(parser)


def run(args, registry):
    visualized = visualize_checkpoint(
        args.graph, args.out, args.checkpoint, dtype=args.dtype, registry=registry,
        input=args.input, diversity=_diversity(args.diversity), clip=args.clip, seed=args.seed,
        snapshot_every=args.snapshot_every, progress=not args.no_progress,
        objectives=args.objective or ([] if args.each else None), each=args.each,
        steps=args.steps, lr=args.lr, optimizer=args.optimizer, param=args.param,
        transforms=args.transforms,
        penalties=None if args.penalty is None else parse_penalties(args.penalty),
        range=None if args.range is None else tuple(args.range))
    result = visualized.result
    for label, v in zip(result.labels, result.values[-1]):
        print(f"{label}: objective {v:.4g}")
    print("wrote " + ", ".join(visualized.files))
    return 0


def _diversity(item: str | None) -> tuple[str, float] | None:
    """``NODE=W`` (or ``NODE``: weight 1) as ``(node, weight)``."""
    if item is None:
        return None
    node, eq, weight = item.partition("=")
    try:
        return node, float(weight) if eq else 1.0
    except ValueError:
        raise FlowgradError(f"--diversity expects NODE=WEIGHT, got '{item}'") from None
