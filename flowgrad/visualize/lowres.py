"""Low-resolution parameterizations: the parameters are a smaller image, bilinearly upsampled.

lucid's ``lowres_tensor`` and ``laplacian_pyramid``: a parameter at a quarter of the size can
only describe coarse structure, so the optimizer paints broad shapes first; summing several
such tensors at halving resolutions (a Laplacian pyramid) lets every scale move at a
comparable speed, an alternative to the Fourier 1/f preconditioning.

Bilinear upsampling is linear and separable: ``x = U_h p U_w^T`` per channel with two small
interpolation matrices, so its exact adjoint (the backward) is ``U_h^T g U_w`` — no loops over
pixels.  The sampling uses half-pixel centres (``align_corners=False``, as PyTorch and TF2's
``resize``): lucid's TF1 ``resize_bilinear`` used the older asymmetric mapping, which shifts
the image by up to half a low-resolution pixel (lucid's ``offset`` argument corrected that).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

Backward = Callable[[np.ndarray], np.ndarray]


def upsample_matrix(out_size: int, in_size: int) -> np.ndarray:
    """The ``(out_size, in_size)`` matrix of 1-d bilinear interpolation with half-pixel centres:
    output pixel ``i`` samples the input at ``(i + 0.5) * in / out - 0.5``, clamped to the edge
    pixels; each row holds at most two weights summing to 1."""
    src = (np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5
    src = np.clip(src, 0.0, in_size - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = src - lo
    m = np.zeros((out_size, in_size))
    rows = np.arange(out_size)
    np.add.at(m, (rows, lo), 1.0 - frac)
    np.add.at(m, (rows, hi), frac)
    return m


class LowRes:
    """lucid's ``lowres_tensor``: parameters of shape ``(C, ceil(H / factor), ceil(W / factor))``
    upsampled bilinearly to ``(C, H, W)`` (start: Gaussian noise of deviation ``sd``)."""

    def __init__(self, shape: tuple[int, int, int], factor: int = 4, sd: float = 0.01):
        c, h, w = shape
        self.shape = shape
        self.sd = sd
        self.low = (c, -(-h // factor), -(-w // factor))
        self.rows = upsample_matrix(h, self.low[1])        # (H, h)
        self.cols = upsample_matrix(w, self.low[2]).T      # (w, W)

    def init(self, rng: np.random.Generator) -> np.ndarray:
        return rng.normal(0.0, self.sd, self.low)

    def forward(self, p: np.ndarray) -> tuple[np.ndarray, Backward]:
        rows, cols = self.rows.astype(p.dtype), self.cols.astype(p.dtype)
        x = rows @ p @ cols
        return x, lambda g: rows.T @ g @ cols.T


class LaplacianPyramid:
    """lucid's ``laplacian_pyramid``: the sum of ``levels`` :class:`LowRes` tensors at factors
    1, 2, 4, …; the parameters are their values, concatenated into one vector per image."""

    def __init__(self, shape: tuple[int, int, int], levels: int = 4, sd: float = 0.01):
        self.shape = shape
        self.sd = sd
        self.levels = [LowRes(shape, factor=2 ** k, sd=sd) for k in range(levels)]
        sizes = [int(np.prod(level.low)) for level in self.levels]
        self.bounds = np.cumsum([0] + sizes)

    def init(self, rng: np.random.Generator) -> np.ndarray:
        return rng.normal(0.0, self.sd, int(self.bounds[-1]))

    def forward(self, p: np.ndarray) -> tuple[np.ndarray, Backward]:
        lead = p.shape[:-1]
        x, backs = 0.0, []
        for level, a, b in zip(self.levels, self.bounds[:-1], self.bounds[1:]):
            y, back = level.forward(p[..., a:b].reshape(lead + level.low))
            x = x + y
            backs.append(back)

        def backward(g: np.ndarray) -> np.ndarray:
            return np.concatenate([back(g).reshape(lead + (-1,)) for back in backs], axis=-1)

        return x, backward
