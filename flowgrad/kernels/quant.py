"""The uint8 quantization of a tensor (dynamic quantization's second pass).

Why: a dynamically quantized model (onnxruntime's ``quantize_dynamic``) quantizes every
activation before each integer product.  After its range (numpy's vectorised minimum and
maximum), numpy takes five passes for it — a division, a rounding, an addition, a clip, a
cast — each with its temporary; here it is one read and one byte written per element.

The arithmetic is the ops' (:mod:`flowgrad.ops.quant`, onnxruntime's MLAS): the division in
float32, rounding half to even, then the zero point added and the result saturated to
[0, 255].  A NaN quantizes to 0 (what numpy's cast gives on x86, made explicit here).
"""
from __future__ import annotations

import numpy as np

from ._jit import kernel

__all__ = ["quantize_u8"]


def _quantize_u8_reference(x, scale, zero_point, out):
    with np.errstate(invalid="ignore"):
        v = np.clip(np.rint(x.astype(np.float32) / scale) + zero_point, 0, 255)
    out[...] = np.where(np.isnan(v), 0, v).astype(np.uint8)


@kernel(_quantize_u8_reference)
def quantize_u8(x, scale, zero_point, out):
    """out = saturate(round_half_even(x / scale) + zero_point) as uint8, over the flat float32
    ``x``; ``scale`` and ``zero_point`` are float32 scalars."""
    for i in range(x.size):
        v = np.rint(x[i] / scale) + zero_point
        v = np.float32(255) if v > 255 else v
        v = np.float32(0) if not v >= 0 else v           # (NaN included)
        out[i] = np.uint8(v)
