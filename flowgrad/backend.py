"""The backend seam: the one object through which ops create arrays and reach compiled kernels.

Why: an op that calls ``np.empty`` or a numba function directly is welded to the CPU.  Ops
instead ask ``ctx.backend`` — ``backend.empty(shape, dtype)`` for an output (recycled plan
memory, :mod:`flowgrad.plan.memory`), ``backend.kernels.<name>(...)`` for a hot loop
(:mod:`flowgrad.kernels`), ``backend.xp`` for the array module, ``backend.parallel(item, n)``
to spread independent pieces of work over the CPU's threads (:mod:`flowgrad.parallel`) — so
that a GPU backend (CuPy, say) can later be one more module implementing the same few things,
not an edit of every op file.  Only the CPU backend exists: nothing is built for a device we
cannot test on.

The kernels module is imported on first use, so a command that runs no kernel never pays for
importing numba.
"""
from __future__ import annotations

from typing import Any, Callable, Hashable, Iterable

import numpy as np

from . import parallel as _parallel

_KERNELS = None     # flowgrad.kernels, once imported
_MISSING = object()


class CPUBackend:
    """numpy arrays, numba-compiled kernels, activation memory from the plan's pool.

    ``pool`` is the plan's :class:`~flowgrad.plan.memory.BufferPool`, or None outside a plan (an op
    called on its own, shape inference): then ``empty`` is plain ``np.empty``.  ``constants``
    are the plan's constant leaves, whose derived forms :meth:`prepared` keeps.
    """

    name = "cpu"
    xp = np

    __slots__ = ("pool", "empty", "_constants", "_prepared")

    def __init__(self, pool: Any = None, constants: Iterable[np.ndarray] = ()):
        self.pool = pool
        # the plan's constants by identity (held here, so no other array can take an id)
        self._constants = {id(value): value for value in constants}
        self._prepared: dict[tuple, Any] = {}
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

    def prepared(self, value: np.ndarray, make: Callable[[np.ndarray], Any], *key: Hashable
                 ) -> Any:
        """``make(value)``, computed once per plan when ``value`` is one of its constants.

        Why: some ops convert a weight before every use — a quantized model's int8 matrix
        shifted by its zero point into floats that BLAS multiplies exactly — and for a large
        weight that conversion costs more than the product.  A plan's constants never change
        after compile (they are not in ``plan.params``: optimizers, checkpoints and
        ``load_state_dict`` never write them), so what is derived from one can be kept.
        Anything else — an activation, whose memory the plan recycles, or a param, which
        optimizers and users update in place — gets ``make(value)`` afresh at every call.
        ``key`` names the derivation and whatever else it depends on (a zero point, a dtype),
        so two derivations of one constant do not collide.
        """
        if id(value) not in self._constants:
            return make(value)
        slot = (id(value),) + key
        result = self._prepared.get(slot, _MISSING)
        if result is _MISSING:
            result = self._prepared[slot] = make(value)
            # what is derived from a constant is a constant too (a weight split per direction
            # is then shifted once per direction)
            for part in result if isinstance(result, (tuple, list)) else (result,):
                if isinstance(part, np.ndarray):
                    self._constants[id(part)] = part
        return result

    @staticmethod
    def parallel(item: Callable[[int], None], count: int) -> None:
        """``item(0)``, ..., ``item(count - 1)`` spread over flowgrad's threads, returning when
        all have run (:func:`flowgrad.parallel.run`).  The items must be independent — write
        disjoint outputs — so the result does not depend on the thread count; what they add
        up, the caller sums afterwards in item order."""
        _parallel.run(item, count)

    def __repr__(self) -> str:
        return f"CPUBackend(pooled={self.pool is not None})"


#: the backend of a context created outside a plan
DEFAULT = CPUBackend()

