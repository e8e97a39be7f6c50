"""Parameterizations: how the optimized numbers become an image in the input's valid range.

Optimizing raw pixels lets high frequencies win (the gradient of most networks is noisy), so
the feature-visualization literature (Olah et al., "Feature Visualization", Distill 2017)
optimizes a *spectrum* scaled by 1/f — every frequency then moves at a comparable speed, which
acts as a preconditioner — and, for colour images, decorrelated colour channels.  Finally a
sigmoid squashes values into the valid input range (or they are clipped).

Images are handled as ``(N, C, H, W)``; every stage maps ``p -> x`` and returns ``x`` with a
function giving ``dL/dp`` from ``dL/dx``.  Each stage works image by image, so a batch
computes exactly what separate runs would.  Besides ``fourier`` and ``pixels``, lucid's other
parameterizations are built in: ``cppn`` (:mod:`.cppn`), ``lowres`` and ``laplacian``
(:mod:`.lowres`).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..errors import FlowgradError, did_you_mean
from .cppn import CPPN
from .lowres import LaplacianPyramid, LowRes

Backward = Callable[[np.ndarray], np.ndarray]

#: square root of the colour correlation of natural (ImageNet) images, from the lucid library;
#: its columns scaled so the largest has norm 1
COLOR_CORRELATION_SVD_SQRT = np.array([[0.26, 0.09, 0.02],
                                       [0.27, 0.00, -0.05],
                                       [0.27, -0.09, 0.03]])
COLOR_CORRELATION = COLOR_CORRELATION_SVD_SQRT / np.max(
    np.linalg.norm(COLOR_CORRELATION_SVD_SQRT, axis=0))


class Pixels:
    """The image itself is the parameter (start: small Gaussian noise around 0)."""

    def __init__(self, shape: tuple[int, int, int], sd: float = 0.01):
        self.shape = shape
        self.sd = sd

    def init(self, rng: np.random.Generator) -> np.ndarray:
        return rng.normal(0.0, self.sd, self.shape)

    def forward(self, p: np.ndarray) -> tuple[np.ndarray, Backward]:
        return p, lambda g: g


class Fourier:
    """A half spectrum (real and imaginary parts) over the last two axes, scaled by
    ``1 / max(f, 1/size) ** decay``; ``x = irfft2(scale * spectrum, norm="ortho") / 4``.

    The backward is the adjoint of that real-linear map: ``c * rfft2(g)`` where ``c`` doubles
    the half-spectrum columns that stand for two conjugate frequencies.
    """

    def __init__(self, shape: tuple[int, int, int], decay: float = 1.0, sd: float = 0.01):
        self.shape = shape
        c, h, w = shape
        self.sd = sd
        fy = np.fft.fftfreq(h)[:, None]
        fx = np.fft.rfftfreq(w)[None, :]
        freqs = np.sqrt(fx * fx + fy * fy)
        self.scale = 1.0 / np.maximum(freqs, 1.0 / max(h, w)) ** decay / 4.0
        doubled = np.full(fx.shape, 2.0)
        doubled[:, 0] = 1.0
        if w % 2 == 0:
            doubled[:, -1] = 1.0
        self.adjoint = self.scale * doubled

    def init(self, rng: np.random.Generator) -> np.ndarray:
        c, h, w = self.shape
        return rng.normal(0.0, self.sd, (c, h, w // 2 + 1, 2))

    def forward(self, p: np.ndarray) -> tuple[np.ndarray, Backward]:
        h, w = self.shape[1:]
        spectrum = (p[..., 0] + 1j * p[..., 1]) * self.scale
        x = np.fft.irfft2(spectrum, s=(h, w), norm="ortho").astype(p.dtype)

        def backward(g: np.ndarray) -> np.ndarray:
            spec = np.fft.rfft2(g, norm="ortho") * self.adjoint
            return np.stack([spec.real, spec.imag], axis=-1).astype(p.dtype)

        return x, backward


def decorrelate(x: np.ndarray) -> tuple[np.ndarray, Backward]:
    """Mix 3 decorrelated channels into RGB with the natural-image colour correlation."""
    if x.shape[1] != 3:
        raise FlowgradError(f"colour decorrelation needs 3 channels, the input has {x.shape[1]}")
    m = COLOR_CORRELATION.astype(x.dtype)
    y = np.einsum("ij,njhw->nihw", m, x)
    return y, lambda g: np.einsum("ij,nihw->njhw", m, g)


def squash(x: np.ndarray, low: float, high: float, mode: str) -> tuple[np.ndarray, Backward]:
    """Map into [low, high]: ``sigmoid`` (smooth, never saturates the gradient to exactly 0),
    ``clip`` (identity inside; gradient passes only where inside) or ``none``."""
    if mode == "sigmoid":
        s = 1.0 / (1.0 + np.exp(-x))
        span = high - low
        return low + span * s, lambda g: g * (span * s * (1.0 - s))
    if mode == "clip":
        inside = (x >= low) & (x <= high)
        return np.clip(x, low, high), lambda g: g * inside
    if mode == "none":
        return x, lambda g: g
    raise FlowgradError(f"unknown range mode '{mode}' (use sigmoid, clip or none)")


#: the built-in parameterizations, registered by :mod:`flowgrad.builtins` like a plugin's:
#: ``factory(shape, *, sd, decay)``.  ``lowres`` is a quarter-resolution tensor and
#: ``laplacian`` a 4-level pyramid (lucid's defaults); for other settings pass a factory such as
#: ``functools.partial(LowRes, factor=8)`` as ``param``.
BUILTIN_PARAMETERIZATIONS: dict[str, Callable[..., Any]] = {
    "fourier": lambda shape, sd, decay: Fourier(shape, decay=decay, sd=sd),
    "pixels": lambda shape, sd, decay: Pixels(shape, sd=sd),
    "cppn": lambda shape, sd, decay: CPPN(shape),
    "lowres": lambda shape, sd, decay: LowRes(shape, factor=4, sd=sd),
    "laplacian": lambda shape, sd, decay: LaplacianPyramid(shape, levels=4, sd=sd),
}


class Pipeline:
    """parameterization -> optional decorrelation -> squashing, with the chained backward.

    ``kind`` names a registered parameterization (built-in ``fourier``, ``pixels``, ``cppn``,
    ``lowres``, ``laplacian``, or a plugin's, looked up in ``registry``) or is a factory
    ``factory(shape, *, sd, decay)`` itself.  Colours are decorrelated by default for 3
    channels, unless the parameterization says ``colour_decorrelation = False`` (a CPPN)."""

    def __init__(self, shape: tuple[int, int, int], kind: str | Callable[..., Any] = "fourier",
                 decorrelate_colors: bool | None = None, value_range=(0.0, 1.0),
                 range_mode: str = "sigmoid", decay: float = 1.0, sd: float = 0.01,
                 registry: Any = None):
        if callable(kind):
            factory = kind
        else:
            if registry is None:
                from ..plugins import default_registry
                registry = default_registry()
            kinds = registry.table("parameterization")
            if kind not in kinds:
                raise FlowgradError(f"unknown parameterization '{kind}'"
                                    f"{did_you_mean(kind, kinds)} "
                                    f"(parameterizations: {', '.join(sorted(kinds))})")
            factory = kinds[kind]
        self.base = factory(shape, sd=sd, decay=decay)
        self.decorrelate = (shape[0] == 3 and getattr(self.base, "colour_decorrelation", True)
                            if decorrelate_colors is None else decorrelate_colors)
        if self.decorrelate and shape[0] != 3:
            raise FlowgradError("colour decorrelation needs a 3-channel input")
        self.low, self.high = map(float, value_range)
        self.range_mode = range_mode
        self.shape = shape

    def init(self, rng: np.random.Generator) -> np.ndarray:
        return self.base.init(rng)

    def forward(self, p: np.ndarray) -> tuple[np.ndarray, Backward]:
        x, back_base = self.base.forward(p)
        back_color: Backward = lambda g: g  # noqa: E731
        if self.decorrelate:
            x, back_color = decorrelate(x)
        x, back_squash = squash(x, self.low, self.high, self.range_mode)
        return x, lambda g: back_base(back_color(back_squash(g)))
