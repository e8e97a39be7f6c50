"""One pass for a fused region of pointwise ops: hard-swish, SiLU, an affine and a clip...

Why: a fused region (:mod:`.fusion`) still runs its ops one after the other, each a numpy
pass over the block — hard-swish's ``x * clip(x + 3, 0, 6) / 6`` is four passes, and at
batch 1 a PP-OCR block is a few hundred kilobytes, so the passes, not the memory, cost: 60-190
µs a region where one pass costs 20-40.  When every op of a region declares ``pointwise``
(:mod:`flowgrad.op`: its evaluation as a few scalar steps), the plan translates the region
into a small program and :func:`run` runs it in one pass: for each plane (a sample's channel)
and chunk of it, every instruction over the chunk while it is in L1.

The instructions are the ufuncs the ops call, on the same dtype, so the values are the
unfused ones (the same roundings in the same order; ``sigmoid`` and ``tanh`` call their very
kernels on each chunk).  Operands are in-region values (registers), values of
the block's shape (loaded into a register) and per-plane scalars: a constant, or an input of
shape ``(1 or N, C, 1, ...)`` (a per-channel scale, a bias, a squeeze-excite gate).

:func:`run` is compiled with numba beside :func:`run_reference`, its numpy form (the tests
compare the two; ``FLOWGRAD_KERNELS=numpy`` runs the reference).
"""
from __future__ import annotations

import numpy as np

from ..kernels._jit import MODE, jit

# opcodes: (op, dst register, operand)
LOAD_X, LOAD_R, LOAD_S, LOAD_F = 0, 1, 2, 3      # x / register / scalar column / full f0, f1
ADD_R, ADD_S, SUB_R, SUB_S, MUL_R, MUL_S, DIV_R, DIV_S = 4, 5, 6, 7, 8, 9, 10, 11
MAX_S, CLIP_S, SIGMOID, TANH = 12, 13, 14, 15    # CLIP_S: columns operand and operand + 1
BINARY = {"add": (ADD_R, ADD_S), "sub": (SUB_R, SUB_S), "mul": (MUL_R, MUL_S),
          "div": (DIV_R, DIV_S)}
UNARY = {"sigmoid": SIGMOID, "tanh": TANH}
#: values of the block's shape a region may read (more: the region runs op by op)
MAX_FULL = 2
#: elements of a plane processed per instruction (registers of this length stay in L1)
CHUNK = 512


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


def run_reference(code, scalars, x, f0, f1, out, registers, result) -> None:
    """:func:`run` in numpy: each instruction on whole ``(planes, length)`` arrays (sigmoid
    and tanh by their kernels, each compared with numpy by the kernel tests, so that the
    two agree bit for bit)."""
    from .. import kernels
    regs = [None] * registers
    for op, dst, a in code:
        r = regs[dst]
        if op == LOAD_X:
            regs[dst] = x.copy()
        elif op == LOAD_R:
            regs[dst] = regs[a].copy()
        elif op == LOAD_S:
            regs[dst] = np.repeat(scalars[:, a:a + 1], x.shape[1], axis=1)
        elif op == LOAD_F:
            regs[dst] = (f0 if a == 0 else f1).copy()
        elif op in (ADD_R, SUB_R, MUL_R, DIV_R, ADD_S, SUB_S, MUL_S, DIV_S):
            b = regs[a] if op in (ADD_R, SUB_R, MUL_R, DIV_R) else scalars[:, a:a + 1]
            ufunc = {ADD_R: np.add, ADD_S: np.add, SUB_R: np.subtract, SUB_S: np.subtract,
                     MUL_R: np.multiply, MUL_S: np.multiply, DIV_R: np.true_divide,
                     DIV_S: np.true_divide}[op]
            ufunc(r, b, out=r)
        elif op == MAX_S:
            np.maximum(r, scalars[:, a:a + 1], out=r)
        elif op == CLIP_S:
            np.clip(r, scalars[:, a:a + 1], scalars[:, a + 1:a + 2], out=r)
        elif op in (SIGMOID, TANH):
            flat = r.reshape(-1)
            (kernels.sigmoid if op == SIGMOID else kernels.tanh)(flat, flat)
    out[...] = regs[result]


def _run_source(code, scalars, x, f0, f1, out, registers, result):
    planes, length = x.shape
    # a chunk: a piece of one plane, or several whole planes when planes are short (the
    # instructions' dispatch is then paid once for all of them)
    group = max(1, CHUNK // length) if length < CHUNK else 1
    width = length * group if length < CHUNK else CHUNK
    regs = np.empty((registers, width), x.dtype)
    xf, of, f0f, f1f = x.reshape(-1), out.reshape(-1), f0.reshape(-1), f1.reshape(-1)
    same = x.ctypes.data == out.ctypes.data
    for p0 in range(0, planes, group):
        planes_here = min(group, planes - p0)
        for start in range(0, length, width):
            m = min(width, length - start) if group == 1 else planes_here * length
            run_length = m if group == 1 else length        # elements per plane here
            base = p0 * length + start
            # register 0 is the output's own chunk: x is read into it (nothing to do when
            # writing in place) and a result left there needs no store
            chunk = of[base:base + m]           # (slices: indices known >= 0 vectorise)
            for k in range(code.shape[0]):
                op, dst, a = code[k, 0], code[k, 1], code[k, 2]
                r = regs[dst, :m] if dst else chunk
                if op == LOAD_X:
                    if not same:
                        src = xf[base:base + m]
                        for i in range(m):
                            r[i] = src[i]
                elif op == LOAD_R:
                    src = regs[a, :m] if a else chunk
                    for i in range(m):
                        r[i] = src[i]
                elif op == LOAD_F:
                    src = f0f[base:base + m] if a == 0 else f1f[base:base + m]
                    for i in range(m):
                        r[i] = src[i]
                elif op == ADD_R:
                    b = regs[a, :m] if a else chunk
                    for i in range(m):
                        r[i] = r[i] + b[i]
                elif op == SUB_R:
                    b = regs[a, :m] if a else chunk
                    for i in range(m):
                        r[i] = r[i] - b[i]
                elif op == MUL_R:
                    b = regs[a, :m] if a else chunk
                    for i in range(m):
                        r[i] = r[i] * b[i]
                elif op == DIV_R:
                    b = regs[a, :m] if a else chunk
                    for i in range(m):
                        r[i] = np.divide(r[i], b[i])
                elif op == SIGMOID:         # the sigmoid and tanh kernels themselves
                    _sigmoid_kernel(r, r)
                elif op == TANH:
                    _tanh_kernel(r, r)
                elif run_length == 1:       # one value a plane (squeeze-excite's N, C, 1, 1)
                    col = scalars[p0:p0 + planes_here, a]
                    if op == LOAD_S:
                        for q in range(planes_here):
                            r[q] = col[q]
                    elif op == ADD_S:
                        for q in range(planes_here):
                            r[q] = r[q] + col[q]
                    elif op == SUB_S:
                        for q in range(planes_here):
                            r[q] = r[q] - col[q]
                    elif op == MUL_S:
                        for q in range(planes_here):
                            r[q] = r[q] * col[q]
                    elif op == DIV_S:
                        for q in range(planes_here):
                            r[q] = np.divide(r[q], col[q])
                    elif op == MAX_S:
                        for q in range(planes_here):
                            v = r[q]
                            r[q] = v if v > col[q] or v != v else col[q]
                    elif op == CLIP_S:
                        top = scalars[p0:p0 + planes_here, a + 1]
                        for q in range(planes_here):
                            r[q] = min(max(r[q], col[q]), top[q])
                else:                       # per-plane scalars: plane by plane
                    for q in range(planes_here):
                        s = scalars[p0 + q, a]
                        row = r[q * run_length:(q + 1) * run_length]
                        if op == LOAD_S:
                            for i in range(run_length):
                                row[i] = s
                        elif op == ADD_S:
                            for i in range(run_length):
                                row[i] = row[i] + s
                        elif op == SUB_S:
                            for i in range(run_length):
                                row[i] = row[i] - s
                        elif op == MUL_S:
                            for i in range(run_length):
                                row[i] = row[i] * s
                        elif op == DIV_S:
                            for i in range(run_length):
                                row[i] = np.divide(row[i], s)
                        elif op == MAX_S:   # np.maximum: NaN kept, max(-0, 0) = 0
                            for i in range(run_length):
                                v = row[i]
                                row[i] = v if v > s or v != v else s
                        elif op == CLIP_S:  # np.clip, bit for bit (NaN and signed zeros)
                            hi = scalars[p0 + q, a + 1]
                            for i in range(run_length):
                                row[i] = min(max(row[i], s), hi)
            if result:
                src = regs[result]
                for i in range(m):
                    chunk[i] = src[i]


if MODE == "numba":
    from ..kernels.activations import sigmoid as _sigmoid_kernel, tanh as _tanh_kernel
    run = jit(_run_source)
else:
    run = run_reference
run.__doc__ = """``out[p, :]`` = the program ``code`` on plane ``p`` of ``x`` (``(planes, length)``,
C-contiguous; ``out`` may be ``x``), with per-plane scalars ``scalars[p, column]`` and up to
two operands of ``x``'s shape ``f0``, ``f1``; ``registers`` scratch rows, the result in
register ``result``."""
