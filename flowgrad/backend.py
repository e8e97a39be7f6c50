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

    def prepared(self, value: Any, make: Callable[[Any], Any], *key: Hashable) -> Any:
        """``make(value)``, computed once per plan when ``value`` is one of its constants — or a
        tuple of arrays (None allowed: an absent bias) that all are.

        Why: some ops convert a weight before every use — a quantized model's int8 matrix
        shifted by its zero point into floats that BLAS multiplies exactly, a batch norm folded
        into the convolution before it — and that conversion can cost more than the product.
        A plan's constants never change after compile (they are not in ``plan.params``:
        optimizers, checkpoints and ``load_state_dict`` never write them), nor do the params of
        a frozen plan (:meth:`declare_constants`), so what is derived from them can be kept.
        Anything else — an activation, whose memory the plan recycles, or a live param, which
        optimizers and users update in place — gets ``make(value)`` afresh at every call.
        ``key`` names the derivation and whatever else it depends on (a zero point, a dtype),
        so two derivations of one constant do not collide.
        """
        values = value if isinstance(value, tuple) else (value,)
        slot = tuple(map(id, values)) + key
        # (a slot is kept only for constants, which the backend holds: no other array can
        # take their ids, so a hit needs no check)
        result = self._prepared.get(slot, _MISSING)
        if result is _MISSING:
            if not self.are_constants(values):
                return make(value)
            result = self._prepared[slot] = make(value)
            # what is derived from a constant is a constant too (a weight split per direction
            # is then shifted once per direction)
            self.declare_constants(result if isinstance(result, (tuple, list)) else (result,))
        return result

    def row_major(self, value: np.ndarray, view: Callable[[np.ndarray], np.ndarray],
                  *key: Hashable) -> np.ndarray:
        """``view(value)`` — a transposing view of a weight — made C-contiguous once and kept,
        read-only as the constant is, when ``value`` is one of the plan's constants; for
        anything else (a live param, which optimizers change) the view itself.

        Why: OpenBLAS reads a transposed operand slower than a row-major one (a GRU's
        input projection with its weight out of cache: 345 against 250 µs), and for a
        single row it sums in another order; a frozen plan pays the copy once, a live plan
        would pay it at every call."""
        if not self.are_constants((value,)):
            return view(value)

        def make(v):
            out = np.ascontiguousarray(view(v))
            out.flags.writeable = False
            return out
        return self.prepared(value, make, *key)

    def are_constants(self, values: tuple) -> bool:
        """Whether every array of ``values`` (None allowed) is one of the plan's constants:
        whether :meth:`prepared` keeps what is derived from them."""
        constants = self._constants
        for v in values:
            if v is not None and id(v) not in constants:
                return False
        return True

    def declare_constants(self, values: Iterable[Any]) -> None:
        """Treat ``values`` (arrays; anything else is ignored) as constants of the plan from
        now on: :meth:`prepared` keeps what is derived from them.  The caller guarantees that
        nothing writes them again (a frozen plan's params are read-only)."""
        for v in values:
            if isinstance(v, np.ndarray):
                self._constants[id(v)] = v

    @staticmethod
    def product(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``out = a @ b`` for 2-d ``a`` (M, K), ``b`` (K, N) and ``out`` (M, N), shared among
        flowgrad's threads when large.

        Why: inside a plan's run BLAS keeps to one thread (:mod:`flowgrad.parallel`), so a
        product that is not already one item of a batch split — a convolution at batch 1 —
        would run on one core (onnx's ResNet-50 at batch 1 and 2 threads: 2.7x onnxruntime's
        time, 1.8-2.0x with its products shared).  A product of at least twice
        :data:`PRODUCT_SPLIT` multiply-adds is cut into :func:`product_pieces`, along the
        longer of ``out``'s sides, so that what each piece packs again (the other operand) is
        the smaller one.  The pieces are fixed by the shapes, never by the thread count: the
        bits do not depend on it.
        """
        m, k = a.shape
        if m * k * b.shape[1] < 2 * PRODUCT_SPLIT:     # (most products: no call to cut)
            return one_product(a, b, out)
        pieces = product_pieces(m, k, b.shape[1])
        if len(pieces) == 1:
            return one_product(a, b, out)
        rows = pieces[0][0] == "rows"

        def piece(i):
            _, start, stop = pieces[i]
            if rows:
                one_product(a[start:stop], b, out[start:stop])
            else:
                one_product(a, b[:, start:stop], out[:, start:stop])
        _parallel.run(piece, len(pieces))
        return out

    @property
    def threads(self) -> int:
        """How many threads :meth:`parallel` shares items among (1: it runs them inline)."""
        return _parallel.get_num_threads()

    def batch(self, n: int, work: int, part: Callable[[int, int], None]) -> None:
        """``part(start, stop)`` over consecutive ranges covering ``range(n)`` — the batch of
        a kernel that computes each item (image) alone, so that how the batch is cut changes
        no bit: one call with one thread, else parts the threads share, a few per thread and
        none shorter than :data:`BATCH_PART_NS` (``work``: an item's rough cost in
        nanoseconds of one core; a part costs a call)."""
        threads = self.threads if n > 1 else 1
        parts = min(n, 4 * threads, max(1, n * work // BATCH_PART_NS)) if threads > 1 else 1
        if 1 < parts < n:       # a whole number of parts per thread: none waits on the last
            parts = min(n, -(-parts // threads) * threads)
        if parts == 1:
            part(0, n)
            return
        bounds = [n * i // parts for i in range(parts + 1)]
        _parallel.run(lambda i: part(bounds[i], bounds[i + 1]), parts)

    @staticmethod
    def parallel(item: Callable[[int], None], count: int) -> None:
        """``item(0)``, ..., ``item(count - 1)`` spread over flowgrad's threads, returning when
        all have run (:func:`flowgrad.parallel.run`).  The items must be independent — write
        disjoint outputs — so the result does not depend on the thread count; what they add
        up, the caller sums afterwards in item order."""
        _parallel.run(item, count)

    def __repr__(self) -> str:
        return f"CPUBackend(pooled={self.pool is not None})"


#: multiply-adds from which :meth:`CPUBackend.product` cuts a product into pieces (~0.3 ms
#: of one core's work), and the most pieces it cuts.  Two pieces: the products of ResNet-50's
#: convolutions at batch 1 take 0.62x the time at 2 threads, and 2.4 % more at 1 thread
#: (each piece packs its share of the operands apart; four pieces cost 4.4 %)
PRODUCT_SPLIT = 1 << 23
PRODUCT_PIECES = 2


#: the size (elements) of the long operand from which :func:`one_product` computes an output
#: 2 or 3 wide as that many matrix-vector products
SKINNY_OPERAND = 1 << 14


def one_product(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out = a @ b`` on one thread, as BLAS computes it fastest: an output of 2 or 3 rows
    (or columns) as that many matrix-vector products, each row of ``a`` times ``b`` (``a``
    times each column of ``b``), else one matrix product.

    Why: OpenBLAS's matrix product packs both operands into blocks of several rows and
    columns, and for 2 or 3 rows that costs more than it saves: measured, 1 thread, warm /
    out of cache, product vs matrix-vector loop — (3, 512) @ (512, 512) 124 / 154 µs vs 65 /
    102, (2, 512) @ (512, 2048) 372 vs 167, (128, 387) @ (387, 3) (a conv at batch 1 with 3
    output positions, silero VAD's) 19 / 44 vs 15 / 34, (4096, 4096) @ (4096, 2) 8.9 vs 4.6 ms.
    At 4 wide they are even; under :data:`SKINNY_OPERAND` elements the product's set-up is
    cheap and one call beats a loop of them.  The bits are a function of the shapes alone,
    as for every product here."""
    m, k = a.shape
    n = b.shape[1]
    if a.dtype.char in "fd":
        if 2 <= m <= 3 and k * n >= SKINNY_OPERAND:
            for i in range(m):
                np.matmul(a[i], b, out=out[i])
            return out
        if 2 <= n <= 3 and m * k >= SKINNY_OPERAND:
            for j in range(n):
                np.matmul(a, b[:, j], out=out[:, j])
            return out
    return np.matmul(a, b, out=out)


def product_pieces(m: int, k: int, n: int) -> list[tuple[str, int, int]]:
    """How :meth:`CPUBackend.product` cuts an ``(m, k) @ (k, n)`` product: ``(axis, start,
    stop)`` pieces, ``axis`` "rows" of the output or "cols"; one piece when it is small.

    One piece per :data:`PRODUCT_SPLIT` multiply-adds, at most :data:`PRODUCT_PIECES`, of
    whole multiples of 16 (BLAS's kernels work on such blocks); cut along the output's longer
    side."""
    count = min(PRODUCT_PIECES, m * k * n // PRODUCT_SPLIT)
    side = m if m >= n else n
    if count < 2 or side < 32:
        return [("rows", 0, m)]
    width = -(-side // count)
    width = -(-width // 16) * 16
    axis = "rows" if m >= n else "cols"
    return [(axis, start, min(side, start + width)) for start in range(0, side, width)]


#: the shortest part (nanoseconds of one core) :meth:`CPUBackend.batch` cuts a batch into
#: for the threads: 0.1 ms, against a few microseconds a part costs
BATCH_PART_NS = 100_000


#: the backend of a context created outside a plan
DEFAULT = CPUBackend()

