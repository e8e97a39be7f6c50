"""A CPPN parameterization: the image is drawn by a small network of the pixel coordinates.

lucid's ``cppn`` (Mordvintsev et al., "Differentiable Image Parameterizations", Distill 2018):
a compositional pattern-producing network maps each pixel's ``(x, y)`` to a colour through
``layers`` fully connected layers of ``hidden`` units with lucid's composite activation
``[atan(z) / 0.67, atan(z)^2 / 0.6]`` (both halves of unit scale for unit-normal inputs).  The
optimized numbers are the network's weights, so the image is smooth and resolution-free, with
the flowing look of CPPN art.  As in lucid the output layer starts at zero weights (a flat
image) and ends with the range squashing of :class:`~.param.Pipeline` (lucid's sigmoid).

Each image of a batch has its own weights (lucid shared one network across the batch): a batch
then computes exactly what separate runs would, as for every flowgrad parameterization.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

Backward = Callable[[np.ndarray], np.ndarray]

#: lucid's biased coefficients: the RMS of atan(z) and atan(z)^2 for z ~ N(0, 1)
ATAN_SCALE, ATAN_SQUARE_SCALE = 0.67, 0.6


class CPPN:
    """Weights of a ``2 -> hidden -> ... -> C`` coordinate network as one vector per image.

    Coordinates span ``[-sqrt 3, sqrt 3]`` (unit variance) along the longer side, the shorter
    side proportionally.  Weights start as lucid's: hidden weights ``N(0, 1 / fan_in)``, biases
    ``N(0, 0.1)``, output weights 0.  ``sd`` and ``decay`` (other parameterizations') are unused.
    """

    #: colour decorrelation is for pixel-like parameters; the network makes its own colours
    colour_decorrelation = False

    def __init__(self, shape: tuple[int, int, int], hidden: int = 24, layers: int = 8):
        c, h, w = shape
        self.shape = shape
        r = 3.0 ** 0.5 / max(h, w)
        ys = np.linspace(-r * h, r * h, h) if h > 1 else np.zeros(1)
        xs = np.linspace(-r * w, r * w, w) if w > 1 else np.zeros(1)
        yy, xx = np.meshgrid(ys, xs, indexing="ij")
        self.coords = np.stack([xx.ravel(), yy.ravel()], axis=1)          # (H*W, 2)
        fan_in = [2] + [2 * hidden] * layers
        fan_out = [hidden] * layers + [c]
        self.layers = [(i, o) for i, o in zip(fan_in, fan_out)]
        self.slices = []                                  # (W slice, b slice) of each layer
        start = 0
        for i, o in self.layers:
            self.slices.append((slice(start, start + i * o), slice(start + i * o,
                                                                   start + i * o + o)))
            start += i * o + o
        self.size = start

    def init(self, rng: np.random.Generator) -> np.ndarray:
        parts = []
        for k, (i, o) in enumerate(self.layers):
            last = k == len(self.layers) - 1
            parts.append(np.zeros(i * o) if last else rng.normal(0.0, (1.0 / i) ** 0.5, i * o))
            parts.append(rng.normal(0.0, 0.1, o))
        return np.concatenate(parts)

    def unpack(self, p: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each layer's weights ``(N, in, out)`` and biases ``(N, 1, out)`` of a batch ``p``."""
        n = len(p)
        return [(p[:, ws].reshape(n, i, o), p[:, bs].reshape(n, 1, o))
                for (ws, bs), (i, o) in zip(self.slices, self.layers)]

    def forward(self, p: np.ndarray) -> tuple[np.ndarray, Backward]:
        c, h, w = self.shape
        n = len(p)
        weights = self.unpack(p)
        act = np.broadcast_to(self.coords.astype(p.dtype), (n,) + self.coords.shape)
        inputs, angles = [], []                       # what each layer's backward needs
        for W, b in weights[:-1]:
            inputs.append(act)
            z = act @ W + b
            a = np.arctan(z)
            angles.append((a, z))
            act = np.concatenate([a / ATAN_SCALE, a * a / ATAN_SQUARE_SCALE], axis=-1)
        W_out, b_out = weights[-1]
        inputs.append(act)
        y = act @ W_out + b_out                                          # (N, H*W, C)
        image = np.ascontiguousarray(np.swapaxes(y, 1, 2)).reshape(n, c, h, w)

        def backward(g: np.ndarray) -> np.ndarray:
            grad = np.empty_like(p)
            gz = np.swapaxes(g.reshape(n, c, h * w), 1, 2)               # (N, H*W, C)
            for k in range(len(weights) - 1, -1, -1):
                W, _ = weights[k]
                ws, bs = self.slices[k]
                grad[:, ws] = (np.swapaxes(inputs[k], 1, 2) @ gz).reshape(n, -1)
                grad[:, bs] = gz.sum(axis=1)
                if k == 0:
                    break
                ga = gz @ np.swapaxes(W, 1, 2)                           # d act
                a, z = angles[k - 1]
                half = ga.shape[-1] // 2
                gz = (ga[..., :half] / ATAN_SCALE
                      + ga[..., half:] * (2.0 / ATAN_SQUARE_SCALE) * a) / (1.0 + z * z)
            return grad

        return image, backward
