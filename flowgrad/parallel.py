"""Work sharing over CPU threads that never waits for a thread the OS has not scheduled.

Why: with N threads, OpenBLAS (and OpenMP) split each call's work N ways up front, and the caller
waits for every part.  On a machine shared with other processes, a part whose thread is not
running holds the whole call up by a scheduler time slice, call after call: measured on this
project's 2-core machine with other jobs running, LeNet's training step took 39 ms at 1 thread
and 474 ms at 2 (PyTorch, split the same way: 50 and 215 ms), while onnxruntime, whose threads
share work dynamically, went from 8.8 to 13.8 ms.

Here an op hands :func:`run` a number of independent *items* (the batch chunks of a
convolution, say).  The calling thread and the helper threads claim items one at a time from a
shared counter, the caller included: a helper that the OS does not schedule delays at most the
one item it holds, and on a busy machine the caller simply does more of them — never much worse
than one thread.  Inside items, BLAS runs on one thread (set through ``threadpoolctl`` for the
duration of a plan's run, :func:`blas_single`): the items are the parallelism, and BLAS threads
would split each item again, statically — and any product outside items would be split up
front, as before.

Results do not depend on the number of threads: items write disjoint parts of their outputs,
and what items add up (a weight gradient over batch chunks) the caller sums in item order, as
one thread would.  An item must not call :func:`run` itself: nested calls run inline.

The number of threads is ``FLOWGRAD_NUM_THREADS`` (default: the machine's core count), or what
:func:`set_num_threads` set last (``flowgrad --threads N`` on the command line); 1 runs every item inline, as before this module existed.
"""
from __future__ import annotations

import functools
import itertools
import os
import threading
from typing import Callable

_lock = threading.Lock()
_pool: "_Pool | None" = None
_threads: int | None = None
_inside = threading.local()         # .active: this thread is running items


def get_num_threads() -> int:
    """The threads :func:`run` uses: :func:`set_num_threads`'s, else ``FLOWGRAD_NUM_THREADS``,
    else the machine's core count."""
    if _threads is not None:
        return _threads
    value = os.environ.get("FLOWGRAD_NUM_THREADS", "").strip()
    if value:
        try:
            n = int(value)
        except ValueError:
            n = 0
        if n < 1:
            from .errors import FlowgradError
            raise FlowgradError(f"FLOWGRAD_NUM_THREADS must be a whole number >= 1, got "
                                f"{value!r}")
        return n
    return _cores()


@functools.lru_cache(maxsize=None)
def _cores() -> int:
    """The machine's core count, read once: ``os.cpu_count`` reads ``/sys`` at every call
    (~10 µs, ten system calls), and :func:`run` asks at every call with several items."""
    return os.cpu_count() or 1


def set_num_threads(n: int | None) -> None:
    """Use ``n`` threads (>= 1) from now on, or with None what the environment says (see
    :func:`get_num_threads`); the helper threads are started on first use."""
    global _threads, _pool
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        from .errors import FlowgradError
        raise FlowgradError(f"the number of threads must be a whole number >= 1, got {n!r}")
    with _lock:
        _threads = n
        if _pool is not None and (n is None or _pool.size != n):
            _pool.stop()            # (the next run starts the pool the new count asks for)
            _pool = None


def run(item: Callable[[int], None], count: int) -> None:
    """Call ``item(0)``, ..., ``item(count - 1)``, each once, spread over the threads; return
    when every call has returned.  The first exception an item raised is raised here, after
    the items already started have finished."""
    pool = None
    if count > 1 and not getattr(_inside, "active", False):
        n = get_num_threads()
        pool = _pool if _pool is not None and _pool.size == n else _get_pool(n)
    if pool is None:                    # one thread, one item, or inside an item: inline
        for i in range(count):
            item(i)
        return
    pool.run(item, count)


def _get_pool(n: int) -> "_Pool | None":
    """The pool of ``n`` threads (None for one thread), started if need be."""
    global _pool
    with _lock:
        if _pool is not None and _pool.size != n:
            _pool.stop()
            _pool = None
        if _pool is None and n > 1:
            _pool = _Pool(n)
        return _pool


class _Job:
    __slots__ = ("item", "count", "claim", "done", "error", "finished")

    def __init__(self, item, count):
        self.item, self.count = item, count
        self.claim = itertools.count()      # next() is atomic under the GIL
        self.done = 0
        self.error: BaseException | None = None
        self.finished = threading.Condition(threading.Lock())

    def work(self) -> None:
        """Claim and run items until none is left.  The last item to finish lets the item
        function go (no thread keeps it in a local either): what it refers to — a plan's
        activations — must be free for the plan's pool to recycle as soon as the call ends."""
        count = self.count
        i = next(self.claim)
        while i < count:
            try:
                if self.error is None:
                    self.item(i)
            except BaseException as e:          # reported by the caller
                if self.error is None:
                    self.error = e
            with self.finished:
                self.done += 1
                if self.done == count:
                    self.item = None
                    self.finished.notify_all()
            i = next(self.claim)


class _Pool:
    """``size - 1`` daemon helper threads waiting for jobs; the caller is the last thread."""

    def __init__(self, size: int):
        self.size = size
        self._wake = threading.Condition(threading.Lock())
        self._job: _Job | None = None
        self._generation = 0
        self._stopped = False
        self._blas = blas_single()
        for k in range(size - 1):
            threading.Thread(target=self._helper, name=f"flowgrad-worker-{k}",
                             daemon=True).start()

    def _helper(self) -> None:
        _inside.active = True
        seen = 0
        while True:
            with self._wake:
                while self._generation == seen and not self._stopped:
                    self._wake.wait()
                if self._stopped:
                    return
                seen, job = self._generation, self._job
            if job is not None:
                job.work()
            job = None      # (an idle helper holds no item, nor the arrays it refers to)

    def run(self, item: Callable[[int], None], count: int) -> None:
        job = _Job(item, count)
        with self._blas:
            with self._wake:
                self._job = job
                self._generation += 1
                self._wake.notify_all()
            _inside.active = True
            try:
                job.work()
            finally:
                _inside.active = False
            with job.finished:
                while job.done < count:
                    job.finished.wait()
            with self._wake:            # the finished job (its item's arrays) is let go, so
                if self._job is job:    # that the plan's pool can recycle what it read
                    self._job = None
        if job.error is not None:
            raise job.error

    def stop(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify_all()


class _BlasThreads:
    """A context in which BLAS runs on one thread, restored when the outermost one ends.

    ``threadpoolctl`` finds the BLAS numpy loaded (once: that walks the loaded libraries;
    imported here, so that importing flowgrad does not pay for it); entering and leaving then
    cost a few calls into the library (2–3 µs)."""

    def __init__(self):
        from threadpoolctl import ThreadpoolController
        self._libs = [lib for lib in ThreadpoolController().lib_controllers
                      if lib.user_api == "blas"]
        self._lock = threading.Lock()
        self._depth = 0
        self._saved: list[int] = []

    def __enter__(self):
        with self._lock:
            if self._depth == 0:
                self._saved = [lib.get_num_threads() for lib in self._libs]
                for lib, n in zip(self._libs, self._saved):
                    if n != 1:
                        lib.set_num_threads(1)
            self._depth += 1
        return self

    def __exit__(self, *exc):
        with self._lock:
            self._depth -= 1
            if self._depth == 0:
                for lib, n in zip(self._libs, self._saved):
                    if n != 1:
                        lib.set_num_threads(n)
        return False


_blas: _BlasThreads | None = None
_blas_lock = threading.Lock()


def blas_single() -> _BlasThreads:
    """A context (reentrant) in which BLAS runs on one thread: a plan's runs are in one, so
    every thread a run uses is flowgrad's own (see the module doc)."""
    global _blas
    if _blas is None:
        with _blas_lock:
            if _blas is None:
                _blas = _BlasThreads()
    return _blas
