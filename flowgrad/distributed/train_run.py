"""``flowgrad train --workers N``: :func:`flowgrad.train_and_report`, data-parallel.

The same split, folder and files as the local command (``checkpoint.npz`` after every epoch,
``history.json``, ``curves.png``, ``metrics.json``), so ``flowgrad eval`` and ``--resume`` work
on either run's output; only the trainer differs.
"""
from __future__ import annotations

from typing import Any

from ..data import load_data, split
from ..graph import Graph
from ..plan import compile
from ..train_config import from_graph
from ..workflows.training import Log, TrainingRun, fit_and_report, load_trainable, quiet
from .cluster import connect
from .shipping import ship
from .training import DistributedTrainer


def train(graph: Graph | str, out_dir: str, data: str = "digits", *,
          workers: int | None = None, cluster: str | None = None, client: Any = None,
          send: str = "indices", resume: str | None = None, dtype: str = "float32",
          registry: Any = None, progress: bool = False, log: Log = quiet,
          **settings: Any) -> TrainingRun:
    """:func:`flowgrad.train_and_report` on ``workers`` Dask workers (a ``LocalCluster`` of
    that many processes, or the scheduler at ``cluster`` / ``$FLOWGRAD_CLUSTER``, or
    ``client``).  ``graph`` must be a file (workers load it); the result's trainer is a
    :class:`DistributedTrainer` whose ``stats`` time every step."""
    source = ship(graph, registry)
    graph = load_trainable(graph, registry, log)
    config = from_graph(graph, registry).replace(**settings)
    plan = compile(graph, dtype=dtype, seed=config.seed)
    train_set, test = split(load_data(data, registry), config.test_split, seed=config.seed)
    with connect(cluster, workers, client) as dask_client:
        trainer = DistributedTrainer(plan, config, registry=registry, progress=progress,
                                     client=dask_client, workers=workers, send=send,
                                     source=source, log=log)
        log(f"training {graph.name} on {data} with {len(dask_client.nthreads())} Dask "
            f"worker(s): {len(train_set)} train / {len(test)} test samples, {config.epochs} "
            f"epochs, global batch {config.batch_size}, {config.optimizer['kind']} "
            f"lr {config.lr:g}")
        try:
            return fit_and_report(trainer, train_set, test, out_dir, resume=resume, log=log)
        finally:
            trainer.close()
