"""The convolution and pooling kernels, compiled against their numpy references.

Every kernel of :mod:`flowgrad.kernels.conv` and :mod:`flowgrad.kernels.pool` is run compiled
(``.compiled``) and as its reference (``.reference``) on the same inputs, over a grid of window
geometries: 1-d, 2-d and 3-d (as the ops pass them, with leading spatial axes of size 1),
strides, dilations, asymmetric pads (outputs narrower, as wide as, and wider than the input:
the kernels' contiguous-plane paths and their row-by-row paths), groups including depthwise
with a channel multiplier, batch 1 and odd sizes, float32 and float64.

Tolerances: copies (im2col), maxima and arg-maxima, the max-pool scatter and the average-pool
forward are exact (the same operations in the same order).  Sums that the two sides order
differently (col2im's gather against numpy's per-tap adds, the direct convolution against
unfold + matmul, the average-pool scatter) are compared with ``rtol`` 1e-5 (float32) / 1e-12
(float64) and an absolute tolerance of ``terms · 1e-6`` (float32) / ``terms · 1e-14``
(float64), ``terms`` being how many products each output sums — float32 rounding of sums of
that many unit-sized values.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from flowgrad import kernels
from flowgrad.kernels import conv as K
from flowgrad.kernels import pool as P

from .conftest import assert_same_bits

#: the kernels this file compares with their references (a meta-test requires every kernel in
#: flowgrad.kernels.REGISTRY to be listed by some test file)
KERNELS = ["im2col", "col2im", "unfolded_output", "unfolded_pixels", "add_channel_bias",
           "conv_direct", "conv_depthwise", "conv_planes", "conv_direct_input_grad",
           "conv_direct_weight_grad", "max_pool", "max_pool_backward", "avg_pool",
           "avg_pool_backward"]

DTYPES = [np.float32, np.float64]


def test_the_listed_kernels_are_the_conv_and_pool_modules_kernels():
    declared = set(K.__all__) | set(P.__all__)
    assert declared == set(KERNELS)
    assert all(kernels.REGISTRY[name].reference is not None for name in KERNELS)


def _tolerance(dtype, terms):
    if np.dtype(dtype) == np.float32:
        return {"rtol": 1e-5, "atol": 1e-6 * terms}
    return {"rtol": 1e-12, "atol": 1e-14 * terms}


class Geometry3:
    """A window geometry on three axes, from per-axis (size, kernel, stride, dilation, begin,
    end) with leading axes of size 1 filled in."""

    def __init__(self, axes):
        axes = [(1, 1, 1, 1, 0, 0)] * (3 - len(axes)) + list(axes)
        self.sizes = tuple(a[0] for a in axes)
        self.kernel = tuple(a[1] for a in axes)
        self.strides = tuple(a[2] for a in axes)
        self.dilations = tuple(a[3] for a in axes)
        self.begin = tuple(a[4] for a in axes)
        self.end = tuple(a[5] for a in axes)
        self.out = tuple((n + b + e - (k - 1) * d - 1) // s + 1 for n, k, s, d, b, e in axes)
        assert all(o >= 1 for o in self.out), axes

    @property
    def args(self):
        return self.kernel, self.strides, self.dilations, self.begin

    @property
    def taps(self):
        return math.prod(self.kernel)

    def __repr__(self):
        return (f"sizes={self.sizes} kernel={self.kernel} strides={self.strides} "
                f"dilations={self.dilations} begin={self.begin} end={self.end} out={self.out}")


# (size, kernel, stride, dilation, begin pad, end pad) per spatial axis
GEOMETRIES = [
    pytest.param([(9, 3, 1, 1, 1, 1)], id="1d-same"),
    pytest.param([(11, 4, 2, 3, 3, 2)], id="1d-strided-dilated"),
    pytest.param([(7, 3, 1, 1, 1, 1), (8, 3, 1, 1, 1, 1)], id="2d-same"),           # flat paths
    pytest.param([(14, 5, 1, 1, 2, 2), (14, 5, 1, 1, 2, 2)], id="2d-lenet"),
    pytest.param([(9, 3, 2, 1, 1, 0), (8, 2, 1, 2, 1, 2)], id="2d-mixed"),
    pytest.param([(6, 3, 1, 1, 0, 0), (9, 3, 1, 1, 0, 0)], id="2d-valid"),         # narrower
    pytest.param([(5, 2, 1, 1, 2, 3), (5, 3, 1, 1, 3, 2)], id="2d-wider"),         # wider
    pytest.param([(8, 3, 2, 1, 1, 1), (8, 3, 2, 1, 1, 1)], id="2d-stride2"),
    pytest.param([(7, 3, 3, 2, 2, 2), (10, 3, 3, 1, 0, 1)], id="2d-stride3"),
    pytest.param([(5, 3, 1, 1, 3, 1), (6, 1, 1, 1, 0, 0)], id="2d-pad-past-kernel"),
    pytest.param([(4, 2, 1, 1, 1, 0), (5, 3, 2, 1, 1, 1), (6, 3, 1, 2, 2, 2)], id="3d"),
    pytest.param([(3, 2, 1, 1, 0, 1), (4, 3, 1, 1, 1, 1), (5, 3, 1, 1, 1, 1)], id="3d-same"),
    # planes larger than im2col's TABLE_POSITIONS, so that its row-wise paths are run too
    pytest.param([(12, 3, 1, 1, 1, 1), (13, 3, 1, 1, 1, 1)], id="2d-large-same"),
    pytest.param([(16, 3, 2, 1, 1, 1), (40, 3, 1, 1, 0, 0)], id="2d-large-rows"),
    # im2col's staged planes: dilated taps, pads past the kernel, lopsided pads, 1-d, 3-d
    pytest.param([(12, 3, 1, 2, 2, 2), (13, 3, 1, 2, 2, 2)], id="2d-large-dilated"),
    pytest.param([(10, 3, 1, 1, 3, 1), (15, 3, 1, 1, 1, 1)], id="2d-large-tall-pads"),
    pytest.param([(11, 3, 1, 1, 1, 1), (13, 3, 1, 1, 2, 0)], id="2d-large-lopsided"),
    pytest.param([(200, 5, 1, 1, 2, 2)], id="1d-long-same"),
    pytest.param([(3, 3, 2, 1, 1, 1), (10, 3, 1, 1, 1, 1), (14, 3, 1, 1, 1, 1)],
                 id="3d-large-same"),
    # conv_planes' bands (kernel rows that read only padding rows skipped): short, wide planes
    pytest.param([(2, 5, 1, 1, 2, 2), (24, 5, 1, 1, 2, 2)], id="2d-short-wide"),
    pytest.param([(3, 5, 2, 1, 2, 2), (30, 5, 1, 1, 2, 2)], id="2d-short-wide-strided"),
    pytest.param([(1, 3, 1, 1, 3, 3), (30, 3, 1, 1, 1, 1)], id="2d-short-wide-pad-only-rows"),
]


def _rng(*parts):
    return np.random.default_rng(abs(hash(parts)) % (1 << 32))


def _x(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


# -- im2col / col2im -------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch,channels", [(1, 1), (3, 2), (2, 5)])
@pytest.mark.parametrize("axes", GEOMETRIES)
def test_im2col_copies_exactly(axes, batch, channels, dtype):
    g = Geometry3(axes)
    x = _x(_rng("im2col", repr(g), batch, channels), (batch, channels) + g.sizes, dtype)
    got = np.full((channels, g.taps, batch) + g.out, np.nan, dtype)
    want = np.full_like(got, np.nan)
    K.im2col.compiled(x, got, *g.args)
    K.im2col.reference(x, want, *g.args)
    np.testing.assert_array_equal(got, want, err_msg=repr(g))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch,channels", [(1, 1), (3, 2), (2, 5)])
@pytest.mark.parametrize("axes", GEOMETRIES)
def test_col2im_sums_what_reads_each_cell(axes, batch, channels, dtype):
    g = Geometry3(axes)
    rng = _rng("col2im", repr(g), batch, channels)
    # random everywhere, the cells that read padding included: they must contribute nothing
    cols = _x(rng, (channels, g.taps, batch) + g.out, dtype)
    got = np.full((batch, channels) + g.sizes, np.nan, dtype)
    want = np.full_like(got, np.nan)
    K.col2im.compiled(cols.copy(), got, *g.args)
    K.col2im.reference(cols.copy(), want, *g.args)
    np.testing.assert_allclose(got, want, **_tolerance(dtype, g.taps), err_msg=repr(g))


@pytest.mark.parametrize("axes", GEOMETRIES)
def test_col2im_is_the_adjoint_of_im2col(axes):
    g = Geometry3(axes)
    rng = _rng("adjoint", repr(g))
    x = rng.standard_normal((2, 3) + g.sizes)
    z = rng.standard_normal((3, g.taps, 2) + g.out)
    cols, back = np.empty_like(z), np.empty_like(x)
    K.im2col.compiled(x, cols, *g.args)
    K.col2im.compiled(z.copy(), back, *g.args)
    assert np.isclose((cols * z).sum(), (x * back).sum(), rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 2, 7), (32, 3, 196), (5, 4, 33)])
@pytest.mark.parametrize("bias", [True, False])
def test_unfolded_output_swaps_and_adds_the_bias(shape, bias, dtype):
    rng = _rng("unfolded_output", shape, bias)
    values = _x(rng, shape, dtype)
    b = _x(rng, (shape[0] if bias else 0,), dtype)
    got = np.full((shape[1], shape[0], shape[2]), np.nan, dtype)
    want = np.full_like(got, np.nan)
    K.unfolded_output.compiled(values, b, got)
    K.unfolded_output.reference(values, b, want)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 200, 192), (3, 5, 7), (2, 8, 33)])
def test_add_channel_bias_adds_per_channel_in_place(shape, dtype):
    rng = _rng("add_channel_bias", shape)
    y, b = _x(rng, shape, dtype), _x(rng, shape[1:2], dtype)
    got, want = y.copy(), y.copy()
    K.add_channel_bias.compiled(got, b)
    K.add_channel_bias.reference(want, b)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("kernel,sizes", [((1, 2, 2), (1, 5, 4)), ((1, 1, 2), (1, 1, 9)),
                                          ((1, 3, 1), (1, 2, 3)), ((2, 2, 3), (2, 3, 2))])
@pytest.mark.parametrize("bias", [True, False])
def test_unfolded_pixels_is_col2im_of_tiling_windows(kernel, sizes, batch, bias, dtype):
    """unfolded_pixels against its reference, and bit for bit against col2im (stride = kernel,
    no padding: one unfolded value per output cell) plus the bias."""
    rng = _rng("unfolded_pixels", kernel, sizes, batch, bias)
    channels = 3
    cols = _x(rng, (channels, math.prod(kernel), batch) + sizes, dtype)
    b = _x(rng, (channels if bias else 0,), dtype)
    shape = (batch, channels) + tuple(k * n for k, n in zip(kernel, sizes))
    got, want, folded = (np.full(shape, np.nan, dtype) for _ in range(3))
    K.unfolded_pixels.compiled(cols, b, got, kernel)
    K.unfolded_pixels.reference(cols, b, want, kernel)
    np.testing.assert_array_equal(got, want)
    K.col2im.compiled(cols, folded, kernel, kernel, (1, 1, 1), (0, 0, 0))
    if bias:
        folded += b.reshape(1, -1, 1, 1, 1)
    np.testing.assert_array_equal(got, folded)


# -- direct convolution ----------------------------------------------------------------------

# (channels, output channels, input channels per group): depthwise, depthwise with a channel
# multiplier, two groups, one group
GROUPS = [pytest.param(4, 4, 1, id="depthwise"), pytest.param(3, 6, 1, id="depthwise-x2"),
          pytest.param(4, 6, 2, id="groups2"), pytest.param(3, 2, 3, id="dense")]


def _direct_case(axes, channels, out_channels, cin, batch, dtype, tag):
    g = Geometry3(axes)
    rng = _rng(tag, repr(g), channels, out_channels, cin, batch)
    x = _x(rng, (batch, channels) + g.sizes, dtype)
    W = _x(rng, (out_channels, cin) + g.kernel, dtype)
    b = _x(rng, (out_channels,), dtype)
    gy = _x(rng, (batch, out_channels) + g.out, dtype)
    return g, x, W, b, gy


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("channels,out_channels,cin", GROUPS)
@pytest.mark.parametrize("axes", GEOMETRIES)
def test_conv_direct(axes, channels, out_channels, cin, batch, dtype):
    """conv_direct against its reference, and conv_planes (any groups) bit for bit against
    conv_direct (the same sum order: bias, then per input channel the taps in order)."""
    g, x, W, b, _ = _direct_case(axes, channels, out_channels, cin, batch, dtype, "direct")
    for bias in (b, np.empty(0, dtype)):
        got = np.full((batch, out_channels) + g.out, np.nan, dtype)
        want = np.full_like(got, np.nan)
        planes = np.full_like(got, np.nan)
        K.conv_direct.compiled(x, W, bias, got, *g.args[1:])
        K.conv_direct.reference(x, W, bias, want, *g.args[1:])
        K.conv_planes.compiled(x, W, bias, planes, *g.args[1:])
        np.testing.assert_allclose(got, want, **_tolerance(dtype, cin * g.taps),
                                   err_msg=repr(g))
        np.testing.assert_array_equal(planes, got, err_msg=repr(g))


#: the depthwise geometries of the real-model suite's mobile nets (PP-OCR, MobileNetV3): 5x5
#: and 3x3 windows, (2, 1), (1, 2) and (2, 2) strides, planes down to 2x2 under a 5x5 window
DEPTHWISE = GEOMETRIES + [
    pytest.param([(12, 5, 2, 1, 2, 2), (20, 5, 1, 1, 2, 2)], id="2d-stride2x1"),
    pytest.param([(12, 3, 1, 1, 1, 1), (40, 3, 2, 1, 1, 1)], id="2d-stride1x2"),
    pytest.param([(2, 5, 1, 1, 2, 2), (2, 5, 1, 1, 2, 2)], id="2d-tiny-plane"),
    pytest.param([(9, 3, 2, 2, 2, 1), (11, 3, 3, 2, 1, 2)], id="2d-strided-dilated"),
    # strided phase planes whose staged columns span exactly a row's width (not contiguous)
    pytest.param([(10, 3, 2, 2, 0, 0)], id="1d-stride2-dilated"),
    pytest.param([(5, 2, 3, 2, 3, 1)], id="1d-stride3-padded"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("channels,multiplier", [(4, 1), (3, 2), (1, 3)])
@pytest.mark.parametrize("axes", DEPTHWISE)
@pytest.mark.parametrize("name", ["conv_depthwise", "conv_planes"])
def test_conv_depthwise(name, axes, channels, multiplier, batch, dtype):
    """The depthwise kernels (channels last, phase planes) against their reference, and bit
    for bit against conv_direct (the same sum order: bias, then the taps in order)."""
    out_channels = channels * multiplier
    g, x, W, b, _ = _direct_case(axes, channels, out_channels, 1, batch, dtype, "depthwise")
    kernel = getattr(K, name)
    for bias in (b, np.empty(0, dtype)):
        got = np.full((batch, out_channels) + g.out, np.nan, dtype)
        want = np.full_like(got, np.nan)
        direct = np.full_like(got, np.nan)
        kernel.compiled(x, W, bias, got, *g.args[1:])
        kernel.reference(x, W, bias, want, *g.args[1:])
        K.conv_direct.compiled(x, W, bias, direct, *g.args[1:])
        np.testing.assert_allclose(got, want, **_tolerance(dtype, g.taps), err_msg=repr(g))
        np.testing.assert_array_equal(got, direct, err_msg=repr(g))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("channels,out_channels,cin", GROUPS)
@pytest.mark.parametrize("axes", GEOMETRIES)
def test_conv_direct_input_grad(axes, channels, out_channels, cin, batch, dtype):
    g, x, W, _, gy = _direct_case(axes, channels, out_channels, cin, batch, dtype, "dgrad")
    got = np.full(x.shape, np.nan, dtype)
    want = np.full_like(got, np.nan)
    K.conv_direct_input_grad.compiled(gy, W, got, *g.args[1:])
    K.conv_direct_input_grad.reference(gy, W, want, *g.args[1:])
    terms = out_channels // (channels // cin) * g.taps
    np.testing.assert_allclose(got, want, **_tolerance(dtype, terms), err_msg=repr(g))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("channels,out_channels,cin", GROUPS)
@pytest.mark.parametrize("axes", GEOMETRIES + [
    pytest.param([(3, 3, 1, 1, 1, 1), (70, 3, 1, 1, 1, 1)], id="2d-wide-rows")])
def test_conv_direct_weight_grad(axes, channels, out_channels, cin, batch, dtype):
    g, x, W, _, gy = _direct_case(axes, channels, out_channels, cin, batch, dtype, "wgrad")
    got = np.full(W.shape, np.nan, dtype)
    want = np.full_like(got, np.nan)
    K.conv_direct_weight_grad.compiled(x, gy, got, *g.args[1:])
    K.conv_direct_weight_grad.reference(x, gy, want, *g.args[1:])
    terms = batch * math.prod(g.out)
    np.testing.assert_allclose(got, want, **_tolerance(dtype, terms), err_msg=repr(g))


def test_the_wide_and_row_weight_gradients_agree():
    """Rows wider than WIDE_WEIGHT_GRAD_MAX take the row-by-row path (the grid above covers
    the wide one); the two give the same sums up to rounding."""
    assert K.WIDE_WEIGHT_GRAD_MAX < 70
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 1, 5, 70))
    gy = rng.standard_normal((2, 3, 1, 5, 70))
    narrow = np.ascontiguousarray(x[..., :40]), np.ascontiguousarray(gy[..., :40])
    args = ((1, 1, 1), (1, 1, 1), (0, 1, 1))
    for xs, gys in ((x, gy), narrow):
        got, want = np.empty((3, 1, 1, 3, 3)), np.empty((3, 1, 1, 3, 3))
        K.conv_direct_weight_grad.compiled(xs, gys, got, *args)
        K.conv_direct_weight_grad.reference(xs, gys, want, *args)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-11)


# -- pooling ---------------------------------------------------------------------------------

POOLS = GEOMETRIES + [
    pytest.param([(8, 2, 2, 1, 0, 0), (8, 2, 2, 1, 0, 0)], id="2d-2x2"),
    pytest.param([(7, 3, 2, 1, 1, 2), (7, 3, 2, 1, 1, 2)], id="2d-ceil-room"),    # ceil_mode
    # windows inside the plane (max_pool's own loop): 3x3 stride 2, 2x3 and 4x2 windows
    pytest.param([(9, 3, 2, 1, 0, 0), (11, 3, 2, 1, 0, 0)], id="2d-3x3-s2-inside"),
    pytest.param([(6, 2, 1, 1, 0, 0), (9, 3, 3, 1, 0, 0)], id="2d-2x3-inside"),
    pytest.param([(9, 4, 2, 1, 0, 0), (7, 2, 1, 1, 0, 0)], id="2d-4x2-inside"),
]


def _pool_input(rng, shape, dtype, kind):
    if kind == "ties":          # small integers: many tied maxima (as after a relu)
        return rng.integers(-1, 2, shape).astype(dtype)
    x = _x(rng, shape, dtype)
    if kind == "special" and np.dtype(dtype).kind == "f":
        flat = x.reshape(-1)
        flat[::7] = -np.inf
        flat[3::11] = np.nan
    return x


@pytest.mark.parametrize("dtype", DTYPES + [np.int32])
@pytest.mark.parametrize("kind", ["normal", "ties", "special"])
@pytest.mark.parametrize("batch,channels", [(1, 1), (3, 2)])
@pytest.mark.parametrize("axes", POOLS)
def test_max_pool(axes, batch, channels, kind, dtype):
    g = Geometry3(axes)
    x = _pool_input(_rng("max", repr(g), batch, channels, kind), (batch, channels) + g.sizes,
                    dtype, kind)
    low = -np.inf if np.dtype(dtype).kind == "f" else np.iinfo(dtype).min
    out = (batch, channels) + g.out
    results = []
    for run in (P.max_pool.compiled, P.max_pool.reference):
        y = np.zeros(out, dtype)
        arg = np.full(out, -7, np.int32)
        run(x, y, arg, *g.args, low)
        y_only = np.zeros(out, dtype)
        run(x, y_only, np.empty((0,) * 5, np.int32), *g.args, low)
        np.testing.assert_array_equal(y_only, y)
        results.append((y, arg))
    (y, arg), (y_ref, arg_ref) = results
    np.testing.assert_array_equal(y, y_ref, err_msg=repr(g))
    np.testing.assert_array_equal(arg, arg_ref, err_msg=repr(g))
    # the index names a cell holding the maximum (a NaN maximum: the window's first cell)
    planes = x.reshape(batch * channels, -1)
    found = arg.reshape(batch * channels, -1)
    values = y.reshape(batch * channels, -1)
    for p in range(batch * channels):
        hit = (found[p] >= 0) & (values[p] == values[p])
        np.testing.assert_array_equal(planes[p][found[p][hit]], values[p][hit])
        assert (found[p] >= 0).all() or (values[p][found[p] < 0] == low).all()


# the 2x2 stride-2 windows inside the plane take a loop of their own (pool._max_pool_2x2): its
# maxima must be the reference's bits (np.maximum's choice between -0.0 and 0.0, the first
# NaN's payload), its arg-max the reference's (the first maximum; a NaN window's first cell)

def _bits(a):
    return a.view(np.dtype(f"u{a.itemsize}")) if a.dtype.kind == "f" else a


def _nans(dtype):
    """Quiet NaNs of both signs and three payloads (np.maximum keeps the first one's bits)."""
    if np.dtype(dtype) == np.float32:
        return np.array([0x7FC00001, 0xFFC00002, 0x7FC00403], np.uint32).view(np.float32)
    return np.array([0x7FF8000000000001, 0xFFF8000000000002, 0x7FF8000000000403],
                    np.uint64).view(np.float64)


def _max_pool_both(x, out, save, low=-np.inf):
    """The compiled kernel and the reference on ``x`` (2x2 stride 2): [(y, arg)] * 2."""
    results = []
    for run in (P.max_pool.compiled, P.max_pool.reference):
        y = np.full(out, 7, x.dtype)
        arg = np.full(out, -7, np.int32) if save else np.empty((0,) * 5, np.int32)
        run(x, y, arg, (1, 2, 2), (1, 2, 2), (1, 1, 1), (0, 0, 0), low)
        results.append((y, arg))
    return results


def _assert_same_max_pool(results, message=""):
    (y, arg), (y_ref, arg_ref) = results
    assert_same_bits(y, y_ref, err_msg=message)
    np.testing.assert_array_equal(arg, arg_ref, err_msg=message)


def _window_input(rng, shape, dtype, kind):
    if kind == "normal":
        return _x(rng, shape, dtype)
    x = rng.integers(-1, 2, shape).astype(dtype)    # ties
    flat = x.reshape(-1)
    if kind in ("zeros", "nan", "inf"):             # -0.0 beside 0.0: ties of two bit patterns
        flat[rng.random(flat.size) < 0.4] = -0.0
    if kind in ("nan", "inf"):
        where = np.flatnonzero(rng.random(flat.size) < 0.1)
        flat[where] = rng.choice(_nans(dtype), where.size)
    if kind == "inf":
        flat[rng.random(flat.size) < 0.15] = np.inf
        flat[rng.random(flat.size) < 0.15] = -np.inf
    return x


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["normal", "ties", "zeros", "nan", "inf"])
@pytest.mark.parametrize("size", [(2, 2), (3, 7), (7, 13), (13, 16), (14, 14), (4, 17), (6, 33),
                                  (28, 28), (9, 34)])
def test_max_pool_2x2_stride_2_is_the_reference_bit_for_bit(size, kind, dtype):
    # odd sizes leave the last row / column out; widths below and above a vector (8, 16)
    H, W = size
    x = _window_input(_rng("2x2", size, kind), (3, 2, 1, H, W), dtype, kind)
    out = (3, 2, 1, H // 2, W // 2)
    with_arg = _max_pool_both(x, out, True)
    _assert_same_max_pool(with_arg, f"{size} {kind}")
    y_only = _max_pool_both(x, out, False)
    _assert_same_max_pool(y_only, f"{size} {kind}, no arg")
    np.testing.assert_array_equal(_bits(y_only[0][0]), _bits(with_arg[0][0]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", [8, 7])       # windows per row: a whole plane row, or not
def test_max_pool_2x2_every_window_of_special_values(width, dtype):
    # every 2x2 window of {-0.0, 0.0, -1, 1, inf, -inf, two NaNs}: 8**4 windows, each cell
    # position holding each value; a NaN row and column beside them that no window reads
    values = np.array([-0.0, 0.0, -1.0, 1.0, np.inf, -np.inf], dtype)
    values = np.concatenate([values, _nans(dtype)[:2]])
    taps = np.array(np.meshgrid(*[np.arange(8)] * 4, indexing="ij")).reshape(4, -1).T
    rows = -(-len(taps) // width)
    windows = values[np.resize(taps, (rows * width, 4))].reshape(rows, width, 2, 2)
    x = np.full((1, 1, 1, 2 * rows + 1, 2 * width + 1), _nans(dtype)[2], dtype)
    x[0, 0, 0, :2 * rows, :2 * width] = windows.transpose(0, 2, 1, 3).reshape(2 * rows,
                                                                              2 * width)
    results = _max_pool_both(x, (1, 1, 1, rows, width), True)
    _assert_same_max_pool(results)
    y = results[0][0]       # the data has what it is for: maxima of either zero, either NaN
    for special in (y[y == 0], y[np.isnan(y)]):
        assert np.signbit(special).any() and not np.signbit(special).all()
    _assert_same_max_pool(_max_pool_both(x, (1, 1, 1, rows, width), False), "no arg")


def test_max_pool_depth_pads_of_a_single_plane():
    # D == 1 with padding on the depth axis: the outer output planes have no input cell (low,
    # -1); the inside-the-plane loops must not take them for the plane itself
    g = Geometry3([(1, 1, 1, 1, 1, 1), (4, 2, 2, 1, 0, 0), (6, 2, 2, 1, 0, 0)])
    x = _x(_rng("depth-pads"), (2, 3) + g.sizes, np.float32)
    results = []
    for run in (P.max_pool.compiled, P.max_pool.reference):
        y = np.zeros((2, 3) + g.out, np.float32)
        arg = np.full(y.shape, -7, np.int32)
        run(x, y, arg, *g.args, -np.inf)
        results.append((y, arg))
    _assert_same_max_pool(results, repr(g))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axes", POOLS)
def test_max_pool_backward_scatters_by_the_arg_max(axes, dtype):
    g = Geometry3(axes)
    rng = _rng("maxb", repr(g))
    x = _pool_input(rng, (3, 2) + g.sizes, dtype, "ties")
    y = np.empty((3, 2) + g.out, dtype)
    arg = np.empty(y.shape, np.int32)
    P.max_pool.compiled(x, y, arg, *g.args, -np.inf)
    gy = _x(rng, y.shape, dtype)
    got = np.full(x.shape, np.nan, dtype)
    want = np.full_like(got, np.nan)
    P.max_pool_backward.compiled(gy, arg, got)
    P.max_pool_backward.reference(gy, arg, want)
    np.testing.assert_array_equal(got, want, err_msg=repr(g))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("include_pad", [False, True])
@pytest.mark.parametrize("batch,channels", [(1, 1), (3, 2)])
@pytest.mark.parametrize("axes", POOLS)
def test_avg_pool(axes, batch, channels, include_pad, dtype):
    g = Geometry3(axes)
    rng = _rng("avg", repr(g), batch, channels, include_pad)
    x = _x(rng, (batch, channels) + g.sizes, dtype)
    if include_pad:     # the explicit pads count (here: all of them but one cell of room)
        count = (tuple(-b for b in g.begin),
                 tuple(n + max(0, e - 1) for n, e in zip(g.sizes, g.end)))
    else:
        count = ((0, 0, 0), g.sizes)
    got = np.full((batch, channels) + g.out, np.nan, dtype)
    want = np.full_like(got, np.nan)
    P.avg_pool.compiled(x, got, *g.args, *count)
    P.avg_pool.reference(x, want, *g.args, *count)
    np.testing.assert_array_equal(got, want, err_msg=repr(g))

    gy = _x(rng, got.shape, dtype)
    got_x = np.full(x.shape, np.nan, dtype)
    want_x = np.full_like(got_x, np.nan)
    P.avg_pool_backward.compiled(gy, got_x, *g.args, *count)
    P.avg_pool_backward.reference(gy, want_x, *g.args, *count)
    np.testing.assert_allclose(got_x, want_x, **_tolerance(dtype, g.taps), err_msg=repr(g))


def test_avg_pool_backward_is_the_adjoint_of_avg_pool():
    g = Geometry3([(7, 3, 2, 1, 1, 2), (6, 2, 1, 2, 1, 0)])
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3) + g.sizes)
    z = rng.standard_normal((2, 3) + g.out)
    count = ((0, 0, -1), (1, 7, 7))
    y, back = np.empty(z.shape), np.empty(x.shape)
    P.avg_pool.compiled(x, y, *g.args, *count)
    P.avg_pool_backward.compiled(z, back, *g.args, *count)
    assert np.isclose((y * z).sum(), (x * back).sum(), rtol=1e-12)
