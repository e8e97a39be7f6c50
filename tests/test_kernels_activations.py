"""The activation and row kernels (flowgrad.kernels.activations, .rows) against their numpy
references, and the ops that run them.

Each kernel's compiled loop (``kernel.compiled``) is compared with its reference
(``kernel.reference``) over a grid: empty, one element, odd sizes, wide and huge values, ±0,
±inf and nan, float32 and float64, rows of length 1.  The references compute in float64 and
round once, as the kernels do, so the tolerances are those of the approximations, stated per
dtype below:

* float32: 2 ulp of the result (1 for the rounding, 1 for the approximation's error of at most
  ~2e-10 relative), plus what each kernel's own note adds (exact gelu's rational erf);
* float64: 8 ulp of the result (the exp/expm1 polynomials are within 1 ulp; a kernel chains
  two or three of them), plus an absolute term where a formula cancels in both forms
  (``1 + erf`` for x << 0, ``y·gy − y·Σ`` for softmax's backward).
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from flowgrad import kernels
from flowgrad.backend import DEFAULT
from flowgrad.plan.fusion import Placed
from flowgrad.op import Context
from flowgrad.plugins import make_registry

from .conftest import assert_same_bits

#: the kernels this file compares with their references (the meta-test checks every kernel in
#: flowgrad.kernels.REGISTRY is listed by some test file)
KERNELS = ["erf", "erf_backward", "gelu", "gelu_backward", "gelu_tanh", "gelu_tanh_backward",
           "relu", "relu_backward", "tanh", "tanh_backward", "sigmoid", "sigmoid_backward", "softplus",
           "softplus_backward", "elu", "elu_backward", "softsign", "softsign_backward",
           "hard_swish", "hard_swish_backward",
           "softmax", "softmax_backward", "log_softmax", "log_softmax_backward",
           "layer_norm", "layer_norm_backward"]

REGISTRY = make_registry()
DTYPES = [np.float32, np.float64]

# -- inputs -----------------------------------------------------------------------------------

SPECIAL = [0.0, -0.0, 1e-300, -1e-300, 1e-30, -1e-30, 1e-8, -1e-8, 0.5, -0.5, 1.0, -1.0, 2.9,
           -2.9, 3.0, -3.0, 4.4, -4.4, 4.6, -4.6, 6.5, -6.5, 20.0, -20.0, 40.0, -40.0, 88.0,
           -88.0, 104.0, -104.0, 709.0, -709.0, 745.0, -745.0, 1e4, -1e4, 1e30, -1e30, np.inf,
           -np.inf, np.nan]


def _values(size: int, dtype, seed: int) -> np.ndarray:
    """``size`` values: the special ones first, then normal, wide and log-spread ones."""
    rng = np.random.default_rng(seed)
    body = np.concatenate([rng.standard_normal(size), rng.uniform(-12, 12, size),
                           np.exp(rng.uniform(-40, 8, size)) * rng.choice([-1, 1], size)])
    with np.errstate(over="ignore"):
        values = np.concatenate([SPECIAL, body]).astype(dtype)
    return values[:size] if size <= len(SPECIAL) else np.concatenate(
        [values[:len(SPECIAL)], rng.permutation(values[len(SPECIAL):])[:size - len(SPECIAL)]])


SIZES = [0, 1, 7, len(SPECIAL), 1001]


def _ulps(dtype) -> float:
    return 2.0 if dtype == np.float32 else 8.0


def _check(got, want, dtype, atol=0.0, what=""):
    """|got − want| <= ulps·spacing(want) + atol elementwise; nan where want is nan."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan, err_msg=f"{what}: nan positions")
    inf = np.isinf(want)
    np.testing.assert_array_equal(got[inf], want[inf], err_msg=f"{what}: infinities")
    finite = ~nan & ~inf
    g, w = got[finite], want[finite]
    spacing = np.spacing(np.abs(w).astype(dtype)).astype(np.float64)
    tol = _ulps(dtype) * spacing + np.broadcast_to(atol, want.shape)[finite]
    bad = np.abs(g - w) > tol
    assert not bad.any(), (f"{what}: {bad.sum()} of {bad.size} beyond tolerance, e.g. "
                           f"got {g[bad][:4]} want {w[bad][:4]}")


def _run(k, which, *args):
    """The kernel's compiled loop or reference on ``args``; the output is the last argument.
    (numpy warns about what the grid holds on purpose: inf − inf, empty rows.)"""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        getattr(kernels.REGISTRY[k], which)(*args)
    return args[-1]


# -- elementwise kernels ----------------------------------------------------------------------

UNARY = {  # name -> (extra scalar args, absolute tolerance as a function of x, by dtype)
    "erf": ((), {np.float32: lambda x: 0.0, np.float64: lambda x: 4e-15}),
    "gelu": ((), {np.float32: lambda x: 1e-10 * np.abs(x), np.float64: lambda x: 4e-15 * np.abs(x)}),
    "gelu_tanh": ((), None),
    "relu": ((), None),
    "tanh": ((), None),
    "sigmoid": ((), None),
    "softplus": ((), None),
    "elu": ((1.0, 1.0), None),
    "softsign": ((), None),
    "hard_swish": ((), None),
}
# erf, float64: the reference (numpy series and continued fraction) is good to 4e-15, libm to an
# ulp.  Exact gelu: the float32 rational erf has an absolute error of ~4e-11 (see the kernel's
# note), and in float64 the reference's erf error shows through ``1 + erf(x/√2)``.

BACKWARD = {  # name -> (saved input: "x" or "y" = forward output, extra scalars, atol factor)
    "erf_backward": ("x", (), 0.0),
    "gelu_backward": ("x", (), None),
    "gelu_tanh_backward": ("x", (), None),
    "relu_backward": ("y", (), None),
    "tanh_backward": ("y", (), None),
    "sigmoid_backward": ("y", (), None),
    "softplus_backward": ("x", (), None),
    "elu_backward": ("x", (1.0, 1.0), None),
    "softsign_backward": ("x", (), None),
    "hard_swish_backward": ("x", (), None),
}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(UNARY))
def test_elementwise_kernel_matches_its_reference(name, dtype, size):
    extra, atol = UNARY[name]
    x = _values(size, dtype, seed=size)
    with np.errstate(all="ignore"):
        want = _run(name, "reference", x, *extra, np.empty_like(x))
    got = _run(name, "compiled", x, *extra, np.empty_like(x))
    assert got.dtype == dtype
    _check(got, want, dtype, 0.0 if atol is None else atol[dtype](x), f"{name} {dtype.__name__}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(UNARY))
def test_elementwise_kernel_in_place_gives_the_same_bits(name, dtype):
    extra, _ = UNARY[name]
    x = _values(1001, dtype, seed=3)
    out = _run(name, "compiled", x, *extra, np.empty_like(x))
    inplace = x.copy()
    _run(name, "compiled", inplace, *extra, inplace)
    np.testing.assert_array_equal(inplace, out)


@pytest.mark.parametrize("alpha,scale", [(1.0, 1.0), (0.5, 1.0), (1.67326319217681884765625,
                                                                  1.05070102214813232421875)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_elu_kernels_take_alpha_and_the_selu_scale(alpha, scale, dtype):
    x = _values(1001, dtype, seed=5)
    gy = np.random.default_rng(0).standard_normal(x.shape).astype(dtype)
    with np.errstate(all="ignore"):
        _check(_run("elu", "compiled", x, alpha, scale, np.empty_like(x)),
               _run("elu", "reference", x, alpha, scale, np.empty_like(x)), dtype, what="elu")
        _check(_run("elu_backward", "compiled", x, gy, alpha, scale, np.empty_like(x)),
               _run("elu_backward", "reference", x, gy, alpha, scale, np.empty_like(x)), dtype,
               what="elu_backward")


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(BACKWARD))
def test_backward_kernel_matches_its_reference(name, dtype, size):
    saved, extra, _ = BACKWARD[name]
    x = _values(size, dtype, seed=size + 1)
    if name == "relu_backward":           # the saved output: zeros and positive values
        x = np.maximum(x, 0)
    elif saved == "y":                    # tanh and sigmoid backward read the forward output
        forward = name[:-len("_backward")]
        x = _run(forward, "reference", x, np.empty_like(x))
    gy = np.random.default_rng(size).standard_normal(size).astype(dtype)
    with np.errstate(all="ignore"):
        want = _run(name, "reference", x, gy, *extra, np.empty_like(x))
    got = _run(name, "compiled", x, gy, *extra, np.empty_like(x))
    atol = 0.0
    if name == "gelu_backward":        # Φ(x) from the rational erf (float32), 1 + erf (float64)
        atol = (1e-10 if dtype == np.float32 else 4e-15) * np.abs(gy)
    if name == "gelu_tanh_backward":   # σ + 2x·u'·σ·(1 − σ): the sum cancels near x = −0.75
        atol = np.spacing(np.ones((), dtype)) * np.abs(gy)
    _check(got, want, dtype, atol, f"{name} {dtype.__name__}")


def test_float32_erf_is_within_one_ulp_of_the_correctly_rounded_value():
    x = np.concatenate([np.linspace(-6, 6, 200001), np.geomspace(1e-38, 6, 20001),
                        -np.geomspace(1e-38, 6, 20001)]).astype(np.float32)
    got = _run("erf", "compiled", x, np.empty_like(x))
    want = np.array([math.erf(v) for v in x.astype(np.float64)]).astype(np.float32)
    ulps = np.abs(got.astype(np.float64) - want) / np.spacing(np.abs(want))
    assert ulps.max() <= 1.0
    assert np.mean(got != want) < 0.01          # nearly always correctly rounded


def test_float32_sigmoid_is_within_one_ulp_of_the_exact_value():
    """The float32 loop computes in float32 (``_sigmoid32``): within 1 ulp of the exact σ
    (float64 arithmetic, not yet rounded) over the whole range — both tails, the subnormal
    results below z = -87, the cut to 0 at -104 — which a single float32 e^-|z| misses
    (2.3 ulp): the correction for the rounding of 1 + e and of the quotient is what keeps it."""
    rng = np.random.default_rng(11)
    x = np.concatenate([np.linspace(-110, 100, 400001), rng.standard_normal(200000) * 4,
                        -np.geomspace(1e-38, 110, 100001), np.geomspace(1e-38, 100, 100001),
                        [-103.97, -103.98, -104.0, -87.33, -88.72]]).astype(np.float32)
    got = _run("sigmoid", "compiled", x, np.empty_like(x))
    z = x.astype(np.float64)
    exact = np.where(z >= 0, 1 / (1 + np.exp(-z)), np.exp(z) / (1 + np.exp(z)))
    ulps = np.abs(got.astype(np.float64) - exact) / np.spacing(np.abs(exact).astype(np.float32))
    assert ulps.max() <= 1.0, f"{ulps.max():.3f} ulp at z = {x[ulps.argmax()]}"


def test_float64_erf_is_libm_erf():
    x = _values(1001, np.float64, seed=9)
    got = _run("erf", "compiled", x, np.empty_like(x))
    want = np.array([math.erf(v) for v in x])
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_saturating_kernels_are_exact_at_the_ends(dtype):
    x = np.array([-np.inf, -1e30, -800.0, 800.0, 1e30, np.inf], dtype)
    out = np.empty_like(x)
    np.testing.assert_array_equal(_run("erf", "compiled", x, out), [-1, -1, -1, 1, 1, 1])
    np.testing.assert_array_equal(_run("tanh", "compiled", x, out), [-1, -1, -1, 1, 1, 1])
    np.testing.assert_array_equal(_run("sigmoid", "compiled", x, out), [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(_run("softplus", "compiled", x, out)[1:-1],
                                  [0, 0, 800, x[4]])
    np.testing.assert_array_equal(_run("gelu", "compiled", x, out)[1:], [0, 0, 800, x[4],
                                                                          np.inf])


# -- row kernels ------------------------------------------------------------------------------

ROW_SHAPES = [(0, 5), (3, 0), (1, 1), (5, 1), (1, 7), (7, 33), (64, 64), (4, 1000)]


def _rows(shape, dtype, seed, scale=4.0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * scale).astype(dtype)


def _with_specials(x):
    """Rows holding ±inf, nan, huge and tiny values (when there is room)."""
    x = x.copy()
    if x.shape[0] >= 7 and x.shape[1] >= 3:
        x[0, 0] = np.inf
        x[1, 1] = -np.inf
        x[2, :] = -np.inf
        x[3, 2] = np.nan
        x[4, 0] = 1e30 if x.dtype == np.float64 else 1e30
        x[5, :] = 3e4
        x[6, 1] = -1e4
    return x


@pytest.mark.parametrize("shape", ROW_SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_row_kernel_matches_its_reference(name, dtype, shape):
    x = _with_specials(_rows(shape, dtype, seed=len(shape) + shape[0]))
    with np.errstate(all="ignore"):
        want = _run(name, "reference", x, np.empty_like(x))
    got = _run(name, "compiled", x, np.empty_like(x))
    # the row sums round differently (four running partial sums against numpy's pairwise):
    # a relative difference of ~√n ulp in float64, lost in float32's rounding
    atol = 2 * math.sqrt(shape[1]) * np.spacing(np.abs(want.astype(np.float64)))
    atol[~np.isfinite(atol)] = 0.0
    if name == "log_softmax":           # x − (max + log Σ): cancels where the two are close
        with np.errstate(invalid="ignore"):
            atol = 4 * np.spacing(np.abs(x).max(axis=-1, keepdims=True, initial=0) + 8.0)
        atol = np.broadcast_to(np.nan_to_num(atol, posinf=0.0), x.shape).astype(np.float64)
        atol = atol + 2 * math.sqrt(shape[1]) * np.spacing(1.0)
    _check(got, want, dtype, atol, name)
    inplace = x.copy()
    _run(name, "compiled", inplace, inplace)
    np.testing.assert_array_equal(inplace, got)      # out may be x itself


@pytest.mark.parametrize("shape", ROW_SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["softmax_backward", "log_softmax_backward"])
def test_row_backward_kernel_matches_its_reference(name, dtype, shape):
    x = _rows(shape, dtype, seed=shape[0] + 2)
    y = _run(name[:-len("_backward")], "reference", x, np.empty_like(x))
    gy = _rows(shape, dtype, seed=shape[1] + 3, scale=1.0)
    want = _run(name, "reference", y, gy, np.empty_like(x))
    got = _run(name, "compiled", y, gy, np.empty_like(x))
    # both subtract a row sum from each term: absolute error relative to the row's scale
    scale = np.abs(gy).sum(axis=-1, keepdims=True) * np.abs(np.exp(y) if name.startswith(
        "log") else y).max(axis=-1, keepdims=True, initial=0) + np.abs(gy)
    _check(got, want, dtype, 4 * np.spacing(np.ones((), dtype)) * scale, name)


@pytest.mark.parametrize("shape", ROW_SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_norm_kernels_match_their_references(dtype, shape):
    rows, n = shape
    rng = np.random.default_rng(rows + n)
    x = (rng.standard_normal(shape) * 3 + rng.uniform(-50, 50, (rows, 1))).astype(dtype)
    scale, bias = rng.uniform(0.5, 1.5, n), rng.standard_normal(n)
    outs = {}
    for which in ("compiled", "reference"):
        y, mean, inv = np.empty_like(x), np.empty(rows), np.empty(rows)
        with np.errstate(all="ignore"):
            _run("layer_norm", which, x, scale, bias, 1e-5, y, mean, inv)
        outs[which] = y, mean, inv
    (y, mean, inv), (y_ref, mean_ref, inv_ref) = outs["compiled"], outs["reference"]
    np.testing.assert_allclose(mean, mean_ref, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(inv, inv_ref, rtol=1e-12)
    _check(y, y_ref, dtype, 1e-12 * (np.abs(bias) + 8 * scale), "layer_norm")
    inplace = x.copy()
    _run("layer_norm", "compiled", inplace, scale, bias, 1e-5, inplace, mean, inv)
    np.testing.assert_array_equal(inplace, y)                      # out may be x itself

    gy = rng.standard_normal(shape).astype(dtype)
    grads = {}
    for which in ("compiled", "reference"):
        gx, gscale, gbias = np.empty_like(x), np.empty(n), np.empty(n)
        _run("layer_norm_backward", which, x, mean_ref, inv_ref, scale, gy, gx, gscale, gbias)
        grads[which] = gx, gscale, gbias
    (gx, gscale, gbias), (gx_ref, gscale_ref, gbias_ref) = grads["compiled"], grads["reference"]
    row_scale = np.abs(gy * scale).sum(axis=-1, keepdims=True) * inv_ref[:, None] / max(n, 1)
    _check(gx, gx_ref, dtype, 1e-12 * (row_scale + np.abs(gy) * inv_ref[:, None]),
           "layer_norm_backward gx")
    np.testing.assert_allclose(gscale, gscale_ref, rtol=1e-12,
                               atol=1e-12 * np.abs(gy).sum(axis=0).max(initial=0))
    np.testing.assert_allclose(gbias, gbias_ref, rtol=1e-12,
                               atol=1e-12 * np.abs(gy).sum(axis=0).max(initial=0))


def test_row_kernels_give_a_constant_row_zero_variance_and_uniform_softmax():
    x = np.full((2, 6), 3.0, np.float32)
    y, mean, inv = np.empty_like(x), np.empty(2), np.empty(2)
    kernels.layer_norm.compiled(x, np.ones(6), np.zeros(6), 1e-5, y, mean, inv)
    np.testing.assert_array_equal(y, 0)
    np.testing.assert_allclose(inv, 1 / math.sqrt(1e-5))
    p = np.empty_like(x)
    kernels.softmax.compiled(x, p)
    np.testing.assert_allclose(p, 1 / 6, rtol=1e-7)


# -- the ops on the kernels -------------------------------------------------------------------

def _op(type_, **attrs):
    return REGISTRY.get(type_)(**attrs)


@pytest.mark.parametrize("type_", ["erf", "gelu", "tanh", "sigmoid", "softplus", "elu", "selu",
                                   "softsign", "hard_swish"])
def test_ops_keep_numpy_float_dtypes_for_other_inputs(type_):
    for x, dtype in [(np.arange(-3, 4), np.float64), (np.arange(-3, 4, dtype=np.int16),
                                                      np.float32),
                     (np.linspace(-3, 3, 7).astype(np.float16), np.float16)]:
        ctx = Context()
        (y,) = _op(type_).forward(ctx, x)
        assert y.dtype == dtype, (type_, x.dtype, y.dtype)
        (want,) = _op(type_).forward(Context(), x.astype(np.float64))
        np.testing.assert_allclose(y, want.astype(dtype), rtol=2e-3 if dtype == np.float16
                                   else 1e-6, atol=1e-3 if dtype == np.float16 else 1e-7)
        ctx.needs_input_grad = (True,)
        (g,) = _op(type_).backward(ctx, np.ones_like(y))
        assert g.shape == x.shape and g.dtype == dtype


@pytest.mark.parametrize("type_", ["gelu", "tanh", "softmax", "log_softmax"])
def test_ops_take_non_contiguous_inputs(type_):
    x = np.random.default_rng(0).standard_normal((6, 8)).astype(np.float32)
    view = x.T                                      # Fortran order
    (y,) = _op(type_).forward(Context(), view)
    (want,) = _op(type_).forward(Context(), np.ascontiguousarray(view))
    np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
@pytest.mark.parametrize("type_", ["softmax", "log_softmax"])
def test_softmax_ops_along_any_axis_match_the_formula(type_, axis):
    x = np.random.default_rng(1).standard_normal((3, 4, 5)) * 3
    ctx = Context()
    (y,) = _op(type_, axis=axis).forward(ctx, x)
    shifted = x - x.max(axis=axis, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
    np.testing.assert_allclose(y, log_p if type_ == "log_softmax" else np.exp(log_p),
                               rtol=1e-13, atol=1e-14)
    gy = np.random.default_rng(2).standard_normal(x.shape)
    ctx.needs_input_grad = (True,)
    (gx,) = _op(type_, axis=axis).backward(ctx, gy)
    p = np.exp(log_p)
    want = gy - p * gy.sum(axis=axis, keepdims=True) if type_ == "log_softmax" else \
        p * gy - p * (p * gy).sum(axis=axis, keepdims=True)
    np.testing.assert_allclose(gx, want, rtol=1e-12, atol=1e-14)


def test_layer_norm_op_matches_the_numpy_formula_over_two_axes_with_broadcast_scale():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    scale, bias = rng.standard_normal((1, 4)), rng.standard_normal(4).astype(np.float32)
    ctx = Context()
    (y,) = _op("layer_norm", axis=1).forward(ctx, x, scale, bias)
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=(1, 2), keepdims=True)
    xhat = (x64 - mean) / np.sqrt(x64.var(axis=(1, 2), keepdims=True) + 1e-5)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, xhat * scale + bias, rtol=1e-6, atol=1e-6)
    ctx.needs_input_grad = (True, True, True)
    gy = rng.standard_normal(x.shape).astype(np.float32)
    gx, gscale, gbias = _op("layer_norm", axis=1).backward(ctx, gy)
    assert (gx.dtype, gscale.dtype, gbias.dtype) == (np.float32, np.float64, np.float32)
    assert gscale.shape == (1, 4) and gbias.shape == (4,)
    np.testing.assert_allclose(gscale, (gy * xhat).sum(axis=(0, 1))[None], rtol=1e-5)
    np.testing.assert_allclose(gbias, gy.sum(axis=(0, 1)), rtol=1e-5)


@pytest.mark.parametrize("type_", ["gelu", "sigmoid", "tanh", "elu", "layer_norm"])
def test_ops_run_in_place_through_a_placed_output(type_):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 6)).astype(np.float32)
    inputs = [x] + ([np.ones(6), np.zeros(6)] if type_ == "layer_norm" else [])
    (want,) = _op(type_).forward(Context(grad_enabled=False), *inputs)
    placed = x.copy()
    (y,) = _op(type_).forward(Context(grad_enabled=False, backend=Placed(DEFAULT, placed)),
                              placed, *inputs[1:])
    assert y is placed
    np.testing.assert_array_equal(y, want)


@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_gives_numpy_s_bits(dtype, in_place):
    """max(x, 0) bit for bit: -0 gives +0, a NaN stays the same NaN (its payload too), in
    place (the plan's own case) as well as into another array."""
    x = _values(2001, dtype, seed=13)
    bits = np.dtype(dtype).str.replace("f", "u")
    payload = np.array([np.nan], dtype).view(bits) | 5          # a quiet NaN of another payload
    x[:6] = [-0.0, 0.0, np.nan, -np.nan, -np.inf, np.inf]
    x[6:7] = payload.view(dtype)
    want = np.maximum(x, 0)
    if in_place:
        got = x.copy()
        _run("relu", "compiled", got, got)
    else:
        got = _run("relu", "compiled", x, np.empty_like(x))
    assert_same_bits(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_backward_gives_numpy_s_bits(dtype):
    """gy · [y > 0] bit for bit: signed zeros and nan where gy is negative or not finite."""
    y = np.maximum(_values(2001, dtype, seed=11), 0)
    gy = _values(2001, dtype, seed=12)[::-1].copy()
    want = _run("relu_backward", "reference", y, gy, np.empty_like(y))
    got = _run("relu_backward", "compiled", y, gy, np.empty_like(y))
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(want))
