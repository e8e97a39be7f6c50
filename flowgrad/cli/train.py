"""``flowgrad train``: train a graph as its ``train:`` section says, with checkpoints and curves
(:func:`flowgrad.workflows.train_and_report` does the work)."""
from __future__ import annotations

from ..train import TrainingInterrupted
from ..workflows import train_and_report
from ._common import add_dtype_argument, add_graph_argument

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
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_dtype_argument(parser)


def run(args, registry):
    try:
        train_and_report(args.graph, args.out, args.data, resume=args.resume, dtype=args.dtype,
                         registry=registry, progress=not args.no_progress, log=print,
                         epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         seed=args.seed)
    except TrainingInterrupted as e:
        where = f"; checkpoint saved to {e.path} (continue with --resume {e.path})" \
            if e.path else ""
        print(f"interrupted{where}")
        return 130
    return 0
