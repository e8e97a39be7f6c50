"""Batch-norm kernels over ``(N, C, S)`` views: statistics, the per-channel affine map, backward.

Why: numpy's batch norm makes a temporary for every step — the centred input, its square, the
normalised input, its scaled copy — each a full pass over memory.  Here the statistics are two
reads of the input with float64 sums (mean, then centred squares: no cancellation), the forward
map one read and one write, and the backward two reads of the gradient and the input, one write:
nothing but the output is allocated.  Backward recomputes ``xhat`` from the input it already
keeps instead of saving a normalised copy.

All loops run channel by channel in a fixed order, so results are the same bits on every run.
"""
from __future__ import annotations

import numpy as np

from ._jit import kernel

__all__ = ["bn_stats", "bn_apply", "bn_backward"]


def _bn_stats_reference(x, mean, var):
    """Per-channel mean and biased variance of ``x`` (N, C, S) into ``mean``, ``var`` (C,);
    zeros for channels with no values."""
    if x.shape[0] * x.shape[2] == 0:
        mean[...] = var[...] = 0.0
        return
    x64 = x.astype(np.float64)
    m = x64.mean(axis=(0, 2))
    mean[...] = m
    var[...] = np.square(x64 - m[None, :, None]).mean(axis=(0, 2))


@kernel(_bn_stats_reference)
def bn_stats(x, mean, var):
    n, channels, size = x.shape
    count = n * size
    for c in range(channels):
        total = 0.0
        for i in range(n):
            for s in range(size):
                total += x[i, c, s]
        m = total / max(count, 1)
        squares = 0.0
        for i in range(n):
            for s in range(size):
                d = x[i, c, s] - m
                squares += d * d
        mean[c] = m
        var[c] = squares / max(count, 1)


def _bn_apply_reference(x, a, shift, y):
    """``y = a * x + shift`` per channel of (N, C, S); ``y`` may be ``x`` itself."""
    np.multiply(x, a[None, :, None], out=y)
    np.add(y, shift[None, :, None], out=y)


@kernel(_bn_apply_reference)
def bn_apply(x, a, shift, y):
    n, channels, size = x.shape
    for i in range(n):
        for c in range(channels):
            ac, sc = a[c], shift[c]
            for s in range(size):
                y[i, c, s] = x[i, c, s] * ac + sc


def _bn_backward_reference(gy, x, mean, inv, scale, gx, gscale, gbias):
    """Gradients of training-mode batch norm, ``y = scale * (x - mean) * inv + bias``.

    ``gscale`` and ``gbias`` (C,) are written; ``gx`` (N, C, S) too unless it is empty:
    ``gx = scale * inv * (gy - mean(gy) - xhat * mean(gy * xhat))``.
    """
    g64 = gy.astype(np.float64)
    xhat = (x.astype(np.float64) - mean[None, :, None]) * inv[None, :, None]
    count = max(gy.shape[0] * gy.shape[2], 1)
    sum_g = g64.sum(axis=(0, 2))
    sum_gx = (g64 * xhat).sum(axis=(0, 2))
    gbias[...] = sum_g
    gscale[...] = sum_gx
    if gx.size:
        k = (scale * inv)[None, :, None]
        gx[...] = k * (g64 - (sum_g / count)[None, :, None]
                       - xhat * (sum_gx / count)[None, :, None])


@kernel(_bn_backward_reference)
def bn_backward(gy, x, mean, inv, scale, gx, gscale, gbias):
    n, channels, size = gy.shape
    count = max(n * size, 1)
    for c in range(channels):
        m, iv = mean[c], inv[c]
        sum_g = 0.0
        sum_gx = 0.0
        for i in range(n):
            for s in range(size):
                g = gy[i, c, s]
                sum_g += g
                sum_gx += g * ((x[i, c, s] - m) * iv)
        gbias[c] = sum_g
        gscale[c] = sum_gx
        if gx.size:
            k = scale[c] * iv
            mean_g = sum_g / count
            mean_gx = sum_gx / count
            for i in range(n):
                for s in range(size):
                    xhat = (x[i, c, s] - m) * iv
                    gx[i, c, s] = k * (gy[i, c, s] - mean_g - xhat * mean_gx)
