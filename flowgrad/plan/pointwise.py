"""One pass for a fused region of pointwise ops: hard-swish, SiLU, an affine and a clip...

Why: a fused region (:mod:`.fusion`) still runs its ops one after the other, each a numpy
pass over the block — hard-swish's ``x * clip(x + 3, 0, 6) / 6`` is four passes, and at
batch 1 a PP-OCR block is a few hundred kilobytes, so the passes, not the memory, cost: 60-190
µs a region where one pass costs 20-40.  When every op of a region declares ``pointwise``
(:mod:`flowgrad.op`: its evaluation as a few scalar steps), the plan translates the region
into a small program (:func:`translate`) that the kernel
:func:`flowgrad.kernels.pointwise.run_region` runs in one pass: for each plane (a sample's
channel) and chunk of it, every instruction over the chunk while it is in L1.

The instructions are the ufuncs the ops call, on the same dtype, so the values are the
unfused ones (the same roundings in the same order; ``sigmoid`` and ``tanh`` call their very
kernels on each chunk).  Operands are in-region values (registers), values of
the block's shape (loaded into a register) and per-plane scalars: a constant, or an input of
shape ``(1 or N, C, 1, ...)`` (a per-channel scale, a bias, a squeeze-excite gate).

The runner is a kernel like any other (compiled with numba beside its numpy reference, which
``tests/test_kernels_pointwise.py`` compares it with); this module is the translation.
"""
from __future__ import annotations

import numpy as np

from ..kernels.pointwise import (ADD_R, ADD_S, CLIP_S, DIV_R, DIV_S, LOAD_F, LOAD_R,  # noqa: F401
                                 LOAD_S, LOAD_X, MAX_S, MUL_R, MUL_S, SIGMOID, SUB_R, SUB_S,
                                 TANH, run_region)

BINARY = {"add": (ADD_R, ADD_S), "sub": (SUB_R, SUB_S), "mul": (MUL_R, MUL_S),
          "div": (DIV_R, DIV_S)}
UNARY = {"sigmoid": SIGMOID, "tanh": TANH}
#: values of the block's shape a region may read (more: the region runs op by op)
MAX_FULL = 2


class Program:
    """A region translated: ``code`` (int64 rows ``(op, dst, operand)``), the number of
    registers, the register holding the result, ``columns`` (how each scalar column is
    filled: ``("c", constant)`` or ``("e", extra index)``) and ``fulls`` (extra indices of
    the values of the block's shape, loaded by ``LOAD_F``)."""

    __slots__ = ("code", "registers", "result", "columns", "fulls")

    def __init__(self, code, registers, result, columns, fulls):
        self.code = np.asarray(code, dtype=np.int64).reshape(-1, 3)
        self.registers, self.result, self.columns, self.fulls = registers, result, columns, fulls


def translate(consumers, kinds) -> Program | None:
    """The program of a region, or None if an op does not declare ``pointwise`` or reads
    more than :data:`MAX_FULL` values of the block's shape.

    ``consumers`` are ``(op, args)`` pairs as in :class:`~.fusion.Chain` (value 0 the
    producer's output, ``i + 1`` consumer ``i``'s, None the next extra input), ``kinds`` one
    entry per extra input in order: ``"full"`` (the block's shape) or ``"plane"`` (one value
    per plane, or a single one)."""
    last: dict[int, int] = {}
    for i, (_, args) in enumerate(consumers):
        for v in args:
            if v is not None:
                last[v] = i
    code, columns, fulls = [(LOAD_X, 0, 0)], [], []
    where, free, count = {0: 0}, [], 1
    extra = 0

    def register() -> int:
        nonlocal count
        if free:
            return free.pop()
        count += 1
        return count - 1

    def column(kind: str, value) -> int:
        columns.append((kind, value))
        return len(columns) - 1

    for i, (op, args) in enumerate(consumers):
        steps = op.pointwise()
        if steps is None:
            return None
        # each port: ("v", value) in a register, ("s", column), or ("f", full index)
        ports = []
        for v in args:
            if v is not None:
                ports.append(("v", v))
                continue
            if kinds[extra] == "full":
                if extra not in fulls:
                    if len(fulls) == MAX_FULL:
                        return None
                    fulls.append(extra)
                ports.append(("f", fulls.index(extra)))
            else:
                ports.append(("s", column("e", extra)))
            extra += 1
        first = ports[0]
        if first[0] == "v" and last[first[1]] == i and args.count(first[1]) == 1:
            dst = where[first[1]]                   # the running value overwrites it
        else:
            dst = register()
            code.append(_load(first, where, dst))
        temps = []
        for name, *operands in steps:
            if name in UNARY:
                code.append((UNARY[name], dst, 0))
                continue
            cols = []
            for operand in operands:
                if isinstance(operand, int) and ports[operand][0] == "v":
                    cols.append(("r", where[ports[operand][1]]))
                elif isinstance(operand, int) and ports[operand][0] == "f":
                    temp = register()
                    temps.append(temp)
                    code.append(_load(ports[operand], where, temp))
                    cols.append(("r", temp))
                elif isinstance(operand, int):
                    cols.append(("s", ports[operand][1]))
                else:
                    cols.append(("s", column("c", float(operand))))
            if name in BINARY:
                kind, at = cols[0]
                code.append((BINARY[name][kind == "s"], dst, at))
            elif name == "max" and cols[0][0] == "s":
                code.append((MAX_S, dst, cols[0][1]))
            elif name == "clip" and all(k == "s" for k, _ in cols):
                lo, hi = column("c", 0.0), column("c", 0.0)       # adjacent columns
                columns[lo], columns[hi] = columns[cols[0][1]], columns[cols[1][1]]
                code.append((CLIP_S, dst, lo))
            else:
                return None
        free.extend(temps)
        for v in set(a for a in args if a is not None):
            if last[v] == i and where[v] != dst:
                free.append(where[v])
        where[i + 1] = dst
    return Program(code, count, where[len(consumers)], columns, fulls)


def _load(port, where, dst=None) -> tuple[int, int, int]:
    kind, at = port
    if kind == "v":
        return (LOAD_R, dst, where[at])
    return (LOAD_F if kind == "f" else LOAD_S, dst, at)
