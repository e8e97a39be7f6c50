"""Synchronous data-parallel training on Dask workers.

Each worker holds a replica — a compiled plan and an optimizer, i.e. a :class:`Trainer` — and
the data set, sent once.  A step sends each worker only the indices of its shard of the global
batch: shard ``i`` is rows ``[i*s, (i+1)*s)`` with ``s = ceil(batch_size / N)``, the split
``micro_batch=s`` makes in one process (a short last batch leaves the last workers idle).
Each worker returns its gradients weighted by its shard's share of the batch;
:func:`~.allreduce.tree_sum` adds them worker to worker; every replica then applies the same
update to the same sum — and so does the driver, whose copy of the parameters is what
checkpoints, evaluation, early stopping and the progress bar see (all of :class:`Trainer` is
reused; only :meth:`DistributedTrainer.train_step` differs).

Hence N workers compute what one process does with ``micro_batch=ceil(B/N)``: the same bits
in float64 for two workers (the additions happen in the same order), the same to float32
rounding against an unsplit batch.  Parameters that the forward pass updates (batch norm's
running statistics) are averaged over the shards the same way.  Dropout draws each shard's
masks on its own worker, so a graph with dropout matches one process only in distribution.

A worker lost mid-step (its process killed, its node gone) is noticed by polling the
scheduler while the step waits; the step is then redone on the workers left, from the driver's
parameters and optimizer state, which the lost step never touched — one log line, nothing lost.
"""
from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from ..data import Dataset
from ..numerics import check_step
from ..optim import clip_by_global_norm
from ..plan import Plan
from ..train import Trainer, forward_backward
from ..train_config import TrainConfig
from .allreduce import nbytes, tree_sum
from .cluster import broadcast, pick_workers
from .shipping import GraphSource, ship, worker_cache, worker_graph, worker_registry

_log = logging.getLogger("flowgrad.distributed")


@dataclass
class StepStats:
    """One distributed step: ``seconds`` on the driver's clock, the slowest shard's
    ``compute`` seconds and the most CPU seconds a shard used (``cpu``: what the compute
    costs when each worker has a core of its own), the ``workers`` used and per worker the
    bytes ``sent`` (its contribution to the reduction, and the shard's indices or data it
    received) and ``received`` (the summed gradients and state)."""

    seconds: float
    compute: float
    cpu: float
    workers: int
    sent: int
    received: int

    @property
    def communication(self) -> float:
        """What is not the slowest worker's compute: transfers, reduction and scheduling."""
        return max(self.seconds - self.compute, 0.0)


class _WorkerLost(Exception):
    """A replica's worker left the cluster during a step (the step is redone)."""

    def __init__(self, addresses: list[str]):
        super().__init__(", ".join(addresses))
        self.addresses = addresses


class DistributedTrainer(Trainer):
    """A :class:`Trainer` whose steps run data-parallel on the workers of ``client``.

    ``workers`` caps the replicas (default: every worker); ``send`` is ``"indices"`` (the data
    set is broadcast once, each step sends row indices) or ``"shards"`` (each step sends the
    shards' arrays); ``source`` is the shipped graph (default: ``plan.graph``'s file and the
    plugins of ``registry``); ``log`` receives the line reporting a lost worker; ``poll`` is
    how often (seconds) a waiting step checks that its workers are alive.  ``stats`` holds a
    :class:`StepStats` per step.  Everything else is :class:`Trainer`'s.
    """

    def __init__(self, plan: Plan, config: TrainConfig | None = None, registry: Any = None, *,
                 client, workers: int | None = None, send: str = "indices",
                 source: GraphSource | None = None, log: Callable[[str], Any] | None = None,
                 poll: float = 0.5, **options: Any):
        super().__init__(plan, config, registry, **options)
        if send not in ("indices", "shards"):
            raise ValueError(f"send must be 'indices' or 'shards', got {send!r}")
        self.client = client
        self.wanted = workers
        self.send = send
        self.source = source or ship(plan.graph, registry)
        self.log = log or _log.warning
        self.poll = poll
        self.stats: list[StepStats] = []
        self.run_id = uuid.uuid4().hex
        self.replicas: list[str] = []          # worker addresses; shard i goes to replicas[i]
        self._ready: list = []                 # per replica: the future its next step waits on
        self._data: dict[int, tuple[Dataset, Any]] = {}
        self._batch: tuple[Dataset, np.ndarray] | None = None
        self._restarts = 0

    # -- the Trainer's seams ---------------------------------------------------------------
    def feeds(self, data: Dataset, index: np.ndarray | slice) -> dict[str, np.ndarray]:
        """As :meth:`Trainer.feeds`, remembering which rows the coming step trains on."""
        self._batch = (data, np.arange(len(data))[index] if isinstance(index, slice) else index)
        return super().feeds(data, index)

    def load(self, path: str) -> None:
        """As :meth:`Trainer.load`; the replicas are restarted from the loaded state."""
        super().load(path)
        self.replicas = []

    def train_step(self, feeds: dict[str, np.ndarray], lr: float) -> dict[str, np.ndarray]:
        """One synchronous data-parallel step on the batch of the last :meth:`feeds` call."""
        data, index = self._batch
        start = time.perf_counter()
        while True:
            try:
                if not self.replicas:
                    self._start()
                total, shards = self._step(data, index, feeds, lr)
                break
            except _WorkerLost as lost:
                self.replicas, self._restarts = [], self._restarts + 1
                left = [a for a in self._alive() if a not in lost.addresses]
                self.log(f"worker {', '.join(lost.addresses)} lost at epoch {self.epoch + 1}, "
                         f"step {self.step + 1}; redoing the step on {len(left)} worker(s) "
                         "from the driver's parameters")
        out = _merge_outputs(self.plan, total["parts"])
        grads = {k[5:]: v for k, v in total["sums"].items() if k.startswith("grad/")}
        check_step(self.plan, feeds, {k: out[k] for k in self.seeds}, grads,
                   where=f"epoch {self.epoch + 1}, step {self.step + 1}")
        apply_update(self, total["sums"], lr)
        size = nbytes(total)
        self.stats.append(StepStats(time.perf_counter() - start,
                                    max(p["seconds"] for p in total["parts"]),
                                    max(p["cpu"] for p in total["parts"]), shards,
                                    size + max(p["shipped"] for p in total["parts"]), size))
        return out

    # -- replicas --------------------------------------------------------------------------
    def _alive(self) -> list[str]:
        return sorted(self.client.nthreads())

    def _start(self) -> None:
        """(Re)build a replica on each worker from the driver's state."""
        client = self.client
        # after a loss, go on with the workers left rather than wait for replacements
        self.replicas = pick_workers(client, self.wanted, wait=not self._restarts)
        self.run_id = uuid.uuid4().hex         # a new generation: old replicas are never used
        self._data = {}
        state = broadcast(client, {"source": self.source, "config": self.config,
                                   "dtype": self.plan.dtype.name,
                                   "params": self.plan.state_dict(),
                                   "optimizer": self.optimizer.state_dict(),
                                   "micro_batch": self.micro_batch, "seed": self.plan.seed},
                          self.replicas)
        self._ready = [client.submit(_start_replica, state, self.run_id, i,
                                     workers=[a], allow_other_workers=False, pure=False)
                       for i, a in enumerate(self.replicas)]
        self._wait(self._ready)

    def _data_future(self, data: Dataset):
        """The data set, broadcast to the replicas once (kept alive by holding ``data``)."""
        if id(data) not in self._data:
            self._data[id(data)] = (data, broadcast(self.client, data, self.replicas))
        return self._data[id(data)][1]

    def _step(self, data: Dataset, index: np.ndarray, feeds: Mapping[str, np.ndarray],
              lr: float) -> tuple[dict, int]:
        """Submit the shards, the reduction and the updates at once (one round of messages to
        the scheduler), then wait for the sum."""
        client = self.client
        size = -(-self.config.batch_size // len(self.replicas))
        leaves = []
        for i, address in enumerate(self.replicas):
            rows = slice(i * size, (i + 1) * size)
            shard = index[rows]
            if not len(shard):
                continue
            if self.send == "indices":
                what = (self._data_future(data), shard)
            else:
                what = (None, {k: v[rows] for k, v in feeds.items()})
            leaves.append(client.submit(_shard_step, self.run_id, self._ready[i], *what,
                                        len(shard) / len(index), workers=[address],
                                        allow_other_workers=False, pure=False))
        root = tree_sum(client, leaves)
        self._ready = [client.submit(_apply, self.run_id, ready, root, lr, workers=[a],
                                     allow_other_workers=False, pure=False)
                       for a, ready in zip(self.replicas, self._ready)]
        return self._wait([root])[0], len(leaves)

    def _wait(self, futures: list) -> list:
        """The results of ``futures``; :class:`_WorkerLost` if a replica's worker is gone.

        A task lost with its worker surfaces as a wait that never ends (a task pinned to a
        dead worker waits for it), ``KilledWorker``, a cancelled future or a closed
        connection, depending on timing: whichever it is, what decides is whether a replica's
        worker left the cluster."""
        from distributed import wait
        while True:
            try:
                wait(futures, timeout=self.poll)
                break
            except TimeoutError:
                self._check_alive(futures)
            except Exception:
                break                            # gather raises it, or names the lost worker
        try:
            return self.client.gather(futures)
        except Exception:
            self._check_alive(futures)
            raise

    def _check_alive(self, futures: list) -> None:
        alive = set(self._alive())
        lost = [a for a in self.replicas if a not in alive]
        if lost:
            self.client.cancel(futures)
            raise _WorkerLost(lost) from None

    def run_metrics(self) -> dict[str, float]:
        """The most workers any step ran on (``metrics.json``'s ``workers``)."""
        return {"workers": max((s.workers for s in self.stats), default=0)}

    def close(self) -> None:
        """Drop the replicas from the workers (a shared cluster outlives the run)."""
        alive = [a for a in self.replicas if a in set(self._alive())]
        if alive:
            self.client.run(_drop_replica, self.run_id, workers=alive, on_error="ignore")
        self.replicas, self._ready, self._data = [], [], {}


def apply_update(trainer: Trainer, sums: Mapping[str, np.ndarray], lr: float) -> None:
    """Apply a reduced step to ``trainer``'s plan: the averaged state, then the clipped
    gradients through the optimizer — the same code on the driver and on every replica, so
    all of them hold the same bits afterwards."""
    state = {k[6:]: v for k, v in sums.items() if k.startswith("state/")}
    if state:
        trainer.plan.load_state_dict(state)
    grads = {k[5:]: v for k, v in sums.items() if k.startswith("grad/")}
    if trainer.config.clip_grad_norm is not None:
        grads, _ = clip_by_global_norm(grads, trainer.config.clip_grad_norm)
    trainer.optimizer.step(grads, lr=lr)


def _merge_outputs(plan: Plan, parts: list[dict]) -> dict[str, np.ndarray]:
    """The shards' outputs as one batch's: per-sample values concatenated, reduced ones (a
    mean loss) weighted by each shard's share — as ``forward_backward`` merges micro-batches."""
    graph = plan.graph
    merged = {}
    for name in parts[0]["outputs"]:
        node, port = graph.resolve(name)
        values = [(p["outputs"][name], p["weight"]) for p in parts]
        if graph.specs(node)[port].shape[:1] == (None,):
            merged[name] = np.concatenate([v for v, _ in values])
        elif len(values) == 1:
            merged[name] = values[0][0]
        else:
            total = values[0][0] * values[0][1]
            for value, weight in values[1:]:
                total = total + value * weight
            merged[name] = np.asarray(total, dtype=values[0][0].dtype)
    return merged


# -- on the workers --------------------------------------------------------------------------
def _start_replica(state: dict, run_id: str, shard: int) -> int:
    """Build this worker's replica: the plan and a trainer with the driver's state.  Dropout
    masks come from a generator seeded by the plan's seed plus the shard, so shards do not
    share masks and one worker draws the masks one process does."""
    from ..plan import compile
    source: GraphSource = state["source"]
    cache = worker_cache()
    for key in [k for k in cache if k[0] == "replica"]:
        del cache[key]                         # one run per worker at a time
    from ..workflows.training import load_trainable      # the loss a classifier is given
    graph = load_trainable(worker_graph(source), worker_registry(source))
    plan = compile(graph, dtype=state["dtype"], seed=state["seed"] + shard)
    plan.load_state_dict(state["params"])
    trainer = Trainer(plan, state["config"], registry=worker_registry(source),
                      micro_batch=state["micro_batch"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    cache[("replica", run_id)] = trainer
    return shard


def _shard_step(run_id: str, ready: Any, data: Dataset | None, shard: Any,
                weight: float) -> dict:
    """Forward and backward of one shard on this worker's replica; the contribution to the
    sum: gradients and changed state weighted by ``weight``, and the raw outputs."""
    trainer: Trainer = worker_cache()[("replica", run_id)]
    plan = trainer.plan
    plan.train()
    feeds = trainer.feeds(data, shard) if data is not None else shard
    state = [k for k in plan.params if k not in set(plan.trainable)]
    before = {k: plan.params[k].copy() for k in state}
    start, cpu = time.perf_counter(), time.thread_time()
    with trainer.norm_mode():              # batch norm as the local trainer runs it
        out, grads = forward_backward(plan, feeds, trainer.seeds, outputs=trainer.outputs,
                                      micro_batch=trainer.micro_batch)
    seconds, cpu = time.perf_counter() - start, time.thread_time() - cpu
    sums = {f"grad/{k}": g * weight for k, g in grads.items()}
    sums.update({f"state/{k}": plan.params[k] * weight for k in state
                 if not np.array_equal(before[k], plan.params[k])})
    shipped = (np.asarray(shard).nbytes if data is not None
               else sum(np.asarray(v).nbytes for v in shard.values()))
    return {"sums": sums, "parts": [{"outputs": out, "weight": weight, "seconds": seconds,
                                     "cpu": cpu, "shipped": shipped}]}


def _apply(run_id: str, ready: Any, total: dict, lr: float) -> int:
    apply_update(worker_cache()[("replica", run_id)], total["sums"], lr)
    return 0


def _drop_replica(run_id: str, dask_worker=None) -> None:
    getattr(dask_worker, "flowgrad_cache", {}).pop(("replica", run_id), None)
