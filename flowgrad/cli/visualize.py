"""``flowgrad visualize``: optimize inputs that maximise neurons, channels, logits, ...

One image per ``--objective`` (or per unit of ``--each NODE``), optimized together in one
batch; writes a labelled PNG grid, the images as ``.npy`` and optional threshold/snapshot
grids.  ``--layer L --all-channels`` renders every channel of a layer into one grid instead,
resumably.  Flags override the graph's ``visualize:`` section
(:func:`flowgrad.workflows.visualize_checkpoint` and ``render_layer_checkpoint`` do the work).

Every bad value is a one-line error naming its flag; a unit that never activates and an
untrained network are each said in one line, not as a Python warning.
"""
from __future__ import annotations

import glob
import math
import os
import sys
import warnings

from ..errors import FlowgradError
from ..loaders.visualize_section import (input_shape_problem, preprocess_problem,
                                         start_problem, thresholds_problem)
from ..visualize import PREPROCESS_PRESETS, InactiveObjectiveWarning, parse_penalties
from ..visualize.param import BUILTIN_PARAMETERIZATIONS
from ..visualize.settings import VisualizeConfig
from ..workflows import render_layer_checkpoint, visualize_checkpoint
from ._common import (add_dask_arguments, add_dtype_argument, add_force_argument,
                      add_graph_argument, at_least, finite_range, output_file)

#: the defaults the flags override, after the graph's own visualize: section
DEFAULTS = VisualizeConfig()
HELP = "optimize input images that maximise chosen neurons/channels/logits; PNG grid + .npy"
#: what each built-in parameterization is, for --param's help
PARAM_NOTES = {"fourier": "a 1/f-scaled spectrum", "pixels": "raw pixels",
               "cppn": "a small network of the pixel coordinates",
               "lowres": "a quarter-resolution image, upsampled",
               "laplacian": "a 4-level Laplacian pyramid"}
#: flags that make no sense for a whole-layer grid (one final image per channel)
NOT_FOR_LAYERS = ("objective", "each", "thresholds", "snapshot_every", "diversity")


def add_arguments(parser):
    add_graph_argument(parser)
    parser.add_argument("--checkpoint", metavar="CKPT", help="trained params (.npz checkpoint); "
                        "without one a YAML graph's weights are random, and the output says so")
    parser.add_argument("--objective", action="append", default=[], metavar="SPEC",
                        help="one image's objective, e.g. 'logits[3]', 'channel(conv1, 2)', "
                             "'layer(h1)', '-logits[0] + logits[1]' (repeatable)")
    parser.add_argument("--each", metavar="NODE",
                        help="one image per unit/channel (axis 1) of NODE")
    parser.add_argument("--layer", metavar="NODE",
                        help="with --all-channels or --channels: one image per channel of NODE "
                             "in one grid, rendered in batches and resumable (finished "
                             "channels are kept in GRID.png.parts/ and skipped by a rerun)")
    parser.add_argument("--all-channels", action="store_true",
                        help="render every channel of --layer")
    parser.add_argument("--channels", nargs="+", type=int, metavar="K",
                        help="render only these channels of --layer")
    parser.add_argument("--batch", type=int, default=8, metavar="N",
                        help="channels optimized together per batch (default 8)")
    add_dask_arguments(parser, "with --layer: render the channels")
    parser.add_argument("--out", default="visualize.png", metavar="GRID.png",
                        help="the PNG grid; the images go to GRID.npy (default visualize.png)")
    parser.add_argument("--input", metavar="NAME", help="the input to optimize")
    parser.add_argument("--input-shape", nargs="+", type=int, metavar="D",
                        help="one sample's shape, batch axis excluded (e.g. 3 224 224): needed "
                             "when the model leaves its image size free")
    parser.add_argument("--preprocess", metavar="NAME",
                        help="the model's input convention, applied between the image and the "
                             f"network: {', '.join(PREPROCESS_PRESETS)} (default: none, the "
                             "images are fed as they are)")
    parser.add_argument("--steps", type=int, help=f"optimization steps (default {DEFAULTS.steps}"
                                                  ", or the last of --thresholds)")
    parser.add_argument("--thresholds", nargs="+", type=int, metavar="K",
                        help="also save the grid after these steps (e.g. 16 64 256), as "
                             "GRID_step<K>.png")
    parser.add_argument("--lr", type=float, help=f"learning rate (default {DEFAULTS.lr})")
    parser.add_argument("--optimizer", help=f"optimizer kind (default {DEFAULTS.optimizer})")
    parser.add_argument("--param", help="parameterization: " + ", ".join(
        f"{k} ({PARAM_NOTES[k]})" if k in PARAM_NOTES else k for k in BUILTIN_PARAMETERIZATIONS)
        + f"; default {DEFAULTS.param}; plugins may add more (`flowgrad plugins`)")
    parser.add_argument("--start", metavar="SPEC",
                        help="'noise' (default) or 'mean:DATA': start from the mean input of a "
                             "data set, e.g. mean:digits (with --param pixels or fourier)")
    parser.add_argument("--transforms", metavar="SPEC",
                        help="'default', 'none' or 'pad=2,jitter=1,scale=0.9:1.1,rotate=10'")
    parser.add_argument("--penalty", action="append", default=None, metavar="NAME=W",
                        help="l1, l2, tv or blur with a weight (repeatable)")
    parser.add_argument("--diversity", metavar="NODE=W",
                        help="add a Gram-matrix diversity term on NODE with weight W")
    parser.add_argument("--range", nargs=2, type=float, metavar=("LOW", "HIGH"),
                        help="valid input range, e.g. 0 255 for a model reading raw pixels "
                             "(default {:g} {:g})".format(*DEFAULTS.range))
    parser.add_argument("--clip", action="store_true",
                        help="clip into the range instead of sigmoid squashing")
    parser.add_argument("--seed", type=int, default=0, help="seed of the start and transforms")
    parser.add_argument("--snapshot-every", type=int, default=0, metavar="K",
                        help="also save the grid every K steps")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_dtype_argument(parser)
    add_force_argument(parser)


def run(args, registry):
    from ..loaders import load
    check_arguments(args)
    check_output(args)
    graph = load(args.graph, registry=registry)
    check_nodes(args, graph)
    settings = dict(steps=args.steps, lr=args.lr, optimizer=args.optimizer, param=args.param,
                    start=args.start, transforms=args.transforms,
                    penalties=None if args.penalty is None else parse_penalties(args.penalty),
                    range=None if args.range is None else tuple(args.range),
                    preprocess=args.preprocess, input_shape=args.input_shape)
    common = dict(dtype=args.dtype, registry=registry, input=args.input, clip=args.clip,
                  seed=args.seed, progress=not args.no_progress)
    with warnings.catch_warnings():          # said below in one line, not as a warning dump
        warnings.simplefilter("ignore", InactiveObjectiveWarning)
        if args.layer:
            return _render_layer(args, graph, common, settings)
        done = visualize_checkpoint(
            graph, args.out, args.checkpoint, diversity=_diversity(args.diversity),
            snapshot_every=args.snapshot_every,
            objectives=args.objective or ([] if args.each else None), each=args.each,
            thresholds=args.thresholds, **common, **settings)
    result = done.result
    penalties = result.penalties[-1] if result.penalties else None
    for i, (label, value) in enumerate(zip(result.labels, result.values[-1])):
        print(f"{label}: objective {value:.4g}" +
              (f", penalties {penalties[i]:.4g}" if penalties is not None and penalties.any()
               else ""))
    _notes(done.random, result.inactive, len(result.labels), done.config.steps)
    print("wrote " + ", ".join(done.files))
    return 0


def _render_layer(args, graph, common, settings) -> int:
    render, where = render_layer_checkpoint, {}
    if args.workers is not None or args.cluster:
        from ..distributed import render_layer_checkpoint as render
        where = dict(workers=args.workers, cluster=args.cluster)
    try:
        done = render(graph, args.layer, args.out, args.checkpoint, channels=args.channels,
                      batch=args.batch, **where, **common, **settings)
    except KeyboardInterrupt:
        parts = args.out + ".parts"
        kept = len(glob.glob(os.path.join(glob.escape(parts), "channel_*.npz")))
        print(f"{kept} channels are kept in {parts}/: run the same command again to resume",
              file=sys.stderr)
        raise
    render = done.render
    if render.resumed:
        print(f"resumed: skipped {render.resumed} of {len(render.channels)} channels already "
              f"rendered in {args.out}.parts/")
    penalties = render.penalties if render.penalties is not None and render.penalties.any() \
        else None
    for i, (k, value) in enumerate(zip(render.channels, render.values)):
        print(f"{args.layer} channel {k}: objective {value:.4g}" +
              (f", penalties {penalties[i]:.4g}" if penalties is not None else ""))
    _notes(done.random, [f"channel {k}" for k in render.inactive], len(render.channels),
           done.config.steps, what=f"channels of {args.layer}")
    print("wrote " + ", ".join(done.files))
    return 0


def _notes(random: bool, inactive: list[str], total: int, steps: int,
           what: str = "objectives") -> None:
    """The random-weights note and the inactive-objective warning, one line each."""
    if random:
        print("note: random weights: no --checkpoint and the graph has no trained weights, so "
              "the images show what an untrained network responds to")
    if inactive:
        print(f"warning: {len(inactive)} of {total} {what} never activated (zero "
              f"gradient at all {steps} steps; their images only follow the penalties): "
              f"{', '.join(inactive)} — a unit that is 0 for the starting image (a ReLU's "
              "output) cannot move: optimize the value before the ReLU instead")


def check_arguments(args) -> None:
    """Every flag value that is wrong on its own or with the others, as a one-line error
    naming the flag (the graph-dependent checks follow when it is loaded)."""
    def fail(flag: str, problem: str | None) -> None:
        if problem:
            raise FlowgradError(f"{flag}: {problem}")

    if args.preprocess is not None:
        fail("--preprocess", preprocess_problem(args.preprocess))
    if args.input_shape is not None:
        fail("--input-shape", input_shape_problem(args.input_shape))
    if args.thresholds is not None:
        fail("--thresholds", thresholds_problem(args.thresholds, args.steps))
    if args.start is not None:
        fail("--start", start_problem(args.start))
    at_least("--steps", args.steps, 1)
    at_least("--snapshot-every", args.snapshot_every, 0)
    finite_range("--range", args.range)
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        fail("--lr", f"must be a positive number, got {args.lr:g}")
    if (args.all_channels or args.channels) and not args.layer:
        fail("--all-channels" if args.all_channels else "--channels",
             "say which layer: --layer NODE")
    if (args.workers is not None or args.cluster) and not args.layer:
        fail("--workers" if args.workers is not None else "--cluster",
             "Dask workers render whole layers: add --layer NODE --all-channels")
    at_least("--workers", args.workers, 1)
    if args.layer:
        if not (args.all_channels or args.channels):
            fail("--layer", "add --all-channels (every channel) or --channels K ...")
        given = [k for k in NOT_FOR_LAYERS if getattr(args, k)]
        if given:
            fail("--layer", "a whole-layer grid renders one final image per channel; drop "
                 + ", ".join("--" + k.replace("_", "-") for k in given))
        at_least("--batch", args.batch, 1)


def check_output(args) -> None:
    """The grid is the user's file: an existing one is replaced only with --force, except
    by a whole-layer render resuming from its GRID.png.parts/ folder."""
    resumable = args.layer and os.path.isdir(args.out + ".parts")
    output_file(args.out, "--out", args.force or resumable)


def check_nodes(args, graph) -> None:
    """The nodes named by --each, --layer, --input and --diversity exist in ``graph``."""
    diversity = args.diversity.partition("=")[0] if args.diversity else None
    for flag, ref in (("--each", args.each), ("--layer", args.layer), ("--input", args.input),
                      ("--diversity", diversity)):
        if ref is None:
            continue
        try:
            graph.resolve(ref)
        except KeyError as e:
            raise FlowgradError(f"{flag}: {e.args[0]}") from None


def _diversity(item: str | None) -> tuple[str, float] | None:
    """``NODE=W`` (or ``NODE``: weight 1) as ``(node, weight)``."""
    if item is None:
        return None
    node, eq, weight = item.partition("=")
    try:
        return node, float(weight) if eq else 1.0
    except ValueError:
        raise FlowgradError(f"--diversity expects NODE=WEIGHT, got '{item}'") from None
