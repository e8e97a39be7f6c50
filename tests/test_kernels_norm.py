"""Batch-norm kernels against their numpy references, over a grid of shapes and dtypes."""
from __future__ import annotations

import numpy as np
import pytest

from flowgrad.kernels import norm

KERNELS = ["bn_stats", "bn_apply", "bn_backward"]

SHAPES = [(1, 1, 1), (2, 3, 1), (5, 4, 7), (8, 16, 49), (3, 2, 0)]
#: float32 inputs: the kernels sum in float64 and round once, numpy sums pairwise in float32
TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-12, atol=1e-12)}


def _data(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * 3 + 1).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_bn_stats(shape, dtype):
    x = _data(shape, dtype)
    out = []
    for impl in (norm.bn_stats.compiled, norm.bn_stats.reference):
        mean, var = np.empty(shape[1]), np.empty(shape[1])
        impl(x, mean, var)
        out.append((mean, var))
    np.testing.assert_allclose(out[0][0], out[1][0], **TOL[np.float64])
    np.testing.assert_allclose(out[0][1], out[1][1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_bn_apply_also_in_place(shape, dtype):
    x = _data(shape, dtype)
    a, shift = _data(shape[1], dtype, 1), _data(shape[1], dtype, 2)
    expected = np.empty_like(x)
    norm.bn_apply.reference(x, a, shift, expected)
    y = np.empty_like(x)
    norm.bn_apply.compiled(x, a, shift, y)
    np.testing.assert_allclose(y, expected, **TOL[dtype])
    inplace = x.copy()
    norm.bn_apply.compiled(inplace, a, shift, inplace)
    np.testing.assert_array_equal(inplace, y)


@pytest.mark.parametrize("need_x", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
def test_bn_backward(shape, dtype, need_x):
    x, gy = _data(shape, dtype), _data(shape, dtype, 3)
    mean, var = np.empty(shape[1]), np.empty(shape[1])
    norm.bn_stats.reference(x, mean, var)
    inv = 1 / np.sqrt(var + 1e-5)
    scale = _data(shape[1], np.float64, 4)
    results = []
    for impl in (norm.bn_backward.compiled, norm.bn_backward.reference):
        gx = np.empty(shape if need_x else (0, 0, 0), dtype)
        gscale, gbias = np.empty(shape[1]), np.empty(shape[1])
        impl(gy, x, mean, inv, scale, gx, gscale, gbias)
        results.append((gx, gscale, gbias))
    for got, want in zip(*results):
        np.testing.assert_allclose(got, want, **TOL[dtype])


def test_bn_stats_are_the_same_bits_every_run():
    x = _data((16, 8, 64), np.float32)
    runs = []
    for _ in range(3):
        mean, var = np.empty(8), np.empty(8)
        norm.bn_stats(x, mean, var)
        runs.append((mean.tobytes(), var.tobytes()))
    assert runs[0] == runs[1] == runs[2]
