"""Row kernels: softmax, log-softmax and layer norm over the last axis of a (rows, n) array.

Why: in numpy each of these is five to eight passes over the whole tensor (a max, a subtract,
an exp, a sum, a divide, each with its temporary).  Here a row is read, reduced and written
while it sits in cache: two or three short passes over the row, one pass over memory.

Sums are deterministic: each runs over four interleaved float64 partial sums, added in a fixed
order at the end (``_sum`` / ``_dot``), which LLVM keeps as written (no fastmath) yet still
executes several adds at a time.  Per-row terms are first written to a float64 scratch row in a
loop that vectorises, then summed.  Kernels take C-contiguous 2-d arrays; ``out`` may be ``x``
itself (each row is fully read before it is written).

Divisions are ``np.divide`` (IEEE, no zero check: see :mod:`.activations`).  The exponential
is :mod:`.activations`' vectorisable ``_exp``, in its cheaper float32 form for float32 rows.
numba's disk cache keys a kernel on its own source file only: after editing the helpers there,
clear :func:`flowgrad.kernels.cache_dir` so that these kernels are recompiled with them.
"""
from __future__ import annotations

import numpy as np

from ._jit import jit, kernel
from .activations import _exp, _exp_neg

__all__ = ["softmax", "softmax_backward", "log_softmax", "log_softmax_backward", "layer_norm",
           "layer_norm_backward"]


@jit
def _sum(v):
    """Σ v over four interleaved partial sums, in float64, in a fixed order."""
    n = v.size
    s0 = s1 = s2 = s3 = 0.0
    m = n - n % 4
    for i in range(0, m, 4):
        s0 += np.float64(v[i])
        s1 += np.float64(v[i + 1])
        s2 += np.float64(v[i + 2])
        s3 += np.float64(v[i + 3])
    for i in range(m, n):
        s0 += np.float64(v[i])
    return (s0 + s1) + (s2 + s3)


@jit
def _dot(a, b):
    """Σ a·b like :func:`_sum`."""
    n = a.size
    s0 = s1 = s2 = s3 = 0.0
    m = n - n % 4
    for i in range(0, m, 4):
        s0 += np.float64(a[i]) * b[i]
        s1 += np.float64(a[i + 1]) * b[i + 1]
        s2 += np.float64(a[i + 2]) * b[i + 2]
        s3 += np.float64(a[i + 3]) * b[i + 3]
    for i in range(m, n):
        s0 += np.float64(a[i]) * b[i]
    return (s0 + s1) + (s2 + s3)


@jit
def _max(v):
    """max(v), -inf for an empty row; a nan in the row shows later, through exp(nan)."""
    m0 = m1 = m2 = m3 = -np.inf
    n = v.size
    m = n - n % 4
    for i in range(0, m, 4):
        m0 = v[i] if v[i] > m0 else m0
        m1 = v[i + 1] if v[i + 1] > m1 else m1
        m2 = v[i + 2] if v[i + 2] > m2 else m2
        m3 = v[i + 3] if v[i + 3] > m3 else m3
    for i in range(m, n):
        m0 = v[i] if v[i] > m0 else m0
    m0 = m1 if m1 > m0 else m0
    m2 = m3 if m3 > m2 else m2
    return m2 if m2 > m0 else m0


# -- softmax --------------------------------------------------------------------------------

def _softmax_reference(x, out):
    x = x.astype(np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True, initial=-np.inf))
    out[...] = e / e.sum(axis=-1, keepdims=True)


@kernel(_softmax_reference)
def softmax(x, out):
    """out = e^(x - max) / Σ e^(x - max) along each row."""
    rows, n = x.shape
    e = np.empty(n)
    for r in range(rows):
        xr = x[r]
        m = np.float64(_max(xr))
        if x.itemsize == 4:                  # float32 results: the cheaper exponential
            for j in range(n):
                e[j] = _exp_neg(xr[j] - m, True)
        else:
            for j in range(n):
                e[j] = _exp_neg(xr[j] - m, False)
        inv = np.divide(1.0, _sum(e))
        o = out[r]
        for j in range(n):
            o[j] = e[j] * inv


def _softmax_backward_reference(y, gy, out):
    y = y.astype(np.float64)
    gx = gy * y
    out[...] = gx - y * gx.sum(axis=-1, keepdims=True)


@kernel(_softmax_backward_reference)
def softmax_backward(y, gy, out):
    """out = y·gy − y·Σ(y·gy) along each row (the softmax Jacobian applied to gy)."""
    rows, n = y.shape
    for r in range(rows):
        yr, gr, o = y[r], gy[r], out[r]
        d = _dot(yr, gr)
        for j in range(n):
            v = np.float64(yr[j])
            o[j] = v * gr[j] - v * d


def _log_softmax_reference(x, out):
    x = x.astype(np.float64)
    shifted = x - x.max(axis=-1, keepdims=True, initial=-np.inf)
    out[...] = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


@kernel(_log_softmax_reference)
def log_softmax(x, out):
    """out = x − max − log Σ e^(x − max) along each row."""
    rows, n = x.shape
    e = np.empty(n)
    for r in range(rows):
        xr = x[r]
        m = np.float64(_max(xr))
        if x.itemsize == 4:
            for j in range(n):
                e[j] = _exp_neg(xr[j] - m, True)
        else:
            for j in range(n):
                e[j] = _exp_neg(xr[j] - m, False)
        shift = m + np.log(_sum(e))
        o = out[r]
        for j in range(n):
            o[j] = xr[j] - shift


def _log_softmax_backward_reference(y, gy, out):
    gy = gy.astype(np.float64)
    out[...] = gy - np.exp(y.astype(np.float64)) * gy.sum(axis=-1, keepdims=True)


@kernel(_log_softmax_backward_reference)
def log_softmax_backward(y, gy, out):
    """out = gy − e^y·Σ gy along each row."""
    rows, n = y.shape
    for r in range(rows):
        yr, gr, o = y[r], gy[r], out[r]
        s = _sum(gr)
        if y.itemsize == 4:
            for j in range(n):
                o[j] = gr[j] - _exp(np.float64(yr[j]), True) * s
        else:
            for j in range(n):
                o[j] = gr[j] - _exp(yr[j], False) * s


# -- layer norm -----------------------------------------------------------------------------

def _layer_norm_reference(x, scale, bias, epsilon, out, mean, inv):
    x = x.astype(np.float64)
    mean[:] = x.mean(axis=-1)
    centered = x - mean[:, None]
    inv[:] = 1.0 / np.sqrt(np.mean(centered * centered, axis=-1) + epsilon)
    out[...] = centered * inv[:, None] * scale + bias


@kernel(_layer_norm_reference)
def layer_norm(x, scale, bias, epsilon, out, mean, inv):
    """out = (x − mean)·inv·scale + bias per row, inv = 1/√(var + epsilon) (biased variance,
    from the centred values: no cancellation); saves each row's mean and inv for backward."""
    rows, n = x.shape
    c = np.empty(n)
    for r in range(rows):
        xr = x[r]
        mu = np.divide(_sum(xr), n)
        for j in range(n):
            c[j] = xr[j] - mu
        iv = np.divide(1.0, np.sqrt(np.divide(_dot(c, c), n) + epsilon))
        mean[r] = mu
        inv[r] = iv
        o = out[r]
        for j in range(n):
            o[j] = c[j] * iv * scale[j] + bias[j]


def _layer_norm_backward_reference(x, mean, inv, scale, gy, gx, gscale, gbias):
    xhat = (x - mean[:, None]) * inv[:, None]
    g = gy * scale.astype(np.float64)
    n = x.shape[1]
    a = g.sum(axis=-1, keepdims=True) / n
    b = (g * xhat).sum(axis=-1, keepdims=True) / n
    gx[...] = inv[:, None] * (g - a - xhat * b)
    gscale[:] = (gy * xhat).sum(axis=0)
    gbias[:] = gy.sum(axis=0, dtype=np.float64)


@kernel(_layer_norm_backward_reference)
def layer_norm_backward(x, mean, inv, scale, gy, gx, gscale, gbias):
    """gx = inv·(g − mean(g) − x̂·mean(g·x̂)) with g = gy·scale, x̂ recomputed from the saved
    mean and inv; gscale = Σ_rows gy·x̂ and gbias = Σ_rows gy (float64, rows in order)."""
    rows, n = x.shape
    xh = np.empty(n)
    g = np.empty(n)
    for j in range(n):
        gscale[j] = 0.0
        gbias[j] = 0.0
    for r in range(rows):
        xr, gr, o = x[r], gy[r], gx[r]
        mu, iv = mean[r], inv[r]
        for j in range(n):
            xh[j] = (xr[j] - mu) * iv
            g[j] = np.float64(gr[j]) * scale[j]
        a = np.divide(_sum(g), n)
        b = np.divide(_dot(g, xh), n)
        for j in range(n):
            o[j] = iv * (g[j] - a - xh[j] * b)
            gscale[j] += gr[j] * xh[j]
            gbias[j] += gr[j]
