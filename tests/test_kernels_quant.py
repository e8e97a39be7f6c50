"""The dynamic-quantization kernel against its numpy reference: ties, saturation, non-finite
values, every zero point's edge."""
from __future__ import annotations

import numpy as np
import pytest

from flowgrad.kernels import quant

KERNELS = ["quantize_u8"]


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
