"""Batch inference over a large ``.npy`` file on Dask workers.

The input is cut into row ranges; each task opens the file memory-mapped *on its worker*, reads
its rows, runs the plan (evaluation mode, no gradients) and returns that chunk of the output,
which the driver writes into an output ``.npy`` opened with ``np.lib.format.open_memmap`` as
chunks arrive.  No process holds the whole input or output: a worker holds one chunk, the
driver at most a window of ``2 x workers`` chunks in flight.

Why plain tasks over a memory-mapped ``.npy`` and not ``dask.array`` or zarr: a task needs only
``(path, start, stop)``, so nothing of the data travels through the scheduler (a memmap
pickles as its whole contents: a dask array built on one would carry the data in its graph), and ``.npy`` is what flowgrad reads
and writes everywhere else.  Workers must see the input at the same path (a shared
filesystem, as on a Slurm cluster); zarr would be the choice for object stores, where no
worker can memory-map a file.  The output is written by the driver alone, since workers on
different hosts writing pages of one shared memory-mapped file can overwrite each other.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from distributed import as_completed

from ..errors import FlowgradError, did_you_mean
from ..graph import Graph
from ..loaders import load
from ..plan import compile
from .cluster import broadcast, connect
from .shipping import GraphSource, params_digest, ship, worker_plan

#: the default chunk: rows whose input or output takes about this many bytes
CHUNK_BYTES = 32 << 20


@dataclass
class InferenceRun:
    """What :func:`run_distributed` did: the ``out`` file holding ``output`` for ``rows`` rows
    of ``input``, in ``chunks`` tasks over ``workers`` workers, in ``seconds``."""

    out: str
    input: str
    output: str
    rows: int
    chunks: int
    workers: int
    seconds: float


def run_distributed(graph: Graph | str, data: str, out: str, *, workers: int | None = None,
                    cluster: str | None = None, client: Any = None, input: str | None = None,
                    output: str | None = None, chunk_rows: int | None = None,
                    dtype: str = "float32", registry: Any = None,
                    on_chunk: Callable[[int, int], Any] | None = None) -> InferenceRun:
    """Run ``graph`` over every row of the ``.npy`` file ``data`` and write ``output`` (default:
    the graph's first output) for each row to the ``.npy`` file ``out``.

    ``input`` defaults to the only input ``output`` depends on; ``chunk_rows`` to about 32 MiB
    of input or output per task; ``on_chunk(rows_done, rows)`` is called as chunks are
    written.  Runs on ``client``, the scheduler at ``cluster`` (or ``$FLOWGRAD_CLUSTER``) or a
    ``LocalCluster`` of ``workers`` processes.
    """
    source = ship(graph, registry)
    loaded = load(graph, registry=registry) if isinstance(graph, str) else graph
    output = output or loaded.outputs[0]
    try:
        loaded.resolve(output)
    except KeyError:
        raise FlowgradError(f"graph '{loaded.name}' has no value '{output}'"
                            f"{did_you_mean(output, loaded.outputs)} (its outputs: "
                            f"{', '.join(loaded.outputs)})") from None
    input = input or _only_input(loaded, output)
    if input not in loaded.inputs and input in loaded.aliases:    # a model's own input name
        try:
            input = loaded.leaf(input)
        except KeyError:
            pass
    if input not in loaded.inputs:
        raise FlowgradError(f"graph '{loaded.name}' has no input '{input}'"
                            f"{did_you_mean(input, loaded.inputs)} (its inputs: "
                            f"{', '.join(loaded.inputs)})")
    try:
        x = np.load(data, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise FlowgradError(f"cannot memory-map '{data}' as a .npy array: {e}") from None
    if x.ndim < 1 or not len(x):
        raise FlowgradError(f"'{data}' holds no rows (shape {x.shape})")
    plan = compile(loaded, dtype=dtype).eval()       # one row: the output's shape and dtype
    probe = np.asarray(plan.forward({input: np.asarray(x[:1])}, outputs=[output],
                                    grad=False)[output])
    if probe.ndim < 1 or probe.shape[0] != 1:
        raise FlowgradError(f"output '{output}' has no batch axis (shape {probe.shape}): it "
                            "cannot be written row by row")
    row_bytes = max(x[:1].nbytes, probe.nbytes, 1)
    rows = chunk_rows or max(1, CHUNK_BYTES // row_bytes)
    ranges = [(start, min(start + rows, len(x))) for start in range(0, len(x), rows)]
    target = np.lib.format.open_memmap(out, mode="w+", dtype=probe.dtype,
                                       shape=(len(x),) + probe.shape[1:])
    start_time = time.perf_counter()
    with connect(cluster, workers, client) as dask_client:
        count = len(dask_client.nthreads())
        params = plan.state_dict()         # a Graph given in memory may hold other weights
        shipped = broadcast(dask_client, {"source": source, "dtype": dtype, "params": params,
                                          "params_key": params_digest(params)})
        _stream(dask_client, shipped, os.path.abspath(data), input, output, ranges, target,
                2 * count, on_chunk)
    target.flush()
    del target
    return InferenceRun(out, input, output, len(x), len(ranges), count,
                        time.perf_counter() - start_time)


def _stream(client, shipped, path: str, input: str, output: str,
            ranges: list[tuple[int, int]], target: np.ndarray, window: int,
            on_chunk: Callable[[int, int], Any] | None) -> None:
    """Keep ``window`` chunks in flight; write each into ``target`` as it finishes."""
    pending = iter(ranges)

    def submit(span):
        return client.submit(_run_chunk, shipped, path, input, output, *span, pure=False)

    running = as_completed([submit(span) for _, span in zip(range(window), pending)],
                           with_results=True)
    done = 0
    for future, (start, values) in running:
        target[start:start + len(values)] = values
        done += len(values)
        future.release()
        following = next(pending, None)
        if following is not None:
            running.add(submit(following))
        if on_chunk is not None:
            on_chunk(done, len(target))


def _run_chunk(shipped: dict[str, Any], path: str, input: str, output: str, start: int,
               stop: int) -> tuple[int, np.ndarray]:
    """On a worker: rows ``start:stop`` of the file at ``path`` through the cached plan."""
    source: GraphSource = shipped["source"]
    try:
        rows = np.asarray(np.load(path, mmap_mode="r", allow_pickle=False)[start:stop])
    except OSError as e:
        from distributed import get_worker
        raise FlowgradError(f"worker {get_worker().address} cannot read '{path}' ({e}); "
                            "distributed inference needs the input on a filesystem every "
                            "worker sees") from None
    plan = worker_plan(source, shipped["dtype"], shipped["params"],
                       shipped["params_key"]).freeze()
    return start, np.asarray(plan.forward({input: rows}, outputs=[output], grad=False)[output])


def _only_input(graph: Graph, output: str) -> str:
    """The one input ``output`` depends on (a classifier's logits need ``x``, not ``label``)."""
    import networkx as nx
    node, _ = graph.resolve(output)
    needed = [n for n in graph.inputs if n in nx.ancestors(graph.dag, node)]
    if len(needed) != 1:
        raise FlowgradError(f"output '{output}' of graph '{graph.name}' needs the inputs "
                            f"{', '.join(needed) or '(none)'}: say which one the data feeds "
                            "(input=...); the others cannot be fed from one file")
    return needed[0]
