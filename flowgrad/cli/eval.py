"""``flowgrad eval``: loss and metrics of a trained checkpoint on data
(:func:`flowgrad.workflows.evaluate_checkpoint` does the work)."""
from __future__ import annotations

import json

from ..workflows import evaluate_checkpoint
from ..workflows.training import SPLITS
from ._common import add_dtype_argument, add_graph_argument

HELP = "evaluate a checkpoint on data (default: the test split training held out)"


def add_arguments(parser):
    add_graph_argument(parser)
    parser.add_argument("--checkpoint", required=True, metavar="CKPT", help="a checkpoint .npz")
    parser.add_argument("--data", default="digits", metavar="digits|FILE",
                        help="'digits' (default) or a .npz/.npy/.csv file")
    parser.add_argument("--split", choices=SPLITS, default="test",
                        help="which part of the data (the fixed split of `flowgrad train`)")
    parser.add_argument("--seed", type=int, help="seed of the split (default: train: seed)")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    add_dtype_argument(parser)


def run(args, registry):
    result = evaluate_checkpoint(args.graph, args.checkpoint, args.data, args.split,
                                 seed=args.seed, dtype=args.dtype, registry=registry, log=print)
    if args.json:
        print(json.dumps(result.metrics))
    else:
        print(f"{result.graph} on {result.data} ({result.split}, {result.samples} samples): "
              + ", ".join(f"{k} {v:.4f}" for k, v in result.metrics.items()))
    return 0
