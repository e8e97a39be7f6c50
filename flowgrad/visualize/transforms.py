"""Robustness transforms: pad, jitter, scale, rotate — random, seeded and differentiable.

Applying small random geometric changes every step stops the optimizer from exploiting
pixel-exact patterns the network would never see twice (Mordvintsev et al., "Inceptionism";
Olah et al., "Feature Visualization").  All four are folded into one affine resampling per
image: the image sits on a canvas padded by ``pad`` pixels of ``pad_value`` (and that value
continues beyond), the canvas is scaled by a random factor, rotated by a random angle, shifted
by up to ``jitter`` pixels and sampled bilinearly back at the input's size.  One resampling
blurs less than four, and its gradient is exact: the transpose of the sampling weights,
accumulated with ``np.bincount``.

Each image draws its random numbers from its own generator, so an image's sequence of
transforms does not depend on which other images share its batch.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import FlowgradError, did_you_mean


@dataclass
class Transforms:
    """Settings: ``pad`` (pixels), ``jitter`` (max shift in pixels), ``scales`` (range of
    zoom factors), ``angle`` (max rotation in degrees), ``pad_value`` (seen outside the image)."""

    pad: int = 0
    jitter: float = 0.0
    scales: tuple[float, float] = (1.0, 1.0)
    angle: float = 0.0
    pad_value: float = 0.0

    @property
    def identity(self) -> bool:
        return (not self.pad and not self.jitter and tuple(self.scales) == (1.0, 1.0)
                and not self.angle)

    def draw(self, rng: np.random.Generator) -> tuple[float, float, float, float]:
        """One image's random parameters: (scale, angle in radians, shift y, shift x)."""
        s = rng.uniform(*self.scales) if self.scales[0] != self.scales[1] else self.scales[0]
        a = np.deg2rad(rng.uniform(-self.angle, self.angle)) if self.angle else 0.0
        if self.jitter:
            dy, dx = rng.integers(-int(self.jitter), int(self.jitter) + 1, size=2)
        else:
            dy = dx = 0
        return float(s), float(a), float(dy), float(dx)

    def apply(self, x: np.ndarray, rngs: Sequence[np.random.Generator]
              ) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
        """Transform a batch ``(N, C, H, W)``; image ``i`` draws from ``rngs[i]``."""
        if self.identity:
            return x, lambda g: g
        n, c, h, w = x.shape
        params = [self.draw(rng) for rng in rngs]
        ys, xs = _source_coords(params, h, w, self.pad)
        return _bilinear(x, ys, xs, self.pad_value)


    def merged(self, other: "Transforms") -> "Transforms":
        """These settings overridden by those ``other`` sets (differing from the defaults)."""
        default = Transforms()
        return replace(self, **{f.name: getattr(other, f.name) for f in fields(self)
                                if getattr(other, f.name) != getattr(default, f.name)})


class Chain:
    """Several transforms applied in order (the folded affine one, then plugins' steps)."""

    def __init__(self, steps: Sequence):
        self.steps = list(steps)

    @property
    def identity(self) -> bool:
        return all(getattr(s, "identity", False) for s in self.steps)

    def apply(self, x: np.ndarray, rngs: Sequence[np.random.Generator]):
        backs = []
        for step in self.steps:
            x, back = step.apply(x, rngs)
            backs.append(back)

        def backward(g: np.ndarray) -> np.ndarray:
            for back in reversed(backs):
                g = back(g)
            return g
        return x, backward


def _scales(value: str) -> Transforms:
    lo, _, hi = value.partition(":")
    return Transforms(scales=(float(lo), float(hi or lo)))


#: the built-in transform settings, registered by :mod:`flowgrad.builtins` like a plugin's:
#: each makes a one-setting affine transform, and neighbouring ones fold into one resampling
BUILTIN_TRANSFORMS: dict[str, Callable[[str], Transforms]] = {
    "pad": lambda v: Transforms(pad=int(v)),
    "jitter": lambda v: Transforms(jitter=float(v)),
    "scale": _scales,
    "rotate": lambda v: Transforms(angle=float(v)),
    "value": lambda v: Transforms(pad_value=float(v)),
}


def parse_transforms(spec: str | None, size: int, registry: Any = None) -> Transforms | Chain:
    """``"default"`` (pad, jitter, scale and rotation scaled to the image ``size``), ``"none"``,
    or comma-separated ``name=value`` items: the built-in ``pad=2,jitter=1,scale=0.9:1.1,
    rotate=10,value=0`` (folded into one affine resampling) and any transform a plugin
    registered (``flowgrad_register_transforms``), applied in the order written."""
    if spec in (None, "none", ""):
        return Transforms()
    if spec == "default":
        pad = max(1, size // 8)
        return Transforms(pad=pad, jitter=max(1, size // 16), scales=(0.9, 1.1), angle=10.0)
    if registry is None:
        from ..plugins import default_registry
        registry = default_registry()
    known = registry.table("transform")
    steps: list = []
    for item in spec.split(","):
        key, _, value = item.partition("=")
        key = key.strip()
        if key not in known:
            raise FlowgradError(f"unknown transform '{key}'{did_you_mean(key, known)} "
                                f"(transforms: {', '.join(known)})")
        try:
            step = known[key](value.strip())
        except ValueError:
            raise FlowgradError(f"bad transform setting '{item}'; write e.g. "
                                "'pad=2,jitter=1,scale=0.9:1.1,rotate=10'") from None
        if steps and isinstance(step, Transforms) and isinstance(steps[-1], Transforms):
            steps[-1] = steps[-1].merged(step)
        else:
            steps.append(step)
    return steps[0] if len(steps) == 1 else Chain(steps)


def _source_coords(params, h: int, w: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """For every image and output pixel, the (y, x) position it samples in the image.

    The output window covers the padded canvas (``h + 2 pad`` pixels tall) at scale 1; a
    1-pixel-tall input (a 1-d signal) is only shifted and scaled along x.
    """
    oy, ox = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64),
                         indexing="ij")
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    ky = (h + 2 * pad) / h if h > 1 else 1.0
    kx = (w + 2 * pad) / w
    ys, xs = [], []
    for s, a, dy, dx in params:
        if h == 1:
            a, dy = 0.0, 0.0
        cos, sin = np.cos(a), np.sin(a)
        u, v = (oy - cy) * ky / s, (ox - cx) * kx / s
        if h == 1:
            u = np.zeros_like(u)
        ys.append(cy + cos * u - sin * v + dy)
        xs.append(cx + sin * u + cos * v + dx)
    return np.stack(ys), np.stack(xs)


def _bilinear(x: np.ndarray, ys: np.ndarray, xs: np.ndarray, fill: float):
    """Sample ``x`` (N, C, H, W) at per-image positions ``ys, xs`` (N, H, W); ``fill`` outside."""
    n, c, h, w = x.shape
    y0, x0 = np.floor(ys), np.floor(xs)
    wy, wx = ys - y0, xs - x0
    y0, x0 = y0.astype(np.int64), x0.astype(np.int64)
    idx, wts = [], []
    for dy, dx, weight in ((0, 0, (1 - wy) * (1 - wx)), (0, 1, (1 - wy) * wx),
                           (1, 0, wy * (1 - wx)), (1, 1, wy * wx)):
        yy, xx = y0 + dy, x0 + dx
        valid = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        idx.append(np.where(valid, yy * w + xx, 0).reshape(n, 1, -1))
        wts.append(np.where(valid, weight, 0.0).reshape(n, 1, -1).astype(x.dtype))
    flat = x.reshape(n, c, h * w) - x.dtype.type(fill)
    out = sum(np.take_along_axis(flat, i, axis=2) * wt for i, wt in zip(idx, wts))
    out = (out + x.dtype.type(fill)).reshape(n, c, h, w)
    base = (np.arange(n * c).reshape(n, c, 1) * (h * w))

    def backward(g: np.ndarray) -> np.ndarray:
        g = g.reshape(n, c, h * w)
        total = np.zeros(n * c * h * w, dtype=np.float64)
        for i, wt in zip(idx, wts):
            total += np.bincount((base + i).ravel(), weights=(g * wt).ravel(),
                                 minlength=n * c * h * w)
        return total.reshape(n, c, h, w).astype(x.dtype)

    return out, backward
