"""Recycling of activation buffers between the ops of a plan, and between its runs.

Why: a large fresh array is fresh memory — glibc hands multi-megabyte blocks back to the kernel
when they are freed, so the first write to each page of a new one is a page fault that zeroes
the page.  On ResNet-50 at batch 8 those first touches cost a sixth of the whole forward pass;
onnxruntime avoids them with an arena.  The plan knows when each activation is read for the
last time; an op that allocates its output through ``ctx.backend.empty`` (:mod:`flowgrad.backend`) gets a
buffer that an earlier op's activation no longer needs, already mapped and warm.

Backward does the same: the gradients an op consumed and the values it saved are given back
once its backward has run, and recycled for the gradients still to come and for the next
step's forward, so a training step, after the first, allocates only what it hands to the caller.
A run ends after the backward that follows a forward with gradient (or at the next forward if
none came), and then the pool trims itself to what the run asked for.

Safety comes from reference counts rather than from bookkeeping: a freed value is recycled only
if it is a writeable array that owns its memory and nothing else refers to it — no view of it
(a view holds its base), no other slot, no saved context, no caller.  Anything still visible is
left to the garbage collector as before.  The pool keeps, per buffer size, at most as many
buffers as one run asked for (:meth:`BufferPool.end_run`), so it never holds more than the
plan's own working set, and a change of batch size lets the old buffers go.
"""
from __future__ import annotations

import math
import sys
from collections import Counter, defaultdict

import numpy as np

#: Arrays smaller than this are left to numpy's own allocator: malloc reuses small blocks
#: without page faults, and pooling them would only add overhead.
MIN_BYTES = 1 << 16


class BufferPool:
    """Free activation buffers of one plan, keyed by size in bytes and dtype."""

    def __init__(self):
        self._free: dict[tuple[int, np.dtype], list[np.ndarray]] = defaultdict(list)
        self._asked: Counter = Counter()
        #: requests served from a recycled buffer, and requests that needed new memory
        self.reused = self.allocated = 0

    def empty(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        """An uninitialised array of ``shape`` and ``dtype``, recycled when one is free."""
        dtype = np.dtype(dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes < MIN_BYTES:
            return np.empty(shape, dtype=dtype)
        key = (nbytes, dtype)
        self._asked[key] += 1
        free = self._free.get(key)
        if free:
            self.reused += 1
            return free.pop().reshape(shape)     # a view: its base is the buffer kept
        self.allocated += 1
        return np.empty(shape, dtype=dtype)

    def release(self, vals: list, slot: int) -> None:
        """Clear ``vals[slot]`` and keep the memory under it if nothing else can see it.

        The value may be its buffer's owner or a view of it (a recycled buffer reshaped, an
        output cropped from a larger one); either way it is the owner that is kept.
        """
        value = vals[slot]
        vals[slot] = None
        if type(value) is not np.ndarray:
            return
        owner = value.base
        if owner is None:   # the references: ``value`` and getrefcount's argument
            if value.nbytes < MIN_BYTES:
                return
            free = sys.getrefcount(value) == 2
            owner = value
        else:               # ...and the view's own reference to its owner
            if type(owner) is not np.ndarray or owner.base is not None \
                    or owner.nbytes < MIN_BYTES:
                return
            free = sys.getrefcount(value) == 2 and sys.getrefcount(owner) == 3
        if free and owner.flags.c_contiguous and owner.flags.writeable:   # (size checked above)
            self._free[(owner.nbytes, owner.dtype)].append(owner)

    def recycle(self, array: np.ndarray) -> None:
        """Keep the memory under ``array``, which the caller got from :meth:`empty` and
        guarantees nothing reads any more (a fused region's scratch blocks)."""
        owner = array if array.base is None else array.base
        if (type(owner) is np.ndarray and owner.base is None and owner.nbytes >= MIN_BYTES
                and owner.flags.c_contiguous and owner.flags.writeable):
            self._free[(owner.nbytes, owner.dtype)].append(owner)

    def release_all(self, values: list) -> None:
        """:meth:`release` every array of ``values`` that could be pooled (what a finished
        backward saved), skipping cheaply what is too small to matter."""
        for i in range(len(values)):    # (enumerate's reused tuple would hold a reference)
            value = values[i]
            if type(value) is np.ndarray and (value.base is not None
                                              or value.nbytes >= MIN_BYTES):
                del value
                self.release(values, i)

    def end_run(self) -> None:
        """Keep, per size, no more buffers than this run asked for (the working set)."""
        for key in list(self._free):
            del self._free[key][self._asked[key]:]
            if not self._free[key]:
                del self._free[key]
        self._asked.clear()

    @property
    def nbytes(self) -> int:
        """Bytes held in free buffers."""
        return sum(key[0] * len(free) for key, free in self._free.items())
