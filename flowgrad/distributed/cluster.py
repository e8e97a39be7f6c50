"""Which Dask cluster a distributed call runs on.

No address: an embedded ``LocalCluster`` of worker *processes* with one thread each — numpy
releases the GIL only inside BLAS, so threads of one process would mostly wait on each other,
and one thread per worker keeps BLAS from oversubscribing the cores.  An address (argument or
``FLOWGRAD_CLUSTER``) or a ``Client`` of your own: that scheduler, whatever started it.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator

from distributed import Client, LocalCluster

from ..errors import FlowgradError

#: the scheduler address used when no ``cluster=`` is given (e.g. ``tcp://10.0.0.5:8786``)
CLUSTER_ENV = "FLOWGRAD_CLUSTER"


@contextlib.contextmanager
def connect(cluster: str | None = None, workers: int | None = None,
            client: Client | None = None) -> Iterator[Client]:
    """A client for the duration of the block: ``client`` itself (left open), a connection to
    the scheduler at ``cluster`` (or ``$FLOWGRAD_CLUSTER``), or a new ``LocalCluster`` of
    ``workers`` processes (default: one per core), shut down at the end."""
    if client is not None:
        yield client
        return
    address = cluster or os.environ.get(CLUSTER_ENV) or None
    if workers is not None and workers < 1:
        raise FlowgradError(f"workers must be at least 1, got {workers}")
    if address is not None:
        try:
            with Client(address, timeout="20s") as remote:
                yield remote
        except OSError as e:
            raise FlowgradError(f"cannot reach the Dask scheduler at {address}: {e}") from None
        return
    n = workers or os.cpu_count() or 1
    with LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                      dashboard_address=None) as local, Client(local) as own:
        yield own


def pick_workers(client: Client, count: int | None, wait: bool = True) -> list[str]:
    """The addresses of ``count`` workers (all if None; waiting up to 30 s for that many if
    ``wait``), in a fixed order: shard ``i`` always goes to the ``i``-th, so the reduction
    order does not depend on the scheduler."""
    if count is not None and count < 1:
        raise FlowgradError(f"workers must be at least 1, got {count}")
    if count is not None and wait:
        with contextlib.suppress(TimeoutError):    # a smaller cluster: use what is there
            client.wait_for_workers(count, timeout=30)
    alive = sorted(client.nthreads())
    if not alive:
        raise FlowgradError("the Dask cluster has no workers")
    return alive if count is None else alive[:count]


def broadcast(client: Client, value: Any, workers: list[str] | None = None):
    """One future of ``value``, copied to every worker (or ``workers``) now rather than fetched
    by each task.  Wrapped in a list: ``scatter`` would send a dict's values as separate
    futures keyed by the dict's keys, and a key already in the cluster — the ``"params"`` of
    an earlier run — keeps its old value."""
    return client.scatter([value], broadcast=True, hash=False, workers=workers)[0]
