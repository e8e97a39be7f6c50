"""``flowgrad profile``: where a graph's run spends its time, step by step.

Inputs come from ``-i NAME=FILE`` as in ``flowgrad run``; an input not given is filled with
random values of its declared shape (standard normal floats, zero integers, as ``flowgrad
check`` feeds them), its batch dim ``--batch`` — so ``flowgrad profile model.onnx`` works on
its own.  A dim the graph leaves free other than the batch (an image's height) has no good
default: the input must then come with ``-i`` or ``--shape``, and the error says so.  The
report is :meth:`flowgrad.plan.profile.Profile.table`.
"""
from __future__ import annotations

from ..errors import FlowgradError
from ._common import (add_checkpoint_argument, add_dtype_argument, add_graph_argument,
                      add_shape_argument, at_least, dims_text, input_shapes)
from .run import input_node, read_feeds

HELP = ("time each step of a graph's run (fused steps as what they run; backward with --grad) "
        "and print the slowest steps, the time by op type and the framework's own")


def add_arguments(parser):
    add_graph_argument(parser)
    parser.add_argument("-i", "--input", action="append", default=[], metavar="NAME=FILE.npy",
                        help="an input array (repeatable); inputs not given are random")
    add_shape_argument(parser, "its random values")
    parser.add_argument("--batch", type=int, default=1, metavar="N",
                        help="the batch of random inputs (default 1)")
    parser.add_argument("--repeat", type=int, default=10, metavar="N",
                        help="timed runs (default 10)")
    parser.add_argument("--warmup", type=int, default=2, metavar="N",
                        help="untimed runs first (default 2; the first compiles)")
    parser.add_argument("--grad", action="store_true",
                        help="profile a training step: forward in training mode, then backward "
                             "from the train: section's loss (else from every float output)")
    parser.add_argument("--outputs", nargs="+", metavar="NAME",
                        help="values to compute (default: the graph's outputs)")
    parser.add_argument("--top", type=int, default=15, metavar="K",
                        help="slowest steps listed (default 15)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    add_checkpoint_argument(parser)
    add_dtype_argument(parser)


def run(args, registry):
    from ..gradcheck import random_feeds
    from ..plan.profile import profile
    from ..workflows.deploy import trained_plan
    for flag, value in (("--batch", args.batch), ("--repeat", args.repeat),
                        ("--warmup", args.warmup), ("--top", args.top)):
        at_least(flag, value, 1)
    net = trained_plan(args.graph, args.checkpoint, dtype=args.dtype, registry=registry)
    graph = net.graph
    given = {input_node(graph, name): array for name, array in read_feeds(args.input).items()}
    shapes = input_shapes(graph, args.shape)
    for name in graph.inputs:
        if name in given or name in shapes:
            continue
        shape = graph.spec_of(name).shape
        if None in shape[1:]:
            raise FlowgradError(f"input '{name}' has free dims {dims_text(shape)}: give it "
                                f"with -i {name}=FILE.npy, or its shape with --shape "
                                f"{name}=D,D,...")
    feeds = {**random_feeds(graph, batch=args.batch, seed=args.seed, dtype=net.dtype,
                            shapes=shapes), **given}
    if args.grad:
        net.train()
    else:
        net.freeze()        # inference, as 'flowgrad run' does it
    result = profile(net, feeds, args.outputs, repeat=args.repeat, warmup=args.warmup,
                     grad=args.grad)
    print(result.table(args.top))
    return 0
