"""Parameter initializers, seeded so that a graph file always gives the same weights.

Fan-in and fan-out follow the layout of each op family: a 2-d weight is ``(in, out)`` (dense's
``x @ W``); a weight with more axes is ``(out, in, *kernel)`` (convolutions, as in ONNX).
"""
from __future__ import annotations

import math
import zlib
from typing import Any, Callable

import numpy as np


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    field = math.prod(shape[2:])
    return shape[1] * field, shape[0] * field


def param_seed(graph_seed: int, name: str) -> int:
    """A per-param seed derived from the graph's seed and the param's name (stable across runs)."""
    return (graph_seed * 1_000_003 + zlib.crc32(name.encode())) % 2**32


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _zeros(shape, seed):
    return np.zeros(shape)


def _constant(shape, seed, value):
    return np.full(shape, float(value))


def _normal(shape, seed, std, mean=0.0):
    return _rng(seed).normal(mean, std, size=shape)


def _uniform(shape, seed, low=-1.0, high=1.0):
    return _rng(seed).uniform(low, high, size=shape)


def _glorot_uniform(shape, seed, gain=1.0):
    fan_in, fan_out = fans(shape)
    limit = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return _rng(seed).uniform(-limit, limit, size=shape)


def _he_normal(shape, seed, gain=math.sqrt(2.0)):
    fan_in, _ = fans(shape)
    return _rng(seed).normal(0.0, gain / math.sqrt(fan_in), size=shape)


#: kind -> (function, required keys, optional keys)
INITIALIZERS: dict[str, tuple[Callable[..., np.ndarray], tuple[str, ...], tuple[str, ...]]] = {
    "zeros": (_zeros, (), ()),
    "constant": (_constant, ("value",), ()),
    "normal": (_normal, ("std",), ("mean",)),
    "uniform": (_uniform, (), ("low", "high")),
    "glorot_uniform": (_glorot_uniform, (), ("gain",)),
    "he_normal": (_he_normal, (), ("gain",)),
}
# ``value`` (an explicit array) is handled by the front end: it needs no shape and no seed.


def initialize(kind: str, shape: tuple[int, ...], seed: int, **args: Any) -> np.ndarray:
    """Make an array of ``shape`` with initializer ``kind`` (see :data:`INITIALIZERS`)."""
    fn, _, _ = INITIALIZERS[kind]
    return np.asarray(fn(tuple(shape), seed, **args), dtype=np.float64)
