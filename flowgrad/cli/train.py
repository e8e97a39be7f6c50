"""``flowgrad train``: train a graph as its ``train:`` section says, with checkpoints and curves.

The data is split once into train and test (``test_split`` of the ``train:`` section, seeded
by its ``seed``: a fixed split), the model trains on the first part (less any validation
split), and the test part is only evaluated at the end.  Output directory contents:
``checkpoint.npz`` (written after every epoch and on Ctrl-C; resume with ``--resume``),
``history.json``, ``curves.png`` and ``metrics.json`` (test metrics, time).
"""
from __future__ import annotations

import json
import os
import time

from .. import compile, load
from ..data import load_data, split
from ..plots import plot_curves
from ..train import Trainer, TrainingInterrupted, add_classification_loss
from ..train_config import from_graph
from ._common import add_dtype_argument, add_graph_argument

HELP = "train a graph (digits or your .npz/.npy/.csv data); checkpoints, curves, resume"


def add_arguments(parser):
    add_graph_argument(parser)
    parser.add_argument("--data", default="digits", metavar="digits|FILE",
                        help="'digits' (embedded 8x8 digits, default) or a .npz/.npy/.csv file")
    parser.add_argument("--epochs", type=int, help="total epochs (overrides train: epochs)")
    parser.add_argument("--batch-size", type=int, help="mini-batch size")
    parser.add_argument("--lr", type=float, help="learning rate (overrides the optimizer's lr)")
    parser.add_argument("--seed", type=int, help="seed for the split and the shuffling")
    parser.add_argument("--out", default="runs/train", metavar="DIR",
                        help="output directory (default runs/train)")
    parser.add_argument("--resume", metavar="CKPT", help="continue from a checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_dtype_argument(parser)


def configure(graph, args, registry=None):
    """The graph's training config with the command-line overrides applied."""
    config = from_graph(graph, registry)
    optimizer = dict(config.optimizer)
    if getattr(args, "lr", None) is not None:
        optimizer["lr"] = args.lr
    return config.replace(epochs=getattr(args, "epochs", None),
                          batch_size=getattr(args, "batch_size", None),
                          seed=getattr(args, "seed", None), optimizer=optimizer)


def train_and_report(graph, args, registry, out_dir: str, progress: bool) -> dict:
    """Train, evaluate on the held-out test split, write the outputs; returns the metrics."""
    config = configure(graph, args, registry)
    plan = compile(graph, dtype=getattr(args, "dtype", "float32"), seed=config.seed)
    trainer = Trainer(plan, config, registry=registry, progress=progress)
    train, test = split(load_data(args.data), config.test_split, seed=config.seed)
    os.makedirs(out_dir, exist_ok=True)
    checkpoint = os.path.join(out_dir, "checkpoint.npz")
    print(f"training {graph.name} on {args.data}: {len(train)} train / {len(test)} test samples,"
          f" {config.epochs} epochs, batch {config.batch_size}, "
          f"{config.optimizer.get('kind')} lr {config.lr:g}")
    start = time.perf_counter()
    history = trainer.fit(train, checkpoint=checkpoint, resume=getattr(args, "resume", None))
    seconds = time.perf_counter() - start
    history.save(os.path.join(out_dir, "history.json"))
    curves = plot_curves(history.rows, os.path.join(out_dir, "curves.png"), title=graph.name)
    last = history.rows[-1] if history.rows else {}
    print("epoch {}: ".format(last.get("epoch", 0)) + ", ".join(
        f"{k} {v:.4f}" for k, v in last.items() if k not in ("epoch", "seconds", "lr")))
    metrics = {"train_seconds": seconds, "epochs": trainer.epoch}
    if len(test):
        metrics.update({f"test_{k}": v for k, v in trainer.evaluate(test).items()})
        print("test: " + ", ".join(f"{k[5:]} {v:.4f}" for k, v in metrics.items()
                                   if k.startswith("test_")))
    with open(os.path.join(out_dir, "metrics.json"), "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=1)
    print(f"trained in {seconds:.1f} s; wrote {checkpoint}, {curves}, "
          f"{os.path.join(out_dir, 'history.json')}")
    return {**metrics, "plan": plan, "trainer": trainer, "checkpoint": checkpoint}


def load_trainable(path: str, registry):
    """Load a graph; one without a loss or ``train:`` section (e.g. an ONNX classifier) gets a
    softmax cross-entropy on its logits and a ``label`` input."""
    graph = load(path, registry=registry)
    if "train" not in graph.meta and "loss" not in graph.dag:
        graph = add_classification_loss(graph, registry=registry)
        print(f"{path} has no loss: training it as a classifier (softmax cross-entropy on "
              f"'{graph.outputs[-2]}' against a new 'label' input)")
    return graph


def run(args, registry):
    graph = load_trainable(args.graph, registry)
    try:
        train_and_report(graph, args, registry, args.out, progress=not args.no_progress)
    except TrainingInterrupted as e:
        where = f"; checkpoint saved to {e.path} (continue with --resume {e.path})" \
            if e.path else ""
        print(f"interrupted{where}")
        return 130
    return 0
