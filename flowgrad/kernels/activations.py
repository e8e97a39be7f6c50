"""Transcendental activations as single-pass kernels, each beside its numpy reference.

Why: numpy computes ``gelu`` as a dozen passes over memory (a power, a product, an ``erf`` that
numpy does not have and that costs fifty more in its series form...), and its own ``exp``,
``expm1``, ``log1p`` and ``tanh`` are scalar loops on most CPUs (10-20 ns an element here).  A
kernel reads each input once, computes the whole expression in registers and writes once.

How they stay fast and accurate: libm's functions are scalar calls that stop LLVM vectorising a
loop, so the functions are written here in arithmetic only, and LLVM runs four float64 lanes at
a time.  ``_exp`` / ``_expm1`` reduce ``y = k·ln2 + r`` with the round-to-nearest shifter
trick, take ``e^r - 1`` from its Taylor polynomial and build ``2^k`` from its bits; ``erf`` for
float32 is a (7, 7) rational function of x²; their polynomials are chains of exact fused
multiply-adds (``_fma``).  Everything is evaluated in float64 and rounded once on the store,
and each kernel has a loop per input dtype:

* float32 results are within 1 ulp of the correctly rounded value: the float32 loops use
  cheaper forms — ``_exp2_32`` (relative error 7e-9, an eighth of a float32 ulp),
  ``_expm1(·, True)`` (1e-9) — and the rational erf (7e-11); the sigmoid kernel's float32
  loop (SiLU's half: a tenth of a YOLO-style detector's time) runs in float32 arithmetic
  instead, twice the lanes, with a correction that keeps it within 1 ulp (``_sigmoid32``);
* float64 results are within a few ulp (measured: ``_exp`` 1, ``_expm1`` 2, tanh and the
  log1p of softplus 3); ``erf`` and exact ``gelu`` call libm's ``math.erf`` for float64.

Divisions are written ``np.divide(a, b)``: numba's ``a / b`` checks for a zero divisor (to
raise ZeroDivisionError), and that branch stops a loop from vectorising (3x slower here); the
ufunc form divides as IEEE does (±inf, nan), like numpy.

Kernels take C-contiguous 1-d arrays (callers pass ``a.reshape(-1)``) and write ``out``.  A
forward's ``out`` may be ``x`` itself (the plan runs elementwise ops in place when evaluating):
each element is read before it is written, and that case has its own loop (``_in_place``).
``relu`` is a kernel too: numpy's ``maximum`` keeps NaN (and picks ``0`` over ``-0``) in a
loop that does not vectorise here (800k float32 values: 0.57 ms, the kernel 0.08-0.14 ms).
``leaky_relu``, ``clip`` and the hard sigmoid stay numpy: one ufunc pass is already one pass over
memory.
"""
from __future__ import annotations

import math

import numpy as np

from ._jit import MODE, jit, kernel

__all__ = ["erf", "erf_backward", "gelu", "gelu_backward", "gelu_tanh", "gelu_tanh_backward",
           "relu", "relu_backward", "tanh", "tanh_backward", "sigmoid", "sigmoid_backward", "softplus",
           "softplus_backward", "elu", "elu_backward", "softsign", "softsign_backward",
           "hard_swish", "hard_swish_backward"]

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
_INV_SQRT_PI = 1.0 / math.sqrt(math.pi)
_GELU_CUBIC = 0.044715


# -- vectorisable float64 math ----------------------------------------------------------------
# Helpers called from kernels: only arithmetic, comparisons and bit moves, so that LLVM can
# vectorise the loops that inline them.  Range checks are selects, never branches out of a loop.
# A helper taking ``f32`` is always called with a literal True or False, which LLVM folds after
# inlining (a runtime flag would not be hoisted out of the loop: measured 8x slower).

_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01       # ln 2 split so that k * _LN2_HI is exact (fdlibm)
_LN2_LO = 1.90821492927058770002e-10
_SHIFTER = 6755399441055744.0               # 1.5 * 2**52: adding it rounds to an integer
_SHIFTER_BITS = int(np.float64(_SHIFTER).view(np.int64))
_E2, _E3, _E4, _E5, _E6, _E7, _E8, _E9, _E10, _E11, _E12, _E13 = (
    1.0 / math.factorial(n) for n in range(2, 14))
_B1, _B2, _B3, _B4, _B5, _B6, _B7 = (math.log(2.0) ** n / math.factorial(n) for n in range(1, 8))


# Fused multiply-adds, written out: a·b + c rounded once, as IEEE 754 defines fma, so the same
# bits on every machine (a CPU without FMA gets libm's exact fma) — unlike fastmath's
# contraction, which lets the compiler decide.  Polynomials in Horner form are chains of them:
# half the instructions (float32 gelu: 1.4 -> 0.8 ms for 524k values here, its backward 2.2 ->
# 1.5 ms).
if MODE == "numba":
    from llvmlite import ir
    from numba.core import types
    from numba.extending import intrinsic

    def _fma_of(llvm_type, numba_type):
        """LLVM's ``fma`` intrinsic for one float type, as a numba intrinsic."""
        @intrinsic
        def fma(typingctx, a, b, c):
            def codegen(context, builder, signature, args):
                fn = builder.module.declare_intrinsic(
                    "llvm.fma", [llvm_type], ir.FunctionType(llvm_type, [llvm_type] * 3))
                return builder.call(fn, args)
            return numba_type(numba_type, numba_type, numba_type), codegen
        return fma

    _fma_intrinsic = _fma_of(ir.DoubleType(), types.float64)
    _fma32_intrinsic = _fma_of(ir.FloatType(), types.float32)

    @jit
    def _fma(a, b, c):
        """a·b + c with one rounding."""
        return _fma_intrinsic(a, b, c)

    @jit
    def _fma32(a, b, c):
        """a·b + c in float32 with one rounding."""
        return _fma32_intrinsic(a, b, c)
else:
    def _fma(a, b, c):
        """a·b + c (the numpy reference mode: two roundings; no exact fma in Python < 3.13)."""
        return a * b + c

    def _fma32(a, b, c):
        return np.float32(a * b + c)


@jit
def _pow2(k):
    """2**k for an integer k in [-1022, 1023], from its exponent bits."""
    return np.int64((k + 1023) << 52).view(np.float64)


@jit
def _reduce(y):
    """``(e^r - 1, k)`` with ``y = k·ln2 + r``, |r| <= ln2/2, for y clamped to [-746, 710].

    The Taylor polynomial's remainder r^14/14! is below 5e-18: e^r - 1 is good to an ulp.
    """
    y = -746.0 if y < -746.0 else y
    y = 710.0 if y > 710.0 else y
    t = y * _LOG2E + _SHIFTER
    n = t - _SHIFTER
    r = (y - n * _LN2_HI) - n * _LN2_LO
    p = _fma(r, _fma(r, _fma(r, _fma(r, _fma(r, _fma(r, _E13, _E12), _E11), _E10), _E9), _E8),
             _E7)
    p = _fma(r, _fma(r, _fma(r, _fma(r, _fma(r, p, _E6), _E5), _E4), _E3), _E2)
    return _fma(r * r, p, r), np.float64(t).view(np.int64) - _SHIFTER_BITS


@jit
def _reduce32(y):
    """:func:`_reduce` to float32's needs, for y in [-104, 89] (clamped; beyond, e^y rounds to
    0 or inf in float32): a degree-8 polynomial, remainder r^9/9! below 2e-10."""
    y = -104.0 if y < -104.0 else y
    y = 89.0 if y > 89.0 else y
    t = y * _LOG2E + _SHIFTER
    n = t - _SHIFTER
    r = (y - n * _LN2_HI) - n * _LN2_LO
    p = _fma(r, _fma(r, _fma(r, _fma(r, _fma(r, _fma(r, _E8, _E7), _E6), _E5), _E4), _E3), _E2)
    return _fma(r * r, p, r), np.float64(t).view(np.int64) - _SHIFTER_BITS


@jit
def _exp2_32(y):
    """e^y for y <= 89, to float32's needs: y·log2(e) = n + f, |f| <= ½, and 2^f
    from its degree-7 Taylor polynomial (relative error 7e-9, an eighth of a float32 ulp):
    half the work of :func:`_exp`.  Exactly 0 below y = -104 (where e^y rounds to 0 in
    float32: so that x·e^y stays right for huge x too); nan stays nan."""
    low = y < -104.0
    t = (-104.0 if low else y) * _LOG2E
    s = t + _SHIFTER
    f = t - (s - _SHIFTER)
    p = _fma(f, _fma(f, _fma(f, _fma(f, _fma(f, _fma(f, _fma(f, _B7, _B6), _B5), _B4), _B3),
                                     _B2), _B1), 1.0)
    e = p * _pow2(np.float64(s).view(np.int64) - _SHIFTER_BITS)
    return 0.0 if low else e


@jit
def _exp(y, f32):
    """e^y.  float64 (f32 False): any y (inf, 0 and subnormal results included), within
    1 ulp.  f32: :func:`_exp2_32`, and inf above y = 89."""
    if f32:
        return math.inf if y > 89.0 else _exp2_32(89.0 if y > 89.0 else y)
    q, k = _reduce(y)
    half = k >> 1                            # two factors keep 2^k representable in each
    e = _fma(_pow2(half), q, _pow2(half)) * _pow2(k - half)
    return y if y != y else e


@jit
def _exp_neg(y, f32):
    """e^y for y <= 0 (or nan), the case of every kernel here: as :func:`_exp`, without the
    overflow select in float32."""
    return _exp2_32(y) if f32 else _exp(y, False)


@jit
def _expm1(y, f32):
    """e^y - 1 without cancellation near 0: 2^k (e^r - 1) + (2^k - 1).  y <= 709."""
    y = -60.0 if y < -60.0 else y            # e^-60 - 1 is -1 in float64
    q, k = _reduce32(y) if f32 else _reduce(y)
    s = _pow2(k)
    e = _fma(s, q, s - 1.0)
    if f32:
        e = math.inf if y > 89.0 else e
    return y if y != y else e


_L1, _L2, _L3, _L4, _L5, _L6, _L7, _L8, _L9, _L10, _L11, _L12, _L13, _L14, _L15, _L16 = (
    1.0 / (2 * n + 1) for n in range(1, 17))


@jit
def _log1p_unit(e, f32):
    """log(1 + e) for e in [0, 1], as 2·atanh(e / (2 + e)): no cancellation near 0.

    s = e / (2 + e) <= 1/3, so the odd series Σ s^(2n+1)/(2n+1) converges like 9^-n: 17
    terms reach 1e-17, 9 terms 1e-10 (f32).
    """
    s = np.divide(e, 2.0 + e)
    z = s * s
    p = _L9 if f32 else _fma(z, _fma(z, _fma(z, _fma(z, _fma(z, _fma(z, _fma(
        z, _L16, _L15), _L14), _L13), _L12), _L11), _L10), _L9)
    p = _fma(z, _fma(z, _fma(z, _fma(z, _fma(z, _fma(z, _fma(z, _fma(
        z, p, _L8), _L7), _L6), _L5), _L4), _L3), _L2), _L1)
    return 2.0 * s * _fma(z, p, 1.0)


@jit
def _sigmoid(z, f32):
    """1 / (1 + e^-z) from e = e^-|z|: both tails keep their relative precision."""
    e = _exp_neg(-abs(z), f32)
    r = np.divide(1.0, 1.0 + e)
    return r if z >= 0.0 else e * r


# float32 constants of _sigmoid32 (as float32 globals, so that numba keeps the arithmetic in
# float32): ln 2 split Cody-Waite style (k·_LN2_HI32 is exact for |k| <= 150: 9 significant
# bits), the shifter 1.5·2^23 and the minimax polynomial of (e^r - 1 - r) / r² on
# |r| <= ln2/2 (Cephes' expf)
_F1, _F0 = np.float32(1.0), np.float32(0.0)
_LOG2E32 = np.float32(_LOG2E)
_LN2_HI32, _LN2_LO32 = np.float32(0.693359375), np.float32(-2.12194440e-4)
_SHIFTER32 = np.float32(12582912.0)
_SHIFTER32_BITS = int(np.float32(12582912.0).view(np.int32))
_X0, _X1, _X2, _X3, _X4, _X5 = (np.float32(v) for v in (
    1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1,
    5.0000001201e-1))


@jit
def _sigmoid32(z):
    """σ(z) for float32 ``z``, in float32 arithmetic: eight lanes where float64 runs four
    (~1.6x the float64 form on cached data), within 1 ulp of the correctly rounded value
    (measured: 0.99 at most over 6 million values, subnormal results included).

    How: e = e^-|z| = 2^k (1 + u) kept as a float32 pair (hi, lo) — a single float32 would
    lose up to 1 ulp before the division (2.3 ulp in the end) — and σ = n / (1 + e), with
    n = 1 or e, corrected once for the rounding of 1 + e and of the quotient:
    q + (n - q·d - q·c) / d, the residual n - q·d exact by fma.  e is exactly 0 below
    z = -104, where σ rounds to 0; nan stays nan (no float-to-int conversion: k comes from
    the shifter's bits)."""
    a = -abs(z)
    low = a < np.float32(-104.0)
    a = np.float32(-104.0) if low else a
    t = _fma32(a, _LOG2E32, _SHIFTER32)          # round(a·log2 e) in its low mantissa bits
    k = np.float32(t).view(np.int32) - np.int32(_SHIFTER32_BITS)
    n = t - _SHIFTER32
    r = _fma32(n, -_LN2_LO32, _fma32(n, -_LN2_HI32, a))
    p = _fma32(_fma32(_fma32(_fma32(_fma32(_X0, r, _X1), r, _X2), r, _X3), r, _X4), r, _X5)
    u = _fma32(p, r * r, r)                      # e^r - 1
    hi = _F1 + u
    lo = u - (hi - _F1)
    half = k >> 1                                # 2^k in two factors: k down to -150
    scale = np.int32((half + 127) << 23).view(np.float32) * \
        np.int32((k - half + 127) << 23).view(np.float32)
    e_hi = _F0 if low else hi * scale
    e_lo = _F0 if low else lo * scale
    positive = z >= _F0
    n_hi = _F1 if positive else e_hi
    n_lo = _F0 if positive else e_lo
    d = _F1 + e_hi
    c = ((_F1 - d) + e_hi) + e_lo                # d + c = 1 + e
    q = np.divide(n_hi, d)
    return q + np.divide((_fma32(-q, d, n_hi) + n_lo) - q * c, d)


@jit
def _tanh(u, f32):
    """tanh(u) = -m / (2 + m) with m = e^(-2|u|) - 1, signed: no cancellation near 0."""
    m = _expm1(-2.0 * abs(u), f32)
    return math.copysign(np.divide(-m, 2.0 + m), u)


@jit
def _in_place(x, out):
    """Whether ``out`` is ``x``'s memory: the forward kernels then loop over ``out`` alone.

    Why: with two arrays LLVM vectorises behind a runtime check that they do not overlap, and
    runs its scalar loop when they do — 5 to 10 times slower here — although reading and
    writing the same element is harmless.  One array needs no check.
    """
    return x.ctypes.data == out.ctypes.data


# erf for float32, evaluated in float64: x·P(x²)/Q(x²), a (7, 7) rational fitted to erf(x)/x
# on |x| <= 4.5 (relative error 7e-11; all coefficients positive, so Horner does not cancel).
# Beyond 4.5, erf rounds to ±1 in float32.  Checked exhaustively over the positive float32
# values below 6: 0.08 % differ from the correctly rounded erf, by 1 ulp.
_P0, _P1, _P2, _P3, _P4, _P5, _P6, _P7 = (
    1.128379167017198, 0.22553010740778515, 0.06222581747600808, 0.0061789032157789775,
    0.0005988585461056124, 3.059106044436164e-05, 8.708508967125355e-07,
    2.7053667156799744e-09)
_Q1, _Q2, _Q3, _Q4, _Q5, _Q6, _Q7 = (
    0.5332041836534527, 0.13288094952277485, 0.02025858218142593, 0.002061335893217647,
    0.0001410955610980639, 6.027050861396905e-06, 7.397568178585747e-08)


@jit
def _erf32(x):
    """erf(x) to float32 accuracy (see above), exactly ±1 beyond ±4.5; nan stays nan."""
    c = 4.5 if x > 4.5 else x
    c = -4.5 if c < -4.5 else c
    z = c * c
    p = _fma(z, _fma(z, _fma(z, _fma(z, _fma(z, _fma(z, _fma(z, _P7, _P6), _P5), _P4), _P3),
                             _P2), _P1), _P0)
    q = _fma(z, _fma(z, _fma(z, _fma(z, _fma(z, _fma(z, _fma(z, _Q7, _Q6), _Q5), _Q4), _Q3),
                             _Q2), _Q1), 1.0)
    e = np.divide(c * p, q)
    e = 1.0 if x > 4.5 else e
    return -1.0 if x < -4.5 else e


# -- erf ------------------------------------------------------------------------------------

_ERF_SERIES_TERMS = 50      # enough for full float64 precision on |x| < 3
_ERFC_FRACTION_TERMS = 40   # likewise for the continued fraction on |x| >= 3


def erf_numpy(x: np.ndarray) -> np.ndarray:
    """The error function in float64 numpy, to full precision (no scipy needed): the reference.

    |x| < 3: erf(x) = 2/√π · e^(−x²) · Σ 2ⁿ x^(2n+1) / (2n+1)!!   (all terms positive, so no
    cancellation); |x| >= 3: erf(x) = 1 − erfc(x) with erfc's continued fraction
    e^(−x²)/√π · 1/(x + ½/(x + 1/(x + 3/2/(x + …)))), evaluated bottom-up.  Both loops run over
    a fixed number of terms, never over elements.
    """
    x = np.asarray(x, dtype=np.float64)
    a = np.abs(x)
    small = np.minimum(a, 3.0)
    x2 = small * small
    term = small.copy()
    total = small.copy()
    for n in range(_ERF_SERIES_TERMS):
        term *= (2.0 / (2 * n + 3)) * x2
        total += term
    series = _TWO_OVER_SQRT_PI * np.exp(-x2) * total
    large = np.maximum(a, 3.0)
    t = large.copy()
    for k in range(_ERFC_FRACTION_TERMS, 0, -1):
        t = large + (0.5 * k) / t
    fraction = 1 - _INV_SQRT_PI * np.exp(-large * large) / t
    return np.copysign(np.where(a < 3.0, series, fraction), x)


def _erf_reference(x, out):
    out[...] = erf_numpy(x)


@kernel(_erf_reference)
def erf(x, out):
    """out = erf(x): float32 by the rational above, float64 by libm."""
    if x.itemsize == 4:
        if _in_place(x, out):
            for i in range(out.size):
                out[i] = _erf32(np.float64(out[i]))
        else:
            for i in range(x.size):
                out[i] = _erf32(np.float64(x[i]))
    else:
        for i in range(x.size):             # libm's erf: a call, not vectorised anyway
            out[i] = math.erf(x[i])


def _erf_backward_reference(x, gy, out):
    x = x.astype(np.float64)
    out[...] = gy * (_TWO_OVER_SQRT_PI * np.exp(-x * x))


@kernel(_erf_backward_reference)
def erf_backward(x, gy, out):
    """out = gy · 2/√π · e^(−x²)."""
    if x.itemsize == 4:
        for i in range(x.size):
            v = np.float64(x[i])
            out[i] = gy[i] * (_TWO_OVER_SQRT_PI * _exp_neg(-(v * v), True))
    else:
        for i in range(x.size):
            v = x[i]
            out[i] = gy[i] * (_TWO_OVER_SQRT_PI * _exp_neg(-(v * v), False))


# -- gelu -----------------------------------------------------------------------------------
# Exact: x·Φ(x) = ½x(1 + erf(x/√2)), as ONNX and PyTorch define it.  Its float32 kernel has an
# absolute error of ~4e-11·|x| from the rational erf, which only shows as a relative error where
# Φ(x) < 1e-8 (x < -5.6, |gelu| < 6e-8); below x = -6.36 it gives -0.  Tanh approximation:
# x·σ(2u) with u = √(2/π)(x + 0.044715x³), which is ½x(1 + tanh u) without its cancellation
# for x << 0.

def _gelu_reference(x, out):
    x = x.astype(np.float64)
    out[...] = 0.5 * x * (1 + erf_numpy(x * _INV_SQRT_2))


@jit
def _gelu32(v):
    return 0.5 * v * (1.0 + _erf32(v * _INV_SQRT_2))


@kernel(_gelu_reference)
def gelu(x, out):
    """out = ½x(1 + erf(x/√2))."""
    if x.itemsize == 4:
        if _in_place(x, out):
            for i in range(out.size):
                out[i] = _gelu32(np.float64(out[i]))
        else:
            for i in range(x.size):
                out[i] = _gelu32(np.float64(x[i]))
    else:
        for i in range(x.size):
            v = x[i]
            out[i] = 0.5 * v * (1.0 + math.erf(v * _INV_SQRT_2))


def _gelu_backward_reference(x, gy, out):
    x = x.astype(np.float64)
    cdf = 0.5 * (1 + erf_numpy(x * _INV_SQRT_2))
    pdf = _INV_SQRT_2PI * np.exp(-0.5 * x * x)
    out[...] = gy * (cdf + x * pdf)


@kernel(_gelu_backward_reference)
def gelu_backward(x, gy, out):
    """out = gy · (Φ(x) + x·φ(x)), from x in one pass."""
    if x.itemsize == 4:
        for i in range(x.size):
            v = np.float64(x[i])
            cdf = 0.5 * (1.0 + _erf32(v * _INV_SQRT_2))
            out[i] = gy[i] * (cdf + v * (_INV_SQRT_2PI * _exp_neg(-0.5 * v * v, True)))
    else:
        for i in range(x.size):
            v = x[i]
            cdf = 0.5 * (1.0 + math.erf(v * _INV_SQRT_2))
            out[i] = gy[i] * (cdf + v * (_INV_SQRT_2PI * _exp_neg(-0.5 * v * v, False)))


def _sigmoid_numpy(z: np.ndarray) -> np.ndarray:
    """1 / (1 + e^−z) from e = e^−|z|: no overflow for any z, full relative precision in both
    tails (exp(−logaddexp(0, −z)) would lose |z| ulp to the exponential of a large argument)."""
    e = np.exp(-np.abs(z))
    r = 1 / (1 + e)
    return np.where(z >= 0, r, e * r)


def _gelu_tanh_reference(x, out):
    x = x.astype(np.float64)
    u = _SQRT_2_OVER_PI * (x + _GELU_CUBIC * x * x * x)
    with np.errstate(invalid="ignore"):
        out[...] = x * _sigmoid_numpy(2 * u)


@jit
def _gelu_tanh(v, f32):
    u = _SQRT_2_OVER_PI * (v + _GELU_CUBIC * v * v * v)
    return v * _sigmoid(2.0 * u, f32)


@kernel(_gelu_tanh_reference)
def gelu_tanh(x, out):
    """out = x·σ(2u) = ½x(1 + tanh u), u = √(2/π)(x + 0.044715x³)."""
    if x.itemsize == 4:
        if _in_place(x, out):
            for i in range(out.size):
                out[i] = _gelu_tanh(np.float64(out[i]), True)
        else:
            for i in range(x.size):
                out[i] = _gelu_tanh(np.float64(x[i]), True)
    elif _in_place(x, out):
        for i in range(out.size):
            out[i] = _gelu_tanh(out[i], False)
    else:
        for i in range(x.size):
            out[i] = _gelu_tanh(x[i], False)


def _gelu_tanh_backward_reference(x, gy, out):
    x = x.astype(np.float64)
    u = _SQRT_2_OVER_PI * (x + _GELU_CUBIC * x * x * x)
    du = _SQRT_2_OVER_PI * (1 + 3 * _GELU_CUBIC * x * x)
    s, s_neg = _sigmoid_numpy(2 * u), _sigmoid_numpy(-2 * u)
    with np.errstate(invalid="ignore"):
        out[...] = gy * (s + 2 * x * du * s * s_neg)


@jit
def _gelu_tanh_slope(v, f32):
    """d/dv of v·σ(2u): σ(2u) + 2v·u'·σ(2u)·σ(−2u), both sigmoids from one exponential."""
    u = _SQRT_2_OVER_PI * (v + _GELU_CUBIC * v * v * v)
    du = _SQRT_2_OVER_PI * (1.0 + 3.0 * _GELU_CUBIC * v * v)
    e = _exp_neg(-2.0 * abs(u), f32)
    r = np.divide(1.0, 1.0 + e)
    s = r if u >= 0.0 else e * r
    s_neg = e * r if u >= 0.0 else r
    return s + 2.0 * v * du * s * s_neg


@kernel(_gelu_tanh_backward_reference)
def gelu_tanh_backward(x, gy, out):
    """out = gy · (σ(2u) + 2x·u'·σ(2u)·σ(−2u)), the derivative of x·σ(2u)."""
    if x.itemsize == 4:
        for i in range(x.size):
            out[i] = gy[i] * _gelu_tanh_slope(np.float64(x[i]), True)
    else:
        for i in range(x.size):
            out[i] = gy[i] * _gelu_tanh_slope(x[i], False)


# -- tanh, sigmoid, softplus ----------------------------------------------------------------

def _tanh_reference(x, out):
    np.tanh(x, out=out)


@kernel(_tanh_reference)
def tanh(x, out):
    """out = tanh(x)."""
    if x.itemsize == 4:
        if _in_place(x, out):
            for i in range(out.size):
                out[i] = _tanh(np.float64(out[i]), True)
        else:
            for i in range(x.size):
                out[i] = _tanh(np.float64(x[i]), True)
    elif _in_place(x, out):
        for i in range(out.size):
            out[i] = _tanh(out[i], False)
    else:
        for i in range(x.size):
            out[i] = _tanh(x[i], False)


def _tanh_backward_reference(y, gy, out):
    y = y.astype(np.float64)
    out[...] = gy * (1 - y * y)


@kernel(_tanh_backward_reference)
def tanh_backward(y, gy, out):
    """out = gy · (1 − y²), from the saved output."""
    for i in range(y.size):
        v = np.float64(y[i])
        out[i] = gy[i] * (1.0 - v * v)


def _sigmoid_reference(x, out):
    out[...] = _sigmoid_numpy(x.astype(np.float64))


@kernel(_sigmoid_reference)
def sigmoid(x, out):
    """out = 1 / (1 + e^−x), no overflow for any x."""
    if x.itemsize == 4:
        if _in_place(x, out):
            for i in range(out.size):
                out[i] = _sigmoid32(out[i])
        else:
            for i in range(x.size):
                out[i] = _sigmoid32(x[i])
    elif _in_place(x, out):
        for i in range(out.size):
            out[i] = _sigmoid(out[i], False)
    else:
        for i in range(x.size):
            out[i] = _sigmoid(x[i], False)


def _relu_reference(x, out):
    np.maximum(x, 0, out=out)


@kernel(_relu_reference)
def relu(x, out):
    """out = max(x, 0) with numpy's bits: NaN kept, ``-0`` gives ``0``.

    Written as numba's ``np.maximum(v, 0) + 0``: numba's maximum is three selects, which
    vectorise (numpy's own loop, and a ternary with ``v != v``, branch), and returns ``v`` on a
    tie where numpy returns the ``0``: the only tie with different bits is ``-0``, which the
    added ``+0`` turns into ``0`` (any other value, NaN included, is left as it is)."""
    zero = out.dtype.type(0)
    if _in_place(x, out):
        for i in range(out.size):
            out[i] = np.maximum(out[i], zero) + zero
    else:
        for i in range(x.size):
            out[i] = np.maximum(x[i], zero) + zero


def _relu_backward_reference(y, gy, out):
    np.multiply(gy, y > 0, out=out)


@kernel(_relu_backward_reference)
def relu_backward(y, gy, out):
    """out = gy · [y > 0], from the saved output: one pass, where numpy builds the boolean
    mask first and then multiplies by it (LeNet's first relu, 800k values: ~2x faster).  The
    product by 1 or 0 is kept, so a negative or non-finite gy gives what numpy's gives (-0,
    nan)."""
    one, zero = y.dtype.type(1), y.dtype.type(0)
    for i in range(y.size):
        out[i] = gy[i] * (one if y[i] > 0 else zero)


def _sigmoid_backward_reference(y, gy, out):
    y = y.astype(np.float64)
    out[...] = gy * y * (1 - y)


@kernel(_sigmoid_backward_reference)
def sigmoid_backward(y, gy, out):
    """out = gy · y · (1 − y), from the saved output."""
    for i in range(y.size):
        v = np.float64(y[i])
        out[i] = gy[i] * v * (1.0 - v)


def _softplus_reference(x, out):
    out[...] = np.logaddexp(0, x.astype(np.float64))


@jit
def _softplus(v, f32):
    return max(v, 0.0) + _log1p_unit(_exp_neg(-abs(v), f32), f32)


@kernel(_softplus_reference)
def softplus(x, out):
    """out = log(1 + e^x) = max(x, 0) + log(1 + e^−|x|): exact in both tails."""
    if x.itemsize == 4:
        if _in_place(x, out):
            for i in range(out.size):
                out[i] = _softplus(np.float64(out[i]), True)
        else:
            for i in range(x.size):
                out[i] = _softplus(np.float64(x[i]), True)
    elif _in_place(x, out):
        for i in range(out.size):
            out[i] = _softplus(out[i], False)
    else:
        for i in range(x.size):
            out[i] = _softplus(x[i], False)


def _softplus_backward_reference(x, gy, out):
    out[...] = gy * _sigmoid_numpy(x.astype(np.float64))


@kernel(_softplus_backward_reference)
def softplus_backward(x, gy, out):
    """out = gy · σ(x)."""
    if x.itemsize == 4:
        for i in range(x.size):
            out[i] = gy[i] * _sigmoid(np.float64(x[i]), True)
    else:
        for i in range(x.size):
            out[i] = gy[i] * _sigmoid(x[i], False)


# -- elu / selu -----------------------------------------------------------------------------
# One kernel pair for both: y = scale · (x if x > 0 else alpha·(e^x − 1)); elu is scale 1.

def elu_numpy(x: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """alpha·(e^x - 1) for x <= 0, x otherwise, and its derivative (alpha·e^x for x <= 0);
    exponentials of the negative part only, so no overflow warnings for large positive x."""
    negative = np.minimum(x, 0)
    positive = x > 0
    return (np.where(positive, x, alpha * np.expm1(negative)),
            np.where(positive, 1.0, alpha * np.exp(negative)))


def _elu_reference(x, alpha, scale, out):
    y, _ = elu_numpy(x.astype(np.float64), alpha)
    out[...] = scale * y


@jit
def _elu(v, alpha, scale, f32):
    return scale * (v if v > 0.0 else alpha * _expm1(min(v, 0.0), f32))


@kernel(_elu_reference)
def elu(x, alpha, scale, out):
    """out = scale · elu(x, alpha)."""
    if x.itemsize == 4:
        if _in_place(x, out):
            for i in range(out.size):
                out[i] = _elu(np.float64(out[i]), alpha, scale, True)
        else:
            for i in range(x.size):
                out[i] = _elu(np.float64(x[i]), alpha, scale, True)
    elif _in_place(x, out):
        for i in range(out.size):
            out[i] = _elu(out[i], alpha, scale, False)
    else:
        for i in range(x.size):
            out[i] = _elu(x[i], alpha, scale, False)


def _elu_backward_reference(x, gy, alpha, scale, out):
    _, dy = elu_numpy(x.astype(np.float64), alpha)
    out[...] = gy * (scale * dy)


@jit
def _elu_slope(v, alpha, scale, f32):
    return scale * (1.0 if v > 0.0 else alpha * _exp_neg(min(v, 0.0), f32))


@kernel(_elu_backward_reference)
def elu_backward(x, gy, alpha, scale, out):
    """out = gy · scale · (1 if x > 0 else alpha·e^x)."""
    if x.itemsize == 4:
        for i in range(x.size):
            out[i] = gy[i] * _elu_slope(np.float64(x[i]), alpha, scale, True)
    else:
        for i in range(x.size):
            out[i] = gy[i] * _elu_slope(x[i], alpha, scale, False)


# -- softsign, hard_swish -------------------------------------------------------------------
# Cheap arithmetic, but three or four numpy passes each: one pass is measurably faster.

def _softsign_reference(x, out):
    x = x.astype(np.float64)
    out[...] = x / (1 + np.abs(x))


@jit
def _softsign(v):
    return np.divide(v, 1.0 + abs(v))


@kernel(_softsign_reference)
def softsign(x, out):
    """out = x / (1 + |x|)."""
    if _in_place(x, out):
        for i in range(out.size):
            out[i] = _softsign(np.float64(out[i]))
    else:
        for i in range(x.size):
            out[i] = _softsign(np.float64(x[i]))


def _softsign_backward_reference(x, gy, out):
    d = 1 + np.abs(x.astype(np.float64))
    out[...] = gy / (d * d)


@kernel(_softsign_backward_reference)
def softsign_backward(x, gy, out):
    """out = gy / (1 + |x|)²."""
    for i in range(x.size):
        d = 1.0 + abs(np.float64(x[i]))
        out[i] = np.divide(gy[i], d * d)


def _hard_swish_reference(x, out):
    x = x.astype(np.float64)
    out[...] = x * np.clip(x / 6 + 0.5, 0, 1)


@jit
def _hard_swish(v):
    h = v / 6.0 + 0.5
    h = 0.0 if h < 0.0 else h                    # nan passes both selects
    h = 1.0 if h > 1.0 else h
    return v * h


@kernel(_hard_swish_reference)
def hard_swish(x, out):
    """out = x · clip(x/6 + ½, 0, 1)."""
    if _in_place(x, out):
        for i in range(out.size):
            out[i] = _hard_swish(np.float64(out[i]))
    else:
        for i in range(x.size):
            out[i] = _hard_swish(np.float64(x[i]))


def _hard_swish_backward_reference(x, gy, out):
    x = x.astype(np.float64)
    out[...] = gy * np.where(x <= -3, 0.0, np.where(x >= 3, 1.0, x / 3 + 0.5))


@kernel(_hard_swish_backward_reference)
def hard_swish_backward(x, gy, out):
    """out = gy · (0 for x <= −3, 1 for x >= 3, x/3 + ½ between)."""
    for i in range(x.size):
        v = np.float64(x[i])
        d = 0.0 if v <= -3.0 else (1.0 if v >= 3.0 else v / 3.0 + 0.5)
        out[i] = gy[i] * d
