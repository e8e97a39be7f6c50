"""``flowgrad run``: run a graph on arrays and save its outputs.

Each ``-i NAME=FILE`` is read by :func:`flowgrad.arrays.read_array` (a ``.npy``, or a ``.npz``
holding one array), which refuses a damaged or non-numeric file with a message naming it."""
from __future__ import annotations

import numpy as np

from .. import compile, load
from ..arrays import read_array
from ..errors import FlowgradError, did_you_mean
from ._common import add_dtype_argument, add_graph_argument

HELP = "run a graph on input arrays and save the outputs (.npz)"


def add_arguments(parser):
    add_graph_argument(parser)
    parser.add_argument("-i", "--input", action="append", default=[], metavar="NAME=FILE.npy",
                        help="an input array (repeatable)")
    parser.add_argument("-o", "--out", metavar="OUT.npz", help="where to save the outputs")
    parser.add_argument("--outputs", nargs="+", metavar="NAME",
                        help="values to compute (default: the graph's outputs)")
    add_dtype_argument(parser)


def read_feeds(items: list[str]) -> dict[str, np.ndarray]:
    """``{NAME: array}`` from the ``NAME=FILE`` arguments of ``-i``."""
    feeds = {}
    for item in items:
        name, eq, path = item.partition("=")
        if not eq or not name or not path:
            raise FlowgradError(f"--input expects NAME=FILE.npy, got '{item}'")
        feeds[name] = read_array(path, f"input file for '{name}'")
    return feeds


def run(args, registry):
    graph = load(args.graph, registry=registry)
    net = compile(graph, dtype=args.dtype)
    feeds = read_feeds(args.input)
    unknown = [n for n in feeds if n not in graph.inputs]
    if unknown:
        raise FlowgradError(f"--input {unknown[0]}: the graph has no input '{unknown[0]}'"
                            f"{did_you_mean(unknown[0], graph.inputs)} "
                            f"(its inputs: {', '.join(graph.inputs)})")
    missing = [n for n in graph.inputs if n not in feeds]
    if missing and not args.outputs:
        raise FlowgradError(f"missing --input for {', '.join(missing)} "
                            f"(the graph's inputs: {', '.join(graph.inputs)}); or ask only for "
                            "--outputs that do not need it")
    outputs = net.forward(feeds, outputs=args.outputs, grad=False)
    for name, value in outputs.items():
        value = np.asarray(value)
        preview = np.array2string(value.ravel()[:6], precision=4, separator=", ")
        more = " ..." if value.size > 6 else ""
        print(f"{name}: {value.dtype}{list(value.shape)} {preview}{more}")
    if args.out:
        np.savez(args.out, **{k.replace("/", "_"): np.asarray(v) for k, v in outputs.items()})
        print(f"saved {len(outputs)} output(s) to {args.out}")
    return 0
