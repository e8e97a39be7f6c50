"""``flowgrad train``: train a graph as its ``train:`` section says, with checkpoints and curves
(:func:`flowgrad.workflows.train_and_report` does the work; with ``--workers``/``--cluster``,
:func:`flowgrad.distributed.train`, data-parallel on Dask).

A results folder that already holds a run is not written over without ``--force`` (or
``--resume``, which continues the run that is there)."""
from __future__ import annotations

import math
import os

from ..errors import FlowgradError
from ..train import TrainingInterrupted
from ..workflows import train_and_report
from ._common import (add_dask_arguments, add_dtype_argument, add_force_argument,
                      add_graph_argument, at_least)

#: what a run folder holds; finding one of them means the folder is someone's earlier run
RUN_FILES = ("checkpoint.npz", "history.json", "metrics.json", "curves.png")

HELP = "train a graph (digits or your .npz/.npy/.csv data); checkpoints, curves, resume"


def add_arguments(parser):
    add_graph_argument(parser)
    parser.add_argument("--data", default="digits", metavar="digits|FILE",
                        help="'digits' (embedded 8x8 digits, default) or a .npz/.npy/.csv file "
                             "(.npz arrays named after graph inputs feed those inputs)")
    parser.add_argument("--epochs", type=int,
                        help="total epochs (overrides train: epochs; with --resume, counting "
                             "the checkpoint's)")
    parser.add_argument("--batch-size", type=int, help="mini-batch size")
    parser.add_argument("--lr", type=float, help="learning rate (overrides the optimizer's lr)")
    parser.add_argument("--seed", type=int, help="seed for the split and the shuffling")
    parser.add_argument("--out", default="runs/train", metavar="DIR",
                        help="output directory (default runs/train)")
    parser.add_argument("--resume", metavar="CKPT",
                        help="continue from a checkpoint (checked first; says where it "
                             "resumes and whether the result is an uninterrupted run's)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar (without a terminal: one line per epoch)")
    parser.add_argument("--freeze", action="append", default=[], metavar="PATTERN",
                        help="stop training the params matching this glob (name or ONNX name, "
                             "e.g. 'conv1*'); repeatable")
    parser.add_argument("--unfreeze", action="append", default=[], metavar="PATTERN",
                        help="train the params matching this glob, also over --freeze (for an "
                             "ONNX model also a stored constant the fine-tuning rules keep "
                             "fixed); repeatable")
    parser.add_argument("--straight-through", action="store_true",
                        help="an ONNX model's QuantizeLinear nodes pass gradients (the "
                             "straight-through estimator), to fine-tune a quantized model")
    norm = parser.add_mutually_exclusive_group()
    norm.add_argument("--bn-eval", dest="bn_eval", action="store_true", default=None,
                      help="batch norm keeps its running statistics while training (the "
                           "default for ONNX models: fine-tuning)")
    norm.add_argument("--bn-train", dest="bn_eval", action="store_false",
                      help="batch norm normalises with batch statistics and updates its "
                           "running ones (the default for YAML graphs)")
    add_dask_arguments(parser, "train data-parallel")
    add_force_argument(parser)
    add_dtype_argument(parser)


def check_arguments(args) -> None:
    """Refuse flag values that would fail later, or train nonsense, naming the flag."""
    at_least("--epochs", args.epochs, 1)
    at_least("--batch-size", args.batch_size, 1)
    at_least("--seed", args.seed, 0)
    at_least("--workers", args.workers, 1)
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        raise FlowgradError(f"--lr: must be a positive number, got {args.lr:g}")
    if os.path.isfile(args.out):
        raise FlowgradError(f"--out {args.out}: is a file; give a folder for the results")
    earlier = [f for f in RUN_FILES if os.path.exists(os.path.join(args.out, f))]
    if earlier and not (args.force or args.resume):
        raise FlowgradError(f"--out {args.out}: holds an earlier run ({', '.join(earlier)}); "
                            "pass --resume CKPT to continue it, --force to train over it, or "
                            "give another folder")


def run(args, registry):
    check_arguments(args)
    settings = dict(resume=args.resume, dtype=args.dtype, registry=registry,
                    progress=not args.no_progress, log=print, epochs=args.epochs,
                    batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                    bn_eval=args.bn_eval)
    try:
        if args.workers is not None or args.cluster:
            if args.freeze or args.unfreeze or args.straight_through:
                raise FlowgradError("--freeze/--unfreeze/--straight-through: not supported with "
                                    "--workers or --cluster yet; train locally, or convert the "
                                    "model and set 'trainable: false' on params (or "
                                    "'straight_through: true' on quantizers) in the YAML")
            from ..distributed import train as train_distributed
            train_distributed(args.graph, args.out, args.data, workers=args.workers,
                              cluster=args.cluster, **settings)
        else:
            train_and_report(args.graph, args.out, args.data, freeze=args.freeze,
                             unfreeze=args.unfreeze, straight_through=args.straight_through,
                             **settings)
    except TrainingInterrupted as e:
        where = f"; checkpoint saved to {e.path} (continue with --resume {e.path})" \
            if e.path else ""
        print(f"interrupted{where}")
        return 130
    return 0
