"""The one-pass runner of fused pointwise regions against its numpy reference: bit for bit,
in place and aside, with infinities, NaN and signed zeros in the input, on planes longer than a
chunk, shorter ones (grouped into one chunk) and one-element planes (squeeze-excite's gate)."""
from __future__ import annotations

import numpy as np
import pytest

from flowgrad.kernels import pointwise as K

from .conftest import assert_same_bits

KERNELS = ["run_region"]


def _program_inputs(dtype, seed=0, planes=6, length=700):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((planes, length)).astype(dtype) * 4
    x.reshape(-1)[:5] = [0.0, -0.0, np.inf, -np.inf, np.nan]
    f0 = rng.standard_normal((planes, length)).astype(dtype)
    f1 = (rng.uniform(0.5, 2.0, (planes, length)) * rng.choice([-1, 1], (planes, length))
          ).astype(dtype)
    scalars = rng.standard_normal((planes, 4)).astype(dtype)
    scalars[:, 3] = np.abs(scalars[:, 3]) + 0.5
    return x, f0, f1, scalars


P = K
PROGRAMS = {
    "hard_swish": ([(P.LOAD_X, 0, 0), (P.LOAD_R, 1, 0), (P.ADD_S, 1, 0), (P.CLIP_S, 1, 1),
                    (P.MUL_R, 0, 1), (P.DIV_S, 0, 3)], 2, 0),
    "every_op": ([(P.LOAD_X, 0, 0), (P.LOAD_F, 1, 0), (P.ADD_R, 1, 0), (P.LOAD_F, 2, 1),
                  (P.DIV_R, 1, 2), (P.SUB_S, 1, 0), (P.MUL_S, 1, 1), (P.MAX_S, 1, 2),
                  (P.LOAD_S, 2, 3), (P.SUB_R, 2, 0), (P.SIGMOID, 2, 0), (P.MUL_R, 1, 2),
                  (P.TANH, 1, 0), (P.ADD_S, 1, 2), (P.DIV_S, 1, 3)], 3, 1),
}


@pytest.mark.parametrize("length", [700, 7, 1])    # chunks of a plane; groups of planes
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_the_compiled_runner_matches_its_reference(name, dtype, length):
    code, registers, result = PROGRAMS[name]
    code = np.asarray(code, np.int64)
    x, f0, f1, scalars = _program_inputs(dtype, planes=150, length=length)
    ref = np.empty_like(x)
    with np.errstate(all="ignore"):          # (the inf and nan put in x)
        K.run_region.reference(code, scalars, x, f0, f1, ref, registers, result)
    got = x.copy()
    K.run_region.compiled(code, scalars, got, f0, f1, got, registers, result)     # in place
    np.testing.assert_array_equal(got, ref)
    aside = np.empty_like(x)
    K.run_region.compiled(code, scalars, x, f0, f1, aside, registers, result)
    np.testing.assert_array_equal(aside, ref)


@pytest.mark.parametrize("length", [700, 7, 1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_by_a_scalar_gives_numpy_s_bits(dtype, length):
    """A ReLU-like region (``max`` by a per-plane scalar) bit for bit, signed zeros and NaN
    payloads included, whatever the scalar: +0 (ReLU), -0, NaN, and values that the input ties
    with (the compiled runner takes a vectorised loop for some scalars, an exact one for
    others)."""
    code = np.asarray([(P.LOAD_X, 0, 0), (P.MAX_S, 0, 0)], np.int64)
    x, f0, f1, scalars = _program_inputs(dtype, planes=8, length=length)
    bits = np.dtype(dtype).str.replace("f", "u")
    nan = (np.array([np.nan], dtype).view(bits) | 3).view(dtype)[0]     # another payload
    scalars[:, 0] = [0.0, -0.0, np.nan, 1.5, -1.5, np.inf, -np.inf, 0.0]
    for p in range(8):
        x[p, :min(length, 6)] = [-0.0, 0.0, nan, scalars[p, 0], -np.inf, np.inf][:length]
    want = np.empty_like(x)
    K.run_region.reference(code, scalars, x, f0, f1, want, 1, 0)
    got = x.copy()
    K.run_region.compiled(code, scalars, got, f0, f1, got, 1, 0)          # in place
    assert_same_bits(got, want)
    aside = np.empty_like(x)
    K.run_region.compiled(code, scalars, x, f0, f1, aside, 1, 0)
    assert_same_bits(aside, want)
