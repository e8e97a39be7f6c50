"""The backend seam: the one object through which ops create arrays and reach compiled kernels.

Why: an op that calls ``np.empty`` or a numba function directly is welded to the CPU.  Ops
instead ask ``ctx.backend`` — ``backend.empty(shape, dtype)`` for an output (recycled plan
memory, :mod:`flowgrad.plan.memory`), ``backend.kernels.<name>(...)`` for a hot loop
(:mod:`flowgrad.kernels`), ``backend.xp`` for the array module — so that a GPU backend (CuPy,
say) can later be one more module implementing the same three things, not an edit of every op
file.  Only the CPU backend exists: nothing is built for a device we cannot test on.

The kernels module is imported on first use, so a command that runs no kernel never pays for
importing numba.
"""
from __future__ import annotations

from typing import Any

import numpy as np


_KERNELS = None     # flowgrad.kernels, once imported


class CPUBackend:
    """numpy arrays, numba-compiled kernels, activation memory from the plan's pool.

    ``pool`` is the plan's :class:`~flowgrad.plan.memory.BufferPool`, or None outside a plan (an op
    called on its own, shape inference): then ``empty`` is plain ``np.empty``.
    """

    name = "cpu"
    xp = np

    __slots__ = ("pool", "empty")

    def __init__(self, pool: Any = None):
        self.pool = pool
        #: ``empty(shape, dtype)``: a new uninitialised array for an output — ``np.empty``, but
        #: memory an activation the plan has finished with is reused (no page faults) when
        #: there is one of the size.  (Bound straight to the pool: it is called per op.)
        self.empty = np.empty if pool is None else pool.empty

    @property
    def kernels(self):
        """The compiled kernels (:mod:`flowgrad.kernels`), imported on first use."""
        global _KERNELS
        if _KERNELS is None:
            from . import kernels
            _KERNELS = kernels
        return _KERNELS

    def __repr__(self) -> str:
        return f"CPUBackend(pooled={self.pool is not None})"


#: the backend of a context created outside a plan
DEFAULT = CPUBackend()

