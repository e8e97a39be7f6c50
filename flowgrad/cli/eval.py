"""``flowgrad eval``: loss and metrics of a trained checkpoint on data."""
from __future__ import annotations

import json

from .. import compile
from ..checkpoint import load_params
from ..data import load_data, split
from ..train import Trainer
from ._common import add_dtype_argument, add_graph_argument
from .train import configure, load_trainable

HELP = "evaluate a checkpoint on data (default: the test split training held out)"


def add_arguments(parser):
    add_graph_argument(parser)
    parser.add_argument("--checkpoint", required=True, metavar="CKPT", help="a checkpoint .npz")
    parser.add_argument("--data", default="digits", metavar="digits|FILE",
                        help="'digits' (default) or a .npz/.npy/.csv file")
    parser.add_argument("--split", choices=("test", "train", "all"), default="test",
                        help="which part of the data (the fixed split of `flowgrad train`)")
    parser.add_argument("--seed", type=int, help="seed of the split (default: train: seed)")
    parser.add_argument("--json", action="store_true", help="print the metrics as JSON")
    add_dtype_argument(parser)


def run(args, registry):
    graph = load_trainable(args.graph, registry)
    config = configure(graph, args, registry)
    plan = compile(graph, dtype=args.dtype)
    load_params(plan, args.checkpoint)
    data = load_data(args.data)
    if args.split != "all":
        train, test = split(data, config.test_split, seed=config.seed)
        data = test if args.split == "test" else train
    metrics = Trainer(plan, config, registry=registry).evaluate(data)
    if args.json:
        print(json.dumps(metrics))
    else:
        print(f"{graph.name} on {args.data} ({args.split}, {len(data)} samples): "
              + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return 0
