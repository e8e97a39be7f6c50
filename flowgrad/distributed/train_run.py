"""``flowgrad train --workers N``: :func:`flowgrad.train_and_report`, data-parallel.

The same split, folder and files as the local command (``checkpoint.npz`` after every epoch,
``history.json``, ``curves.png``, ``metrics.json``), so ``flowgrad eval`` and ``--resume`` work
on either run's output; only the trainer differs.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

from ..data import load_data, split
from ..graph import Graph
from ..plan import compile
from ..plots import plot_curves
from ..train_config import from_graph
from ..workflows.training import Log, TrainingRun, load_trainable, quiet
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
    os.makedirs(out_dir, exist_ok=True)
    checkpoint = os.path.join(out_dir, "checkpoint.npz")
    with connect(cluster, workers, client) as dask_client:
        trainer = DistributedTrainer(plan, config, registry=registry, progress=progress,
                                     client=dask_client, workers=workers, send=send,
                                     source=source, log=log)
        log(f"training {graph.name} on {data} with {len(dask_client.nthreads())} Dask "
            f"worker(s): {len(train_set)} train / {len(test)} test samples, {config.epochs} "
            f"epochs, global batch {config.batch_size}, {config.optimizer['kind']} "
            f"lr {config.lr:g}")
        start = time.perf_counter()
        try:
            history = trainer.fit(train_set, checkpoint=checkpoint, resume=resume)
        finally:
            trainer.close()
        seconds = time.perf_counter() - start
    history_path = os.path.join(out_dir, "history.json")
    history.save(history_path)
    curves = plot_curves(history.rows, os.path.join(out_dir, "curves.png"), title=graph.name)
    metrics = {"train_seconds": seconds, "epochs": trainer.epoch,
               "workers": max((s.workers for s in trainer.stats), default=0)}
    if len(test):
        metrics.update({f"test_{k}": v for k, v in trainer.evaluate(test).items()})
        log("test: " + ", ".join(f"{k[5:]} {v:.4f}" for k, v in metrics.items()
                                 if k.startswith("test_")))
    metrics_path = os.path.join(out_dir, "metrics.json")
    with open(metrics_path, "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=1)
    log(f"trained in {seconds:.1f} s; wrote {checkpoint}, {curves}, {history_path}")
    return TrainingRun(plan, trainer, config, history, metrics, checkpoint,
                       [checkpoint, history_path, curves, metrics_path])
