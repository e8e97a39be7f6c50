"""The quantization kernels against their numpy references: the dynamic quantization (ties,
saturation, non-finite values, every zero point's edge) and the exact integer product (both
8-bit types on each side, extreme values, zero points per tensor and per column, inner sizes
around the vector width)."""
from __future__ import annotations

import numpy as np
import pytest

from flowgrad.kernels import quant

KERNELS = ["quantize_u8", "int_matmul"]


@pytest.mark.parametrize("size", [0, 1, 7, 64, 1001])
@pytest.mark.parametrize("scale,zero_point", [(1.0, 0.0), (0.5, 128.0), (0.0173, 255.0),
                                              (3.0, 0.0), (1e-30, 7.0)])
def test_quantize_u8_matches_its_reference(size, scale, zero_point):
    rng = np.random.default_rng(size)
    x = (rng.standard_normal(size) * 100).astype(np.float32)
    if size >= 7:
        # exact ties after the division (x.5 steps), the saturation edges, non-finite values
        x[:6] = np.float32(scale) * np.array([0.5, 1.5, -0.5, 2.5, 1e6, -1e6], np.float32)
        x[6] = [np.nan, np.inf, -np.inf][size % 3]
    scale, zero_point = np.float32(scale), np.float32(zero_point)
    got = np.full(size, 77, np.uint8)
    want = np.full(size, 77, np.uint8)
    quant.quantize_u8.compiled(x, scale, zero_point, got)
    quant.quantize_u8.reference(x, scale, zero_point, want)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (1, 7, 3), (1, 64, 33), (2, 513, 17),
                                   (3, 1000, 5), (0, 16, 4), (2, 0, 3)])
@pytest.mark.parametrize("a_type,b_type", [("uint8", "int8"), ("uint8", "uint8"),
                                           ("int8", "int8"), ("int8", "uint8")])
def test_int_matmul_matches_its_reference(M, K, N, a_type, b_type):
    rng = np.random.default_rng(M * 1000 + K + N)
    lo_a, hi_a = np.iinfo(a_type).min, np.iinfo(a_type).max
    lo_b, hi_b = np.iinfo(b_type).min, np.iinfo(b_type).max
    a = rng.integers(lo_a, hi_a + 1, (M, K)).astype(a_type)
    bt = rng.integers(lo_b, hi_b + 1, (N, K)).astype(b_type)
    if M and K:
        a[0, :] = lo_a              # the largest shifted values: every product at its bound
    if N and K:
        bt[0, :] = hi_b
    for a_zp, b_zp in ((0, np.zeros(N, np.int32)),
                       (hi_a, np.full(N, lo_b, np.int32)),
                       (int(rng.integers(lo_a, hi_a + 1)),
                        rng.integers(lo_b, hi_b + 1, N).astype(np.int32))):
        got = np.full((M, N), 77, np.int32)
        want = np.full((M, N), 77, np.int32)
        quant.int_matmul.compiled(a, a_zp, bt, b_zp, got)
        quant.int_matmul.reference(a, a_zp, bt, b_zp, want)
        np.testing.assert_array_equal(got, want)
