"""The lucid parameterizations: CPPN, low-resolution tensors, Laplacian pyramid — their math
(against direct numpy computations) and their backward (finite differences)."""
from __future__ import annotations

import numpy as np
import pytest

from flowgrad.visualize import CPPN, LaplacianPyramid, LowRes, Pipeline
from flowgrad.visualize.lowres import upsample_matrix
from flowgrad.visualize.param import BUILTIN_PARAMETERIZATIONS

RNG = np.random.default_rng(7)


def finite_difference_check(forward, p, rtol=1e-6):
    """``<J dp, g> == <dp, J^T g>`` with ``J dp`` by central differences: the backward is the
    exact transpose of the forward's derivative (linear or not)."""
    y, back = forward(p)
    g = RNG.normal(size=y.shape)
    dp = RNG.normal(size=p.shape)
    eps = 1e-6
    jdp = (forward(p + eps * dp)[0] - forward(p - eps * dp)[0]) / (2 * eps)
    assert np.vdot(jdp, g) == pytest.approx(np.vdot(dp, back(g)), rel=rtol, abs=1e-9)


def test_upsample_matrix_is_bilinear_with_half_pixel_centres():
    m = upsample_matrix(8, 2)
    np.testing.assert_allclose(m.sum(axis=1), 1.0)
    # output pixel i samples (i + 0.5) / 4 - 0.5: clamped to pixel 0 for i < 2, then linear
    expected_right = np.clip((np.arange(8) + 0.5) / 4 - 0.5, 0, 1)
    np.testing.assert_allclose(m[:, 1], expected_right)
    np.testing.assert_allclose(upsample_matrix(5, 5), np.eye(5))
    # a linear ramp stays linear inside the clamped border
    ramp = upsample_matrix(12, 4) @ np.arange(4.0)
    np.testing.assert_allclose(np.diff(ramp[1:-1]), 1 / 3)


@pytest.mark.parametrize("shape,factor", [((3, 8, 8), 4), ((1, 7, 10), 3), ((2, 5, 5), 1)])
def test_lowres_matches_a_direct_separable_upsampling(shape, factor):
    lr = LowRes(shape, factor=factor)
    p = np.stack([lr.init(RNG) for _ in range(2)]) * 100
    assert p.shape[1:] == (shape[0], -(-shape[1] // factor), -(-shape[2] // factor))
    x, _ = lr.forward(p)
    rows = upsample_matrix(shape[1], p.shape[2])
    cols = upsample_matrix(shape[2], p.shape[3])
    direct = np.einsum("Hh,nchw,Ww->ncHW", rows, p, cols)
    np.testing.assert_allclose(x, direct, rtol=1e-12)
    finite_difference_check(lr.forward, p)


def test_laplacian_pyramid_is_the_sum_of_its_levels():
    shape = (3, 8, 8)
    lap = LaplacianPyramid(shape, levels=4)
    p = np.stack([lap.init(RNG) for _ in range(3)])
    sizes = [3 * 8 * 8, 3 * 4 * 4, 3 * 2 * 2, 3 * 1 * 1]
    assert p.shape == (3, sum(sizes))
    x, _ = lap.forward(p)
    total, start = 0.0, 0
    for k, size in enumerate(sizes):
        part = p[:, start:start + size].reshape(3, 3, 8 >> k, 8 >> k)
        total = total + LowRes(shape, factor=2 ** k).forward(part)[0]
        start += size
    np.testing.assert_allclose(x, total, rtol=1e-12)
    # the coarsest level (one value per channel) moves the whole channel uniformly
    flat = np.zeros_like(p[:1])
    flat[0, -3:] = [1.0, 2.0, 3.0]
    np.testing.assert_allclose(lap.forward(flat)[0][0], np.broadcast_to(
        np.array([1.0, 2.0, 3.0])[:, None, None], shape))
    finite_difference_check(lap.forward, p)


def cppn_reference(net: CPPN, weights: np.ndarray) -> np.ndarray:
    """One image of the CPPN, written plainly: coordinates through dense layers."""
    act = net.coords
    start = 0
    for k, (i, o) in enumerate(net.layers):
        W = weights[start:start + i * o].reshape(i, o)
        b = weights[start + i * o:start + i * o + o]
        start += i * o + o
        z = act @ W + b
        if k < len(net.layers) - 1:
            act = np.concatenate([np.arctan(z) / 0.67, np.arctan(z) ** 2 / 0.6], axis=1)
    c, h, w = net.shape
    return z.T.reshape(c, h, w)


def test_cppn_forward_and_backward():
    net = CPPN((3, 6, 7), hidden=5, layers=3)
    p = np.stack([net.init(np.random.default_rng(s)) for s in range(2)])
    # lucid's start: output weights zero, so the image is flat (each channel its bias)
    x0, _ = net.forward(p)
    assert np.ptp(x0[0], axis=(1, 2)).max() == 0
    p[:, -3 - 10 * 3:-3] = RNG.normal(size=(2, 30))        # give the output layer weights
    x, _ = net.forward(p)
    for i in range(2):
        np.testing.assert_allclose(x[i], cppn_reference(net, p[i]), rtol=1e-12)
    assert net.coords[:, 0].max() == pytest.approx(3 ** 0.5)      # x spans the longer side
    finite_difference_check(net.forward, p)


def test_cppn_seeds_and_registration():
    a = CPPN((3, 8, 8)).init(np.random.default_rng(3))
    b = CPPN((3, 8, 8)).init(np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert set(BUILTIN_PARAMETERIZATIONS) >= {"fourier", "pixels", "cppn", "lowres", "laplacian"}
    assert not Pipeline((3, 8, 8), kind="cppn").decorrelate     # lucid's CPPN has its colours
    assert Pipeline((3, 8, 8), kind="laplacian").decorrelate


@pytest.mark.parametrize("kind", ["cppn", "lowres", "laplacian"])
def test_pipelines_of_the_new_kinds(kind):
    pipe = Pipeline((3, 8, 8), kind=kind, value_range=(-1, 2))
    p = np.stack([pipe.init(np.random.default_rng(s)) for s in range(2)])
    p = p + RNG.normal(size=p.shape) * 0.5
    x, _ = pipe.forward(p)
    assert x.shape == (2, 3, 8, 8) and x.min() >= -1 and x.max() <= 2
    finite_difference_check(pipe.forward, p, rtol=1e-5)
