"""lucid's remaining objectives: ``direction_neuron``, ``channel_interpolate``, ``alignment``.

Activations are flowgrad's ``(N, C, *positions)`` (lucid's are NHWC: its ``[..., c]`` is our
axis 1).  Like every objective, each returns one value per image and the gradient of their sum;
the two batch-level ones (``per_image = False``) spread lucid's single batch value over the
images so that the values still sum to it.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import FlowgradError
from .objectives import Objective

#: lucid's ``_dot_cossim``: the epsilon of the norms and the floor of the cosine
COSSIM_EPS, COSSIM_FLOOR = 1e-4, 0.1


def _channel_mean(a: np.ndarray, c: int, ref: str) -> tuple[np.ndarray, int]:
    """Each image's mean of channel ``c`` (axis 1) and the number of values averaged."""
    if a.ndim < 2 or not -a.shape[1] <= c < a.shape[1]:
        raise FlowgradError(f"channel {c} is out of range for '{ref}' (shape {a.shape[1:]})")
    picked = a[:, c].reshape(len(a), -1)
    return picked.mean(axis=1), picked.shape[1]


class DirectionNeuron(Objective):
    """lucid's ``direction_neuron``: the activation vector (axis 1) at one position, dotted
    with ``vector``; the position defaults to the centre (``size // 2`` on every axis, lucid's
    choice).  ``cossim_pow > 0`` multiplies the dot product by ``max(0.1, cos) ** cossim_pow``,
    rewarding the direction more than the magnitude, exactly as lucid's ``_dot_cossim``."""

    def __init__(self, ref: str, vector: Sequence[float], *position: int,
                 cossim_pow: float = 0.0):
        self.refs = (ref,)
        self.v = np.asarray(vector, dtype=np.float64)
        if self.v.ndim != 1:
            raise FlowgradError("a direction is a list of numbers, one per channel")
        self.position = tuple(int(i) for i in position)
        self.cossim_pow = float(cossim_pow)

    def where(self, a: np.ndarray) -> tuple:
        """The index of the chosen position in ``a`` (every image, every channel)."""
        spatial = a.shape[2:]
        if a.ndim < 2 or a.shape[1] != len(self.v):
            raise FlowgradError(f"the direction has {len(self.v)} entries but "
                                f"'{self.refs[0]}' has shape {a.shape[1:]}")
        position = self.position or tuple(n // 2 for n in spatial)
        if len(position) != len(spatial) or not all(-n <= i < n
                                                    for i, n in zip(position, spatial)):
            raise FlowgradError(f"position {list(position)} does not fit the positions "
                                f"{list(spatial)} of '{self.refs[0]}'")
        return (slice(None), slice(None)) + position

    def __call__(self, acts):
        a = acts[self.refs[0]]
        at = self.where(a)
        x = a[at]                                                       # (N, C)
        v = self.v.astype(a.dtype)
        dot = x @ v
        grad_x = np.broadcast_to(v, x.shape).copy()
        if self.cossim_pow:
            p = self.cossim_pow
            norm_x = np.sqrt((x * x).sum(axis=1))
            denom = (COSSIM_EPS + norm_x) * (COSSIM_EPS + np.linalg.norm(v))
            cos = dot / denom
            floored = np.maximum(COSSIM_FLOOR, cos)
            # d cos / dx = v / denom - cos * x / (|x| (eps + |x|)); the floor has no slope
            safe = np.where(norm_x > 0, norm_x, 1.0)
            d_cos = v / denom[:, None] - (cos / (safe * (COSSIM_EPS + norm_x)))[:, None] * x
            slope = np.where(cos > COSSIM_FLOOR, p * floored ** (p - 1) * dot, 0.0)
            grad_x = grad_x * (floored ** p)[:, None] + slope[:, None] * d_cos
            dot = dot * floored ** p
        grad = np.zeros_like(a)
        grad[at] = grad_x
        return dot, {self.refs[0]: grad}

    def __repr__(self):
        where = f", {', '.join(map(str, self.position))}" if self.position else ""
        return f"direction_neuron({self.refs[0]}, ...{where})"


class ChannelInterpolate(Objective):
    """lucid's ``channel_interpolate``: across a batch of N, image ``n`` maximises
    ``(1 - n / (N - 1)) * channel(ref1, c1) + n / (N - 1) * channel(ref2, c2)`` — the first
    image the first channel, the last image the second, a blend between."""

    per_image = False

    def __init__(self, ref1: str, c1: int, ref2: str, c2: int):
        self.refs = tuple(dict.fromkeys((ref1, ref2)))
        self.pairs = ((ref1, int(c1)), (ref2, int(c2)))

    def __call__(self, acts):
        n = len(acts[self.refs[0]])
        w = np.arange(n) / max(n - 1, 1)
        values = 0.0
        grads = {ref: np.zeros_like(acts[ref]) for ref in self.refs}
        for (ref, c), weight in zip(self.pairs, (1.0 - w, w)):
            a = acts[ref]
            means, size = _channel_mean(a, c, ref)
            values = values + weight * means
            grads[ref][:, c] += (weight / size).astype(a.dtype).reshape(
                (n,) + (1,) * (a.ndim - 2))
        return values.astype(acts[self.refs[0]].dtype), grads

    def __repr__(self):
        (r1, c1), (r2, c2) = self.pairs
        return f"channel_interpolate({r1}, {c1}, {r2}, {c2})"


class Alignment(Objective):
    """lucid's ``alignment``: minus the mean squared distance between the activations of images
    ``d = 1..4`` apart in the batch, divided by ``decay_ratio ** d`` — neighbouring images of an
    interpolation draw analogous things in the same places.  Each pair's term is shared half
    and half by its two images."""

    per_image = False

    def __init__(self, ref: str, decay_ratio: float = 2.0):
        self.refs = (ref,)
        self.decay_ratio = float(decay_ratio)

    def __call__(self, acts):
        a = acts[self.refs[0]]
        n, size = len(a), a[0].size
        values = np.zeros(n, dtype=a.dtype)
        grad = np.zeros_like(a)
        for d in range(1, min(4, n - 1) + 1):
            diff = a[:-d] - a[d:]                                     # pairs (i, i + d)
            scale = 1.0 / self.decay_ratio ** d
            term = scale * (diff * diff).reshape(n - d, -1).sum(axis=1) / size
            values[:-d] -= term / 2
            values[d:] -= term / 2
            g = (2.0 * scale / size) * diff
            grad[:-d] -= g
            grad[d:] += g
        return values, {self.refs[0]: grad}

    def __repr__(self):
        return f"alignment({self.refs[0]})"
