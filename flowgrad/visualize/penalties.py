"""Penalties on the image: priors that keep an optimized input looking like an input.

Each takes a batch ``(N, C, H, W)`` and returns one value per image (a mean over its pixels,
so weights do not depend on the image size) and the gradient of the sum of those values.

* ``l1``   mean |x - center|      (sparse: few bright pixels)
* ``l2``   mean (x - center)^2    (small: no saturated regions)
* ``tv``   mean of squared differences between neighbours (smooth)
* ``blur`` mean (x - B x)^2, with B a 3×3 binomial blur (penalises what blurring removes)
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from ..errors import FlowgradError, did_you_mean

Penalty = Callable[[np.ndarray, float], tuple[np.ndarray, np.ndarray]]


def l1(x, center=0.0):
    d = x - center
    size = x[0].size
    return np.abs(d).reshape(len(x), -1).sum(axis=1) / size, np.sign(d) / size


def l2(x, center=0.0):
    d = x - center
    size = x[0].size
    return (d * d).reshape(len(x), -1).sum(axis=1) / size, 2.0 * d / size


def tv(x, center=0.0):
    size = x[0].size
    dy = np.diff(x, axis=2)
    dx = np.diff(x, axis=3)
    values = ((dy * dy).reshape(len(x), -1).sum(axis=1)
              + (dx * dx).reshape(len(x), -1).sum(axis=1)) / size
    grad = np.zeros_like(x)
    grad[:, :, 1:, :] += 2 * dy
    grad[:, :, :-1, :] -= 2 * dy
    grad[:, :, :, 1:] += 2 * dx
    grad[:, :, :, :-1] -= 2 * dx
    return values, grad / size


def _blur(x: np.ndarray) -> np.ndarray:
    """3×3 binomial blur, zero padding; symmetric, so it is its own transpose."""
    k = np.array([0.25, 0.5, 0.25], dtype=x.dtype)
    p = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    rows = k[0] * p[:, :, :-2, :] + k[1] * p[:, :, 1:-1, :] + k[2] * p[:, :, 2:, :]
    return k[0] * rows[:, :, :, :-2] + k[1] * rows[:, :, :, 1:-1] + k[2] * rows[:, :, :, 2:]


def blur(x, center=0.0):
    size = x[0].size
    r = x - _blur(x)
    values = (r * r).reshape(len(x), -1).sum(axis=1) / size
    return values, 2.0 * (r - _blur(r)) / size


PENALTIES: dict[str, Penalty] = {"l1": l1, "l2": l2, "tv": tv, "blur": blur}


def apply_penalties(x: np.ndarray, weights: Mapping[str, float], center: float = 0.0
                    ) -> tuple[np.ndarray, np.ndarray | None]:
    """Weighted sum of penalties: per-image values and the gradient (None if no penalty)."""
    total = np.zeros(len(x), dtype=x.dtype)
    grad = None
    for name, weight in weights.items():
        if name not in PENALTIES:
            raise FlowgradError(f"unknown penalty '{name}'{did_you_mean(name, PENALTIES)} "
                                f"(penalties: {', '.join(PENALTIES)})")
        if not weight:
            continue
        values, g = PENALTIES[name](x, center)
        total = total + weight * values
        grad = weight * g if grad is None else grad + weight * g
    return total, grad


def parse_penalties(items) -> dict[str, float]:
    """``["l2=0.01", "tv=0.05"]`` -> ``{"l2": 0.01, "tv": 0.05}``."""
    out = {}
    for item in items or ():
        name, eq, value = item.partition("=")
        try:
            out[name.strip()] = float(value) if eq else 1.0
        except ValueError:
            raise FlowgradError(f"bad penalty '{item}'; write NAME=WEIGHT, e.g. l2=0.01") \
                from None
        if name.strip() not in PENALTIES:
            raise FlowgradError(f"unknown penalty '{name}'{did_you_mean(name, PENALTIES)} "
                                f"(penalties: {', '.join(PENALTIES)})")
    return out
