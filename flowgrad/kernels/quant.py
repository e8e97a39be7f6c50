"""Quantization kernels: the uint8 quantization of a tensor (dynamic quantization's second
pass) and exact integer products of 8-bit operands.

Why: a dynamically quantized model (onnxruntime's ``quantize_dynamic``) quantizes every
activation before each integer product.  After its range (numpy's vectorised minimum and
maximum), numpy takes five passes for it — a division, a rounding, an addition, a clip, a
cast — each with its temporary; here it is one read and one byte written per element.  Its
matrix-vector products (a quantized LSTM's steps) are memory-bound in BLAS, which reads the
weight as 4-byte floats: :func:`int_matmul` reads its bytes.

The arithmetic is the ops' (:mod:`flowgrad.ops.quant`, onnxruntime's MLAS): the division in
float32, rounding half to even, then the zero point added and the result saturated to
[0, 255].  A NaN quantizes to 0 (what numpy's cast gives on x86, made explicit here).
Integer products are exact (integer accumulators; no float rounding to depend on order).
"""
from __future__ import annotations

import numpy as np

from ._jit import kernel

__all__ = ["quantize_u8", "int_matmul"]


def _quantize_u8_reference(x, scale, zero_point, out):
    with np.errstate(invalid="ignore"):
        v = np.clip(np.rint(x.astype(np.float32) / scale) + zero_point, 0, 255)
    out[...] = np.where(np.isnan(v), 0, v).astype(np.uint8)


@kernel(_quantize_u8_reference)
def quantize_u8(x, scale, zero_point, out):
    """out = saturate(round_half_even(x / scale) + zero_point) as uint8, over the flat float32
    ``x``; ``scale`` and ``zero_point`` are float32 scalars."""
    for i in range(x.size):
        v = np.rint(x[i] / scale) + zero_point
        v = np.float32(255) if v > 255 else v
        v = np.float32(0) if not v >= 0 else v           # (NaN included)
        out[i] = np.uint8(v)


# -- exact integer products ----------------------------------------------------------------------

def _int_matmul_reference(a, a_zp, bt, b_zp, out):
    out[...] = ((a.astype(np.int64) - a_zp) @ (bt.astype(np.int64) - b_zp[:, None]).T
                ).astype(np.int32)


@kernel(_int_matmul_reference)
def int_matmul(a, a_zp, bt, b_zp, out):
    """out = (a - a_zp) @ (bt - b_zp[:, None]).T, exact, as int32.

    Why: a quantized model's matrix-vector products (an LSTM step: one row of uint8 by a
    512 x 2048 int8 weight) are memory-bound; BLAS reads the weight as 4-byte floats, this
    reads its bytes.  ``a`` is (M, K) 8-bit, ``bt`` the weight transposed, (N, K) 8-bit, both
    C-contiguous; ``a_zp`` an int scalar, ``b_zp`` (N,) int32.  Each row of ``a`` is shifted
    once into int16 (|a - a_zp| <= 255), so the inner loop is a dot product of 16-bit by
    8-bit integers that the compiler vectorises (``vpmaddwd`` on x86); the weight's zero
    point comes out of the sum: ``sum (a' (b - zb)) = sum a' b - zb sum a'``.  Integer
    arithmetic, so the order does not matter; the int32 result is exact (wrapped partial
    values come back) while it fits int32: ``K * 255 * 255 < 2**31``, the caller's check.
    """
    M, K = a.shape
    N = bt.shape[0]
    rows = np.empty((M, K), np.int16)
    totals = np.zeros(M, np.int64)
    for m in range(M):
        for k in range(K):
            v = np.int16(np.int32(a[m, k]) - a_zp)
            rows[m, k] = v
            totals[m] += v
    for n in range(N):          # each weight row read once, for every row of a
        w = bt[n]
        for m in range(M):
            r = rows[m]
            s = np.int32(0)
            for k in range(K):
                s += np.int32(r[k]) * np.int32(w[k])
            out[m, n] = s
    # the zero point's term apart: folded into the store above, it stops the vectorisation
    for m in range(M):
        for n in range(N):
            out[m, n] -= b_zp[n] * totals[m]
