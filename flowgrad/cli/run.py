"""``flowgrad run``: run a graph on arrays and save its outputs.

Each ``-i NAME=FILE`` is read by :func:`flowgrad.arrays.read_array` (a ``.npy``, or a ``.npz``
holding one array), which refuses a damaged or non-numeric file with a message naming it.
``-o`` writes exactly the path given, never over an existing file without ``--force`` (the
convention of every command, :mod:`._common`).  With ``--data FILE.npy`` the graph runs over every row
of a file too large for one process, in chunks on Dask workers (``--workers``/``--cluster``),
into a ``.npy`` output (:func:`flowgrad.distributed.run_distributed`)."""
from __future__ import annotations

import numpy as np

from ..arrays import read_array
from ..errors import FlowgradError, did_you_mean
from ._common import (add_checkpoint_argument, add_dask_arguments, add_dtype_argument,
                      add_force_argument, add_graph_argument, at_least, output_file)

HELP = "run a graph on input arrays and save the outputs (.npz; or over a big .npy on Dask)"


def add_arguments(parser):
    add_graph_argument(parser)
    parser.add_argument("-i", "--input", action="append", default=[], metavar="NAME=FILE.npy",
                        help="an input array (repeatable)")
    parser.add_argument("-o", "--out", metavar="OUT.npz",
                        help="where to save the outputs (exactly this path; with --data, a .npy)")
    add_force_argument(parser)
    parser.add_argument("--outputs", nargs="+", metavar="NAME",
                        help="values to compute (default: the graph's outputs)")
    add_checkpoint_argument(parser)
    parser.add_argument("--data", metavar="[NAME=]FILE.npy",
                        help="run over every row of FILE.npy in chunks on Dask workers, into "
                             "-o OUT.npy (needs flowgrad[distributed])")
    add_dask_arguments(parser, "with --data: run the chunks")
    parser.add_argument("--chunk-rows", type=int, metavar="N",
                        help="with --data: rows per task (default: about 32 MiB)")
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


def input_node(graph, name: str) -> str:
    """The input node ``-i NAME`` feeds: an input's name or an alias of one (a model's own
    name, e.g. ``input.1`` in a graph converted to YAML as ``input_1``)."""
    if name in graph.dag and graph.is_input(name):
        return name
    try:
        node = graph.leaf(name)
    except KeyError:
        node = None
    if node is None or not graph.is_input(node):
        known = [*graph.inputs, *(a for a, ref in graph.aliases.items() if ref in graph.inputs)]
        raise FlowgradError(f"--input {name}: the graph has no input '{name}'"
                            f"{did_you_mean(name, known)} (its inputs: "
                            f"{', '.join(graph.inputs)})")
    return node


def run(args, registry):
    from ..workflows.deploy import trained_graph, trained_plan
    if args.data or args.workers is not None or args.cluster or args.chunk_rows is not None:
        return _run_distributed(args, trained_graph(args.graph, args.checkpoint,
                                                    registry=registry), registry)
    if args.out:
        output_file(args.out, "-o", force=args.force)
    net = trained_plan(args.graph, args.checkpoint, dtype=args.dtype,
                       registry=registry).freeze()
    graph = net.graph
    feeds = read_feeds(args.input)
    fed = {input_node(graph, n): n for n in feeds}
    missing = [n for n in graph.inputs if n not in fed]
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
    if args.out:                 # keyed by the names asked for, as written ('input.1', 'a/b')
        with open(args.out, "wb") as f:          # a file object: np.savez adds no '.npz'
            np.savez(f, **{k: np.asarray(v) for k, v in outputs.items()})
        print(f"saved {len(outputs)} output(s) to {args.out}")
    return 0


def _run_distributed(args, graph, registry) -> int:
    """``--data``: the graph over every row of a file, in chunks on Dask workers."""
    if not args.data:
        raise FlowgradError("--workers/--cluster/--chunk-rows run a graph over a file: add "
                            "--data FILE.npy")
    if args.input:
        raise FlowgradError("--data feeds the graph from one file; drop -i/--input")
    if not (args.out or "").endswith(".npy"):
        raise FlowgradError("--data writes its output into a .npy file: add -o OUT.npy")
    if args.outputs and len(args.outputs) > 1:
        raise FlowgradError("--data writes one output: give one name to --outputs")
    at_least("--workers", args.workers, 1)
    at_least("--chunk-rows", args.chunk_rows, 1)
    output_file(args.out, "-o", force=args.force)
    name, _, path = args.data.rpartition("=")
    from ..distributed import run_distributed
    done = run_distributed(graph, path, args.out, workers=args.workers, cluster=args.cluster,
                           input=name or None, output=args.outputs[0] if args.outputs else None,
                           chunk_rows=args.chunk_rows, dtype=args.dtype, registry=registry)
    print(f"{done.output}: {done.rows} rows in {done.chunks} chunks on {done.workers} "
          f"worker(s), {done.seconds:.1f} s; saved to {done.out}")
    return 0
