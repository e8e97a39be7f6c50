"""One pass over a block for a region of pointwise ops (the plan's fusion, :mod:`flowgrad.plan.pointwise`).

Why: run op by op, hard-swish's ``x * clip(x + 3, 0, 6) / 6`` is four numpy passes; at batch 1
a block is a few hundred kilobytes, so the passes, not the memory, cost.  :func:`run_region`
runs a small program (the plan translates the region into it) over each plane (a sample's
channel), chunk by chunk, every instruction over the chunk while it is in L1.  The
instructions are the ufuncs the ops call, on the same dtype, in the same order, so the values
are the unfused ones bit for bit; ``sigmoid`` and ``tanh`` call the very kernels the ops call.

A program is int64 rows ``(opcode, destination register, operand)``.  Operands are registers,
``x`` itself, two values of ``x``'s shape (``f0``, ``f1``) and per-plane scalars (a constant,
or an input of shape ``(1 or N, C, 1, ...)``: a per-channel scale, a bias, a squeeze-excite
gate).
"""
from __future__ import annotations

import numpy as np

from ._jit import jit, kernel
from .activations import sigmoid, tanh

__all__ = ["run_region"]

# opcodes: (op, dst register, operand)
LOAD_X, LOAD_R, LOAD_S, LOAD_F = 0, 1, 2, 3      # x / register / scalar column / full f0, f1
ADD_R, ADD_S, SUB_R, SUB_S, MUL_R, MUL_S, DIV_R, DIV_S = 4, 5, 6, 7, 8, 9, 10, 11
MAX_S, CLIP_S, SIGMOID, TANH = 12, 13, 14, 15    # CLIP_S: columns operand and operand + 1
#: elements of a plane processed per instruction (registers of this length stay in L1)
CHUNK = 512



@jit
def _max_scalar(row, length, s):
    """``row[:length] = np.maximum(row[:length], s)`` with numpy's bits, vectorised.

    numba's ``np.maximum`` is three selects, which vectorise (a ternary on ``v > s or v != v``
    branches: 4-5x slower on a ReLU region); it keeps a NaN ``v`` as numpy does, but returns
    ``v`` on a tie where numpy returns ``s``.  A tie has the same bits unless it is the two
    zeros: with ``s`` = +0 the ``-0`` it keeps is made ``+0`` by adding ``s``; with ``s`` = -0
    or NaN (never seen in a network) the exact branching loop runs.  (Max pooling's exact
    select, ``pool._max_nan``, vectorises only into another array: in place, as here, it took
    0.40 ms on 800k values against this loop's 0.07.)"""
    if s != 0 and s == s:
        for i in range(length):
            row[i] = np.maximum(row[i], s)
    elif s == 0 and not np.signbit(s):
        for i in range(length):
            row[i] = np.maximum(row[i], s) + s
    else:
        for i in range(length):
            v = row[i]
            row[i] = v if v > s or v != v else s


def _run_region_reference(code, scalars, x, f0, f1, out, registers, result) -> None:
    """:func:`run_region` in numpy: each instruction on whole ``(planes, length)`` arrays (sigmoid
    and tanh by their kernels, each compared with numpy by the kernel tests, so that the
    two agree bit for bit)."""
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
            (sigmoid if op == SIGMOID else tanh)(flat, flat)
    out[...] = regs[result]


@kernel(_run_region_reference)
def run_region(code, scalars, x, f0, f1, out, registers, result):
    """``out[p, :]`` = the program ``code`` on plane ``p`` of ``x`` (``(planes, length)``,
    C-contiguous; ``out`` may be ``x``), with per-plane scalars ``scalars[p, column]`` and up
    to two operands of ``x``'s shape ``f0``, ``f1``; ``registers`` scratch rows, the result in
    register ``result``."""
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
                    sigmoid(r, r)
                elif op == TANH:
                    tanh(r, r)
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
                            _max_scalar(row, run_length, s)
                        elif op == CLIP_S:  # np.clip, bit for bit (NaN and signed zeros)
                            hi = scalars[p0 + q, a + 1]
                            for i in range(run_length):
                                row[i] = min(max(row[i], s), hi)
            if result:
                src = regs[result]
                for i in range(m):
                    chunk[i] = src[i]

