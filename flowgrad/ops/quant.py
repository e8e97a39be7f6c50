"""Quantization: ONNX's QuantizeLinear / DequantizeLinear and the integer ops quantized models
are made of (DynamicQuantizeLinear, MatMulInteger, ConvInteger, QLinearMatMul, QLinearConv),
and the ``com.microsoft`` ops onnxruntime's QOperator quantization writes (QGemm, QLinearAdd,
QLinearMul, QLinearGlobalAveragePool, QLinearAveragePool, QLinearConcat, QLinearLeakyRelu), and
the quantized LSTM its ``quantize_dynamic`` writes (DynamicQuantizeLSTM: see its class, which
follows onnxruntime's kernel step by step and reuses the float lstm's backward).

Integer outputs match onnxruntime bit for bit, so the arithmetic follows what its CPU kernels
do rather than the shortest numpy expression:

* **Quantize**: ``q = saturate(round_half_even(x / scale) + zero_point)``, the division in the
  scale's float type (float32 in a float32 plan), as MLAS divides (it does not multiply by a
  reciprocal, which rounds differently near ties).
* **Integer products and convolutions** accumulate exactly: the shifted operands
  (``x - zero_point``, at most 9 bits) are multiplied as float32 where every partial sum stays
  below 2**24 (by the types' bound, or for a product the data's own), else in float64 or in
  float32 slices added in float64, so the BLAS product (and flowgrad's conv) give the int32
  accumulator onnxruntime computes, at BLAS speed (numpy's integer matmul does not use BLAS).
  A product of a few rows (an LSTM step) runs in an integer kernel over the 8-bit weight
  (``int_matmul``), which reads a quarter of the bytes.
* **Requantization** (QLinearConv, QLinearMatMul) is MLAS's: the multiplier
  ``a_scale * b_scale / y_scale`` is computed in float32, the int32 accumulator (plus bias) is
  converted to float32, multiplied, rounded half to even, offset by the zero point and
  saturated.
* **Elementwise and lookup ops** (QLinearAdd, QLinearMul, QLinearConcat, QLinearLeakyRelu)
  reproduce onnxruntime's x86 float32 sequences, fused multiply-adds and 256-entry tables
  included.  Its kernels are CPU-specific: these match its AVX2 kernels (other CPUs may round
  a rare half differently); without AVX-VNNI its uint8 x int8 products saturate pairs at the
  int16 limit (``vpmaddubsw``), which flowgrad does not copy: flowgrad computes ONNX's exact
  value, which is onnxruntime's whenever int8 weights stay within [-64, 64) (its quantizer's
  ``reduce_range``).

Gradients.  The integer ops are forward-only (``differentiable = False``).  ``dequantize_linear``
is affine in its input, so it has an exact backward for ``scale`` (``sum g * (x - zp)``) and
passes ``g * scale`` to ``x``: an integer x cannot be trained, but when x comes from a
straight-through ``quantize_linear`` that gradient continues to the float values upstream.
``quantize_linear`` is piecewise constant, hence forward-only, unless ``straight_through``
is set: it then differentiates the surrogate ``clip(x / scale + zero_point)``, passing
``g / scale`` to ``x`` and ``-g x / scale**2`` to ``scale`` where the output is not saturated
and zero where it is.  Chained with ``dequantize_linear`` this is the usual straight-through
estimator (gradient 1 in the representable range, 0 outside) and, for the scale, the
learned-step-size gradient ``round(x/s) - x/s`` (inside) and ``qmin - zp`` / ``qmax - zp``
(outside).

Granularity (QuantizeLinear/DequantizeLinear): ``scale`` and ``zero_point`` are a scalar (per
tensor), a 1-d array along ``axis`` (per axis), or, with ``block_size`` B, an array of the
input's rank whose ``axis`` dim is ``ceil(D / B)`` (blocked: each scale covers B consecutive
elements along ``axis``).
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from ..backend import DEFAULT
from ..errors import AttrError
from ..op import Attr, Context, Op, ShapeError, Spec, broadcast_shapes, format_shape
from ._conv_util import WINDOW_ATTRS, geometry
from .conv import Conv
from .merge import concat_shape
from .recurrent import LSTM

#: the integer types a quantized value may have (numpy holds them), with their ranges
QUANT_RANGES = {"uint8": (0, 255), "int8": (-128, 127), "uint16": (0, 65535),
                "int16": (-32768, 32767)}
#: the float types a dequantized value may have
FLOAT_TYPES = ("float16", "float32", "float64")


# -- granularity: scale / zero-point layouts -------------------------------------------------

def _per_tensor(shape) -> bool:
    return len(shape) == 0 or (len(shape) == 1 and shape[0] == 1)


def check_layout(x_shape, p_shape, axis: int, block_size: int, what: str) -> None:
    """A ShapeError unless ``p_shape`` is a per-tensor, per-axis or blocked layout for an input
    of ``x_shape`` (``None`` dims are not checked)."""
    if _per_tensor(p_shape):
        return
    r = len(x_shape)
    if not -r <= axis < r:
        raise ShapeError(f"axis {axis} is out of range for a {r}-d input")
    a = axis % r
    dim = x_shape[a]
    if not block_size:
        if len(p_shape) != 1:
            raise ShapeError(f"{what} must be a scalar or a 1-d array along axis {axis} (set "
                             f"block_size for blocked quantization); got "
                             f"{format_shape(p_shape)} for input {format_shape(x_shape)}")
        if None not in (dim, p_shape[0]) and p_shape[0] != dim:
            raise ShapeError(f"{what} has {p_shape[0]} values, but axis {axis} of input "
                             f"{format_shape(x_shape)} has {dim}")
        return
    if len(p_shape) != r:
        raise ShapeError(f"with block_size {block_size}, {what} must have the input's rank "
                         f"{r}; got {format_shape(p_shape)}")
    for i, (d, p) in enumerate(zip(x_shape, p_shape)):
        if i == a:
            if None not in (d, p) and p != -(-d // block_size):
                raise ShapeError(f"with block_size {block_size}, axis {axis} of {what} must "
                                 f"have ceil({d} / {block_size}) = {-(-d // block_size)} "
                                 f"blocks, got {p}")
        elif None not in (d, p) and d != p:
            raise ShapeError(f"{what} {format_shape(p_shape)} must match input "
                             f"{format_shape(x_shape)} on every axis but axis {axis}")


def expand(p: np.ndarray, x_shape, axis: int, block_size: int) -> np.ndarray:
    """``p`` (scale or zero point) laid out to broadcast against an input of ``x_shape``."""
    p = np.asarray(p)
    if _per_tensor(p.shape):
        return p.reshape(())
    a = axis % len(x_shape)
    if not block_size:
        dims = [1] * len(x_shape)
        dims[a] = p.shape[0]
        return p.reshape(dims)
    return np.repeat(p, block_size, axis=a)[(slice(None),) * a + (slice(0, x_shape[a]),)]


def collapse(g: np.ndarray, p_shape, axis: int, block_size: int) -> np.ndarray:
    """The adjoint of :func:`expand`: ``g`` (input-shaped) summed back to ``p_shape``."""
    if _per_tensor(p_shape):
        return np.asarray(g.sum()).reshape(p_shape)
    a = axis % g.ndim
    if not block_size:
        return g.sum(axis=tuple(i for i in range(g.ndim) if i != a)).reshape(p_shape)
    blocks = p_shape[a]
    pad = blocks * block_size - g.shape[a]
    if pad:
        widths = [(0, 0)] * g.ndim
        widths[a] = (0, pad)
        g = np.pad(g, widths)
    return g.reshape(g.shape[:a] + (blocks, block_size) + g.shape[a + 1:]).sum(axis=a + 1)


_LAYOUT_ATTRS = {
    "axis": Attr("int", 1, doc="the quantization axis (per-axis and blocked layouts)"),
    "block_size": Attr("int", 0, doc="elements per scale along axis (blocked layout); "
                                     "0: per tensor or per axis"),
}


class _Linear(Op):
    """Shared by quantize_linear and dequantize_linear: the layout checks."""

    inputs = ("x", "scale", "zero_point?")
    no_grad_inputs = frozenset({"zero_point"})

    def check(self):
        if self.block_size < 0:
            raise AttrError(f"{self.type}: block_size must be >= 0, got {self.block_size}",
                            attr="block_size")

    def _check_specs(self, x, scale, zero_point):
        if scale.dtype.kind != "f":
            raise ShapeError(f"scale must be floating point, got {scale.dtype}")
        check_layout(x.shape, scale.shape, self.axis, self.block_size, "scale")
        if zero_point is not None:
            if zero_point.shape != scale.shape and not (_per_tensor(zero_point.shape)
                                                        and _per_tensor(scale.shape)):
                raise ShapeError(f"zero_point {format_shape(zero_point.shape)} must have the "
                                 f"shape of scale {format_shape(scale.shape)}")

    def _expand(self, p, x_shape):
        return expand(p, x_shape, self.axis, self.block_size)


class _StraightThrough:
    """``differentiable`` of quantize_linear: False on the class (the default, as ``flowgrad
    ops`` lists it), the ``straight_through`` attribute on an instance."""

    def __get__(self, op, cls=None):
        return False if op is None else bool(op.straight_through)


class QuantizeLinear(_Linear):
    """ONNX QuantizeLinear: ``saturate(round_half_even(x / scale) + zero_point)``.

    The output type is the zero point's, else ``output_dtype``, else uint8.  Forward-only
    unless ``straight_through`` (see the module docstring).
    """

    type = "quantize_linear"
    rowwise = False
    attrs = {**_LAYOUT_ATTRS,
             "output_dtype": Attr("str", None, choices=tuple(QUANT_RANGES),
                                  doc="the quantized type when there is no zero point "
                                      "(default uint8)"),
             "precision": Attr("str", None, choices=FLOAT_TYPES,
                               doc="the float type of the division (default: the scale's)"),
             "saturate": Attr("bool", True, doc="ONNX's flag for float8 targets; integer "
                                                "targets always saturate"),
             "straight_through": Attr("bool", False,
                                      doc="differentiate as clip(x / scale + zero_point): the "
                                          "straight-through estimator")}
    differentiable = _StraightThrough()
    #: appended to the plan's "forward-only" error: how to turn the estimator on
    forward_only_hint = ("; or let gradients through the quantizer with the straight-through "
                         "estimator: 'straight_through: true' on the node in YAML, "
                         "flowgrad.load(model, straight_through=True) for an ONNX model")

    def out_dtype(self, zero_point_dtype) -> np.dtype:
        if zero_point_dtype is not None:
            name = np.dtype(zero_point_dtype).name
            if name not in QUANT_RANGES:
                raise ShapeError(f"zero_point must be one of {', '.join(QUANT_RANGES)}, got "
                                 f"{name}")
            if self.output_dtype is not None and self.output_dtype != name:
                raise ShapeError(f"output_dtype {self.output_dtype} differs from the zero "
                                 f"point's type {name}; they must agree")
            return np.dtype(name)
        return np.dtype(self.output_dtype or "uint8")

    def infer(self, x, scale, zero_point=None):
        if x.dtype.kind not in "fi":
            raise ShapeError(f"x must be float or int32, got {x.dtype}")
        self._check_specs(x, scale, zero_point)
        return (Spec(x.shape, self.out_dtype(None if zero_point is None
                                             else zero_point.dtype)),)

    def _work(self, x, scale) -> np.dtype:
        if self.precision:
            return np.dtype(self.precision)
        return np.result_type(x.dtype, scale.dtype) if x.dtype.kind == "f" else scale.dtype

    def forward(self, ctx, x, scale, zero_point=None):
        dtype = self.out_dtype(None if zero_point is None else zero_point.dtype)
        lo, hi = QUANT_RANGES[dtype.name]
        work = self._work(x, scale)
        s = self._expand(scale, x.shape).astype(work, copy=False)
        q = np.rint(x.astype(work, copy=False) / s)
        if zero_point is not None:
            q += self._expand(zero_point, x.shape)
        if self.straight_through and ctx.grad_enabled:
            ctx.save(x, scale, s, (q >= lo) & (q <= hi))
        np.clip(q, lo, hi, out=q)
        if x.dtype.kind == "f":
            q[np.isnan(q)] = lo      # onnxruntime's clamp (max, then min) sends NaN to qmin
        return (q.astype(dtype),)

    def backward(self, ctx, gy):
        x, scale, s, inside = ctx.saved
        g = np.where(inside, gy, 0).astype(gy.dtype, copy=False)
        gx = gscale = None
        if ctx.needs_input_grad[0]:
            gx = (g / s).astype(gy.dtype, copy=False)
        if ctx.needs_input_grad[1]:
            gs = -g * x / (s * s)
            gscale = np.asarray(collapse(gs, scale.shape, self.axis, self.block_size),
                                dtype=scale.dtype)
        return (gx, gscale, None)[:len(ctx.needs_input_grad)]


class DequantizeLinear(_Linear):
    """ONNX DequantizeLinear: ``(x - zero_point) * scale``, in the scale's type (or
    ``output_dtype``).  Exact backward for ``scale``; ``g * scale`` for ``x`` (see the module
    docstring)."""

    type = "dequantize_linear"
    rowwise = False
    attrs = {**_LAYOUT_ATTRS,
             "output_dtype": Attr("str", None, choices=FLOAT_TYPES,
                                  doc="the output's float type (default: the scale's)")}

    def infer(self, x, scale, zero_point=None):
        if x.dtype.kind not in "iu":
            raise ShapeError(f"x must be an integer type, got {x.dtype}")
        if zero_point is not None and zero_point.dtype != x.dtype:
            raise ShapeError(f"zero_point is {zero_point.dtype} but x is {x.dtype}; they must "
                             "have the same type")
        self._check_specs(x, scale, zero_point)
        return (Spec(x.shape, self._out(scale.dtype)),)

    def _out(self, scale_dtype) -> np.dtype:
        return np.dtype(self.output_dtype) if self.output_dtype else np.dtype(scale_dtype)

    def forward(self, ctx, x, scale, zero_point=None):
        out = self._out(scale.dtype)
        work = np.promote_types(np.float32, out)
        d = x.astype(work)
        if zero_point is not None:
            d -= self._expand(zero_point, x.shape)
        s = self._expand(scale, x.shape)
        if ctx.grad_enabled:
            ctx.save(d, s, scale.shape, scale.dtype)
        return ((d * s).astype(out, copy=False),)

    def backward(self, ctx, gy):
        d, s, scale_shape, scale_dtype = ctx.saved
        gx = gscale = None
        if ctx.needs_input_grad[0]:
            gx = (gy * s).astype(gy.dtype, copy=False)
        if ctx.needs_input_grad[1]:
            gscale = np.asarray(collapse(gy * d, scale_shape, self.axis, self.block_size),
                                dtype=scale_dtype)
        return (gx, gscale, None)[:len(ctx.needs_input_grad)]


class DynamicQuantizeLinear(Op):
    """ONNX DynamicQuantizeLinear: uint8 quantization of x with a scale and zero point computed
    from x's range (widened to include 0), all in float32 as onnxruntime computes them."""

    type = "dynamic_quantize_linear"
    outputs = ("y", "y_scale", "y_zero_point")
    differentiable = False

    def infer(self, x):
        if x.dtype.kind != "f":
            raise ShapeError(f"x must be floating point, got {x.dtype}")
        return (Spec(x.shape, np.uint8), Spec((), x.dtype), Spec((), np.uint8))

    def forward(self, ctx, x):
        scale, zp = dynamic_params(x)
        y = _quantize_u8(x, scale, zp, ctx.backend)
        return y, np.asarray(scale, dtype=x.dtype), np.asarray(zp, dtype=np.uint8)


# -- integer products -------------------------------------------------------------------------

def _shifted(v: np.ndarray, zp: np.ndarray | None, axis: int,
             dtype=np.float64) -> np.ndarray:
    """``v - zp`` as floats of ``dtype`` (exact: at most 17 bits); a 1-d ``zp`` applies along
    ``axis`` of ``v``."""
    if zp is None:
        return v.astype(dtype)
    zp = np.asarray(zp, dtype=dtype)
    if zp.ndim == 1 and zp.size > 1:
        shape = [1] * v.ndim
        shape[axis] = zp.size
        zp = zp.reshape(shape)
    else:
        zp = zp.reshape(())
    return np.subtract(v, zp, dtype=dtype)      # one pass: the cast inside the subtraction


_REACHES: dict = {}


def _reach(v: np.ndarray, zp) -> int:
    """A bound on ``|v - zp|`` from v's type and the zero points (no pass over v); kept per
    type and zero points (``np.iinfo`` alone costs 20 us, more than a small step's product)."""
    key = (v.dtype.str, _zp_key(zp))
    reach = _REACHES.get(key)
    if reach is None:
        info = np.iinfo(v.dtype)
        z = np.asarray(0 if zp is None else zp, dtype=np.int64)
        reach = int(max(np.abs(info.min - z).max(), np.abs(info.max - z).max()))
        if len(_REACHES) < 4096:            # (a per-row zero point of activations varies)
            _REACHES[key] = reach
    return reach


def _exact_float(a_reach: int, b_reach: int, terms: int, extra: int = 0):
    """float32 when every partial sum of ``terms`` products (plus ``extra``) is an integer
    below 2**24, so float32 BLAS (any summation order) is exact and twice as fast; else
    float64 (53 bits: exact for any realistic size)."""
    return np.float32 if a_reach * b_reach * terms + extra < 2 ** 24 else np.float64


def _int_dtype(spec: Spec, what: str, kinds=("int8", "uint8")) -> None:
    if spec.dtype.name not in kinds:
        raise ShapeError(f"{what} must be {' or '.join(kinds)}, got {spec.dtype}")


def _vector_param(spec: Spec | None, size, what: str, along: str) -> None:
    """A zero point or scale that is a scalar or a 1-d array of ``size`` values."""
    if spec is None or _per_tensor(spec.shape):
        return
    if len(spec.shape) != 1 or None not in (size, spec.shape[0]) and spec.shape[0] != size:
        raise ShapeError(f"{what} must be a scalar or hold one value per {along} ({size}); "
                         f"got {format_shape(spec.shape)}")


def _matmul_shape(a, b) -> tuple:
    if a.ndim < 1 or b.ndim < 1:
        raise ShapeError("matmul needs inputs of at least 1 axis")
    a_shape = a.shape if a.ndim > 1 else (1,) + a.shape
    b_shape = b.shape if b.ndim > 1 else b.shape + (1,)
    if None not in (a_shape[-1], b_shape[-2]) and a_shape[-1] != b_shape[-2]:
        raise ShapeError(f"inner dims differ: {format_shape(a.shape)} @ {format_shape(b.shape)}")
    batch = broadcast_shapes(a_shape[:-2], b_shape[:-2])
    out = batch + (a_shape[-2], b_shape[-1])
    if a.ndim == 1:
        out = out[:-2] + out[-1:]
    if b.ndim == 1:
        out = out[:-1]
    return out


def _zp_key(zp) -> tuple | None:
    if zp is None:
        return None
    zp = np.asarray(zp)
    return zp.dtype.str, zp.tobytes()


def _weight_reach(backend, w: np.ndarray, zp, axis: int) -> int:
    """``max |w - zp|`` (a 1-d ``zp`` along ``axis``), computed once for a constant ``w``."""
    return backend.prepared(w, lambda v: int(np.abs(_shifted(v, zp, axis, np.int32)).max(
        initial=0)), "reach", axis, _zp_key(zp))


def _term_reach(backend, w: np.ndarray, zp, axis: int) -> np.ndarray:
    """``max |w - zp|`` along every axis but the inner one (-2; a 1-d ``w`` is its own), as
    float32: the bound of each term's weight factor, computed once for a constant ``w``."""
    def make(v):
        d = np.abs(_shifted(v, zp, axis, np.float32))
        return d if d.ndim == 1 else d.max(axis=tuple(i for i in range(d.ndim)
                                                       if i != d.ndim - 2), initial=0)
    return backend.prepared(w, make, "term reach", axis, _zp_key(zp))


def _shifted_weight(backend, w: np.ndarray, zp, axis: int, dtype) -> np.ndarray:
    """``w - zp`` as ``dtype`` floats, derived once per plan when ``w`` is a constant (a
    quantized model's weights are: shifting an 8-million-entry matrix into floats at every call
    cost more than its product; see ``CPUBackend.prepared``)."""
    return backend.prepared(w, lambda v: _shifted(v, zp, axis, dtype), "shifted", axis,
                            _zp_key(zp), dtype)


#: products of fewer rows than this run in the ``int_matmul`` kernel rather than BLAS
KERNEL_ROWS = 4


def _transposed(backend, b: np.ndarray) -> np.ndarray:
    """``b.T`` contiguous, made once per plan for a constant ``b``."""
    return backend.prepared(b, lambda v: np.ascontiguousarray(v.T), "transposed")


def _kernel_matmul(a, b, a_zp, b_zp, backend) -> np.ndarray:
    """:func:`_int_matmul` of a few rows by one matrix, in the ``int_matmul`` kernel: for a
    matrix-vector product (an LSTM step at batch 1) BLAS on the weight's float32 copy is
    memory-bound, the kernel reads the 8-bit weight itself (0.05 ms against 0.1 for one
    row by 512 x 2048 int8, and no per-call shifting of the row)."""
    N = b.shape[1]
    zb = np.zeros(N, np.int32)
    if b_zp is not None:
        zb[:] = np.asarray(b_zp).reshape(-1)
    out = np.empty((a.shape[0], N), np.int32)
    backend.kernels.int_matmul(np.ascontiguousarray(a), 0 if a_zp is None else int(
        np.asarray(a_zp).reshape(())), _transposed(backend, b), zb, out)
    return out


def _int_matmul(a, b, a_zp, b_zp, backend=DEFAULT) -> np.ndarray:
    """The exact int32 product ``(a - a_zp) @ (b - b_zp)``, as floats or int32; 1-d zero
    points are per row of ``a`` and per column of ``b``.

    A matrix of fewer than :data:`KERNEL_ROWS` rows by a 2-d ``b`` (per-tensor ``a_zp``) goes
    to the integer kernel (:func:`_kernel_matmul`), which is exact in int32 while
    ``K * 255 * 255 < 2**31``.  Otherwise float32 BLAS, exact while every partial sum stays
    below 2**24.  The types' bound (:func:`_exact_float`) decides first; failing it, the
    data's own: no partial sum of row m exceeds ``sum_k |a'[m, k]| * max_n |b'[k, n]|``
    (any summation order), usually far below the types' worst case (ddddocr's 1024-term
    classifier: 7e5 against 2e7), and one product does.  Otherwise the inner axis is cut into
    slices short enough (at least 258 terms for 8-bit operands, whose shifted values are at
    most 255), and the slices' products — exact integers — are added in float64.  Half the
    time of one float64 product (a 1024-term uint8 product: 10 ms against 20)."""
    terms, b_axis = a.shape[-1], b.ndim - 1
    if (a.ndim == 2 and b.ndim == 2 and a.shape[0] < KERNEL_ROWS and terms * 255 * 255 < 2 ** 31
            and (a_zp is None or np.size(a_zp) == 1)):
        return _kernel_matmul(a, b, a_zp, b_zp, backend)
    B = _shifted_weight(backend, b, b_zp, b_axis, np.float32)
    A = _shifted(a, a_zp, a.ndim - 2 if a.ndim > 1 else 0, np.float32)
    step = (2 ** 24 - 1) // max(1, _reach(a, a_zp) * _weight_reach(backend, b, b_zp, b_axis))
    if step >= terms or (np.abs(A) @ _term_reach(backend, b, b_zp, b_axis)).max(
            initial=0) < 2 ** 24:
        return np.matmul(A, B)
    inner = (lambda k: (Ellipsis, slice(k, k + step), slice(None))) if b.ndim > 1 else \
        (lambda k: (slice(k, k + step),))
    acc = np.matmul(A[..., :step], B[inner(0)]).astype(np.float64)
    for k in range(step, terms, step):
        acc += np.matmul(A[..., k:k + step], B[inner(k)])
    return acc


def requantize(acc: np.ndarray, multiplier: np.ndarray, zero_point, dtype: np.dtype
               ) -> np.ndarray:
    """MLAS's requantization: ``saturate(round_half_even(float32(acc) * multiplier) + zp)``."""
    lo, hi = QUANT_RANGES[np.dtype(dtype).name]
    v = np.rint(acc.astype(np.float32) * multiplier.astype(np.float32))
    if zero_point is not None:
        v += np.float32(np.asarray(zero_point).reshape(()))
    return np.clip(v, lo, hi).astype(dtype)


def _multiplier(a_scale, b_scale, y_scale) -> np.ndarray:
    """``a_scale * b_scale / y_scale`` in float32, the order onnxruntime computes it in."""
    f32 = np.float32
    return (np.asarray(a_scale, f32) * np.asarray(b_scale, f32)) / np.asarray(y_scale, f32)


class MatMulInteger(Op):
    """ONNX MatMulInteger: ``(A - a_zero_point) @ (B - b_zero_point)`` as int32."""

    type = "matmul_integer"
    inputs = ("A", "B", "a_zero_point?", "b_zero_point?")
    differentiable = False

    def infer(self, A, B, a_zero_point=None, b_zero_point=None):
        _int_dtype(A, "A")
        _int_dtype(B, "B")
        for zp, v, what in ((a_zero_point, A, "a_zero_point"), (b_zero_point, B, "b_zero_point")):
            if zp is not None and zp.dtype != v.dtype:
                raise ShapeError(f"{what} is {zp.dtype} but its matrix is {v.dtype}")
        _vector_param(a_zero_point, A.shape[-2] if A.ndim > 1 else 1, "a_zero_point", "row of A")
        _vector_param(b_zero_point, B.shape[-1], "b_zero_point", "column of B")
        return (Spec(_matmul_shape(A, B), np.int32),)

    def forward(self, ctx, A, B, a_zero_point=None, b_zero_point=None):
        return (_int_matmul(A, B, a_zero_point, b_zero_point, ctx.backend).astype(np.int32),)


class QLinearMatMul(Op):
    """ONNX QLinearMatMul: the integer product of two quantized matrices, requantized to
    ``y_scale`` / ``y_zero_point`` (scales per tensor, per row of a or per column of b)."""

    type = "qlinear_matmul"
    inputs = ("a", "a_scale", "a_zero_point", "b", "b_scale", "b_zero_point", "y_scale",
              "y_zero_point")
    differentiable = False

    def infer(self, a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp):
        _int_dtype(a, "a")
        _int_dtype(b, "b")
        rows = a.shape[-2] if a.ndim > 1 else 1
        for spec, size, what, along in ((a_scale, rows, "a_scale", "row of a"),
                                        (a_zp, rows, "a_zero_point", "row of a"),
                                        (b_scale, b.shape[-1], "b_scale", "column of b"),
                                        (b_zp, b.shape[-1], "b_zero_point", "column of b")):
            _vector_param(spec, size, what, along)
        for spec, what in ((y_scale, "y_scale"), (y_zp, "y_zero_point")):
            if not _per_tensor(spec.shape):
                raise ShapeError(f"{what} must be a scalar, got {format_shape(spec.shape)}")
        _int_dtype(y_zp, "y_zero_point")
        return (Spec(_matmul_shape(a, b), y_zp.dtype),)

    def forward(self, ctx, a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp):
        acc = _int_matmul(a, b, a_zp, b_zp, ctx.backend)
        a_s = np.asarray(a_scale).reshape((-1, 1) if np.size(a_scale) > 1 else ())
        b_s = np.asarray(b_scale).reshape((-1,) if np.size(b_scale) > 1 else ())
        mult = _multiplier(a_s, b_s, np.asarray(y_scale).reshape(()))
        return (requantize(acc, mult, y_zp, y_zp.dtype),)


# -- integer convolutions ---------------------------------------------------------------------

class _ConvInt(Op):
    """Shared by conv_integer and qlinear_conv: the window attributes and an exact float64
    convolution (flowgrad's conv) of the shifted operands."""

    rowwise = True
    differentiable = False
    attrs = {**WINDOW_ATTRS, "group": Attr("int", 1, doc="channel groups")}

    def check(self):
        self._conv = Conv(**self.config())      # validates the window attributes

    def _shape(self, x, w) -> tuple:
        f = np.float64
        return self._conv.infer(Spec(x.shape, f), Spec(w.shape, f))[0].shape

    def _accumulate(self, backend, x, w, x_zp, w_zp, bias=None) -> np.ndarray:
        """The int32-exact accumulator of ``conv(x - x_zp, w - w_zp) + bias``, as floats
        (float32 where that is exact, see :func:`_exact_float`)."""
        extra = 0 if bias is None else int(np.abs(bias.astype(np.int64)).max(initial=0))
        dtype = _exact_float(_reach(x, x_zp), _weight_reach(backend, w, w_zp, 0),
                             math.prod(w.shape[1:]), extra)
        W = _shifted_weight(backend, w, w_zp, 0, dtype)
        X = _shifted(x, x_zp, 1, W.dtype)
        b = None if bias is None else bias.astype(W.dtype)
        return self._conv.forward(Context(grad_enabled=False), X, W, b)[0]


class ConvInteger(_ConvInt):
    """ONNX ConvInteger: ``conv(x - x_zero_point, w - w_zero_point)`` as int32 (the zero
    point is what padding adds, as in onnxruntime)."""

    type = "conv_integer"
    inputs = ("x", "w", "x_zero_point?", "w_zero_point?")

    def infer(self, x, w, x_zero_point=None, w_zero_point=None):
        _int_dtype(x, "x")
        _int_dtype(w, "w")
        if x_zero_point is not None and not _per_tensor(x_zero_point.shape):
            raise ShapeError("x_zero_point must be a scalar")
        _vector_param(w_zero_point, w.shape[0], "w_zero_point", "output channel")
        return (Spec(self._shape(x, w), np.int32),)

    def forward(self, ctx, x, w, x_zero_point=None, w_zero_point=None):
        acc = self._accumulate(ctx.backend, x, w, x_zero_point, w_zero_point)
        return (acc.astype(np.int32),)


class QLinearConv(_ConvInt):
    """ONNX QLinearConv: the integer convolution plus int32 bias, requantized to ``y_scale`` /
    ``y_zero_point`` (``w_scale`` per tensor or per output channel)."""

    type = "qlinear_conv"
    inputs = ("x", "x_scale", "x_zero_point", "w", "w_scale", "w_zero_point", "y_scale",
              "y_zero_point", "B?")

    def infer(self, x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, B=None):
        _int_dtype(x, "x")
        _int_dtype(w, "w")
        _int_dtype(y_zp, "y_zero_point")
        for spec, what in ((x_scale, "x_scale"), (x_zp, "x_zero_point"), (y_scale, "y_scale"),
                           (y_zp, "y_zero_point")):
            if not _per_tensor(spec.shape):
                raise ShapeError(f"{what} must be a scalar, got {format_shape(spec.shape)}")
        _vector_param(w_scale, w.shape[0], "w_scale", "output channel")
        _vector_param(w_zp, w.shape[0], "w_zero_point", "output channel")
        if B is not None:
            if B.dtype != np.int32:
                raise ShapeError(f"B (the bias) must be int32, got {B.dtype}")
            _vector_param(B, w.shape[0], "B", "output channel")
        return (Spec(self._shape(x, w), y_zp.dtype),)

    def forward(self, ctx, x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, B=None):
        acc = self._accumulate(ctx.backend, x, w, x_zp, w_zp, B)
        mult = _multiplier(x_scale, w_scale, y_scale).reshape(
            (1, -1) + (1,) * (x.ndim - 2) if np.size(w_scale) > 1 else ())
        return (requantize(acc, mult, y_zp, y_zp.dtype),)


class QGemm(Op):
    """onnxruntime's ``com.microsoft`` QGemm (what its QOperator quantization makes of Gemm):
    ``alpha * (A' - a_zp) @ (B' - b_zp) + C`` on the int32 accumulator (``C`` is the bias,
    quantized with scale ``a_scale * b_scale``), then requantized to ``y_scale`` /
    ``y_zero_point`` or, without a zero point, scaled to float32 by
    ``alpha * a_scale * b_scale [/ y_scale]`` as onnxruntime does.  ``b_scale`` and ``b_zp``
    are per tensor or per output column."""

    type = "qgemm"
    inputs = ("A", "a_scale", "a_zero_point", "B", "b_scale", "b_zero_point", "C?",
              "y_scale?", "y_zero_point?")
    differentiable = False
    attrs = {"alpha": Attr("float", 1.0, doc="scales the product"),
             "transA": Attr("bool", False, doc="use A transposed"),
             "transB": Attr("bool", False, doc="use B transposed")}

    def _out_dtype(self, y_zp) -> np.dtype:
        return np.dtype(np.float32) if y_zp is None else y_zp.dtype

    def infer(self, A, a_scale, a_zp, B, b_scale, b_zp, C=None, y_scale=None, y_zp=None):
        _int_dtype(A, "A")
        _int_dtype(B, "B")
        if A.ndim != 2 or B.ndim != 2:
            raise ShapeError(f"QGemm multiplies matrices; A is {A.ndim}-d and B {B.ndim}-d")
        M, K = A.shape[::-1] if self.transA else A.shape
        K2, N = B.shape[::-1] if self.transB else B.shape
        if None not in (K, K2) and K != K2:
            raise ShapeError(f"inner dims differ: A {format_shape(A.shape)} (transA="
                             f"{self.transA}) and B {format_shape(B.shape)} (transB="
                             f"{self.transB})")
        for spec, what in ((a_scale, "a_scale"), (a_zp, "a_zero_point"), (y_scale, "y_scale"),
                           (y_zp, "y_zero_point")):
            if spec is not None and not _per_tensor(spec.shape):
                raise ShapeError(f"{what} must be a scalar, got {format_shape(spec.shape)}")
        _vector_param(b_scale, N, "b_scale", "output column")
        _vector_param(b_zp, N, "b_zero_point", "output column")
        if y_zp is not None:
            _int_dtype(y_zp, "y_zero_point")
        if C is not None:
            if C.dtype != np.int32:
                raise ShapeError(f"C (the bias) must be int32, got {C.dtype}")
            broadcast_shapes(C.shape, (M, N))
        return (Spec((M, N), self._out_dtype(y_zp)),)

    def forward(self, ctx, A, a_scale, a_zp, B, b_scale, b_zp, C=None, y_scale=None,
                y_zp=None):
        A = A.T if self.transA else A
        B = B.T if self.transB else B
        acc = _int_matmul(A, B, a_zp, b_zp)
        if C is not None:
            acc = acc + C.astype(np.float64)
        f32 = np.float32
        mult = (f32(self.alpha) * np.asarray(a_scale, f32).reshape(())
                * np.asarray(b_scale, f32).reshape(-1 if np.size(b_scale) > 1 else ()))
        if y_scale is not None:
            mult = mult / np.asarray(y_scale, f32).reshape(())
        if y_zp is None:
            return ((acc.astype(f32) * mult).astype(f32, copy=False),)
        return (requantize(acc, mult, y_zp, y_zp.dtype),)


# -- onnxruntime's com.microsoft quantized elementwise ops ----------------------------------------

def _fma32(a: np.ndarray, b, c) -> np.ndarray:
    """float32 fused multiply-add ``a * b + c`` with one rounding: the product of two float32
    values is exact in float64 and, for the magnitudes of quantized arithmetic, so is the sum,
    so the float64 result rounded once to float32 is the fused one."""
    return (np.asarray(a, np.float64) * np.float64(b) + np.asarray(c, np.float64)
            ).astype(np.float32)


def _scalar_along_span(shape, out_shape) -> bool:
    """Whether an operand of ``shape``, broadcast to ``out_shape``, is one value along the
    innermost run of axes its output varies over (onnxruntime then passes it as a scalar)."""
    shape = (1,) * (len(out_shape) - len(shape)) + tuple(shape)
    for d, o in zip(reversed(shape), reversed(out_shape)):
        if o == 1:
            continue
        return d == 1
    return True


class QLinearAdd(Op):
    """onnxruntime's ``com.microsoft`` QLinearAdd:
    ``saturate(round((a - a_zp) * a_scale / c_scale + (b - b_zp) * b_scale / c_scale) + c_zp)``
    with onnxruntime's x86 (AVX2) arithmetic, bit for bit: the ratios ``a_scale / c_scale`` and
    ``b_scale / c_scale`` in float32, the zero points folded into one float32 offset, then two
    fused multiply-adds per element, B's first (A's first where onnxruntime's broadcasting
    passes A as the scalar of a span).  Scales and zero points are per tensor."""

    type = "qlinear_add"
    inputs = ("A", "A_scale", "A_zero_point?", "B", "B_scale", "B_zero_point?", "C_scale",
              "C_zero_point?")
    differentiable = False
    rowwise = False

    def infer(self, A, A_scale, A_zp, B, B_scale, B_zp, C_scale, C_zp=None):
        _int_dtype(A, "A")
        if B.dtype != A.dtype:
            raise ShapeError(f"A is {A.dtype} but B is {B.dtype}; they must have one type")
        for spec, what in ((A_scale, "A_scale"), (A_zp, "A_zero_point"), (B_scale, "B_scale"),
                           (B_zp, "B_zero_point"), (C_scale, "C_scale"),
                           (C_zp, "C_zero_point")):
            if spec is not None and not _per_tensor(spec.shape):
                raise ShapeError(f"{what} must be a scalar, got {format_shape(spec.shape)}")
        return (Spec(broadcast_shapes(A.shape, B.shape), A.dtype),)

    def forward(self, ctx, A, A_scale, A_zp, B, B_scale, B_zp, C_scale, C_zp=None):
        f32 = np.float32

        def value(v):
            return 0 if v is None else int(np.asarray(v).reshape(()))
        sc = f32(np.asarray(C_scale).reshape(()))
        ra = f32(f32(np.asarray(A_scale).reshape(())) / sc)
        rb = f32(f32(np.asarray(B_scale).reshape(())) / sc)
        za, zb, zc = value(A_zp), value(B_zp), value(C_zp)
        # zc - (ra * za + rb * zb), the compiler's contraction: fma(ra, za, rb * zb)
        fixed = f32(f32(zc) - _fma32(ra, f32(za), f32(rb * f32(zb))))
        out_shape = np.broadcast_shapes(A.shape, B.shape)
        if _scalar_along_span(A.shape, out_shape) and not _scalar_along_span(B.shape,
                                                                              out_shape):
            c = _fma32(B, rb, _fma32(A, ra, fixed))     # onnxruntime folds the scalar A first
        else:
            c = _fma32(A, ra, _fma32(B, rb, fixed))
        lo, hi = QUANT_RANGES[A.dtype.name]
        return (np.clip(np.rint(c), lo, hi).astype(A.dtype),)


class QLinearGlobalAveragePool(Op):
    """onnxruntime's ``com.microsoft`` QLinearGlobalAveragePool (channels first): the int32
    sum of each channel minus ``x_zp * size``, requantized with the float32 multiplier
    ``x_scale / (y_scale * size)`` (onnxruntime's order)."""

    type = "qlinear_global_average_pool"
    inputs = ("X", "x_scale", "x_zero_point", "y_scale", "y_zero_point")
    differentiable = False
    rowwise = True
    attrs = {"channels_last": Attr("bool", False, doc="NHWC layout (only False supported)")}

    def check(self):
        if self.channels_last:
            raise AttrError(f"{self.type}: channels_last is not supported; the model's "
                            "layout must be channels first (NCHW)", attr="channels_last")

    def infer(self, X, x_scale, x_zp, y_scale, y_zp):
        _int_dtype(X, "X")
        if X.ndim < 3:
            raise ShapeError(f"X must have a batch, a channel and spatial axes, got "
                             f"{format_shape(X.shape)}")
        return (Spec(X.shape[:2] + (1,) * (X.ndim - 2), X.dtype),)

    def forward(self, ctx, X, x_scale, x_zp, y_scale, y_zp):
        f32 = np.float32
        axes = tuple(range(2, X.ndim))
        size = int(np.prod(X.shape[2:]))
        acc = X.sum(axis=axes, dtype=np.int64, keepdims=True) - int(
            np.asarray(x_zp).reshape(())) * size
        mult = f32(f32(np.asarray(x_scale).reshape(())) /
                   f32(f32(np.asarray(y_scale).reshape(())) * f32(size)))
        return (requantize(acc, np.asarray(mult), y_zp, X.dtype),)


def lookup(x: np.ndarray, x_scale, x_zp, y_scale, y_zp, fn=None) -> np.ndarray:
    """onnxruntime's lookup-table requantization (QLinearConcat, QLinearLeakyRelu): each of the
    type's 256 values is dequantized in float32 (``x_scale * (v - x_zp)``), passed through
    ``fn`` and quantized to ``y_scale`` / ``y_zp``; x then indexes the table."""
    f32 = np.float32
    lo, hi = QUANT_RANGES[x.dtype.name]
    values = np.arange(lo, hi + 1)
    zx = 0 if x_zp is None else int(np.asarray(x_zp).reshape(()))
    zy = 0 if y_zp is None else int(np.asarray(y_zp).reshape(()))
    d = f32(np.asarray(x_scale).reshape(())) * (values - zx).astype(f32)
    if fn is not None:
        d = fn(d)
    q = np.rint(d / f32(np.asarray(y_scale).reshape(()))) + zy
    np.clip(q, lo, hi, out=q)
    q[np.isnan(q)] = lo
    table = q.astype(x.dtype)
    return table[x.astype(np.int64) - lo]


def _scalars(specs, names) -> None:
    for spec, what in zip(specs, names):
        if spec is not None and not _per_tensor(spec.shape):
            raise ShapeError(f"{what} must be a scalar, got {format_shape(spec.shape)}")


class QLinearConcat(Op):
    """onnxruntime's ``com.microsoft`` QLinearConcat: inputs ``Y_scale, Y_zero_point`` then one
    ``(X, X_scale, X_zero_point)`` triple per tensor; each tensor is requantized to the
    output's scale by onnxruntime's lookup table (:func:`lookup`) and the results concatenated
    along ``axis``."""

    type = "qlinear_concat"
    inputs = ("inputs",)
    variadic = True
    min_inputs = 5
    differentiable = False
    attrs = {"axis": Attr("int", doc="axis to join along (negative counts from the end)")}

    def infer(self, y_scale, y_zp, *triples):
        if len(triples) % 3:
            raise ShapeError("QLinearConcat takes Y_scale, Y_zero_point, then (X, X_scale, "
                             f"X_zero_point) triples; got {len(triples) + 2} inputs")
        _scalars((y_scale, y_zp), ("Y_scale", "Y_zero_point"))
        xs = triples[0::3]
        for i, x in enumerate(xs):
            _int_dtype(x, f"input {i}")
            if x.dtype != y_zp.dtype:
                raise ShapeError(f"input {i} is {x.dtype} but Y_zero_point is {y_zp.dtype}")
            _scalars(triples[3 * i + 1:3 * i + 3], (f"X_scale {i}", f"X_zero_point {i}"))
        return (Spec(concat_shape(xs, self.axis), y_zp.dtype),)

    def forward(self, ctx, y_scale, y_zp, *triples):
        parts = [lookup(x, xs, xz, y_scale, y_zp)
                 for x, xs, xz in zip(triples[0::3], triples[1::3], triples[2::3])]
        return (np.concatenate(parts, axis=self.axis),)


class QLinearLeakyRelu(Op):
    """onnxruntime's ``com.microsoft`` QLinearLeakyRelu, by its lookup table (:func:`lookup`
    with ``v if v >= 0 else alpha * v`` in float32)."""

    type = "qlinear_leaky_relu"
    inputs = ("X", "X_scale", "X_zero_point?", "Y_scale", "Y_zero_point?")
    differentiable = False
    rowwise = True
    attrs = {"alpha": Attr("float", 0.01, doc="slope for negative values")}

    def infer(self, X, X_scale, X_zp, Y_scale, Y_zp=None):
        _int_dtype(X, "X")
        _scalars((X_scale, X_zp, Y_scale, Y_zp),
                 ("X_scale", "X_zero_point", "Y_scale", "Y_zero_point"))
        return (Spec(X.shape, X.dtype),)

    def forward(self, ctx, X, X_scale, X_zp, Y_scale, Y_zp=None):
        alpha = np.float32(self.alpha)
        return (lookup(X, X_scale, X_zp, Y_scale, Y_zp,
                       lambda v: np.where(v >= 0, v, alpha * v).astype(np.float32)),)


class QLinearMul(QLinearAdd):
    """onnxruntime's ``com.microsoft`` QLinearMul: the exact integer product
    ``(a - a_zp) * (b - b_zp)`` converted to float32, times ``a_scale * b_scale / c_scale``
    (float32), plus ``c_zp``, rounded half to even and saturated, as its x86 kernel computes
    it."""

    type = "qlinear_mul"

    def forward(self, ctx, A, A_scale, A_zp, B, B_scale, B_zp, C_scale, C_zp=None):
        f32 = np.float32

        def value(v):
            return 0 if v is None else int(np.asarray(v).reshape(()))
        ratio = f32(f32(f32(np.asarray(A_scale).reshape(())) * f32(np.asarray(B_scale)
                                                                    .reshape(())))
                    / f32(np.asarray(C_scale).reshape(())))
        product = (A.astype(np.int32) - value(A_zp)) * (B.astype(np.int32) - value(B_zp))
        c = product.astype(f32) * ratio + f32(value(C_zp))
        lo, hi = QUANT_RANGES[A.dtype.name]
        return (np.clip(np.rint(c), lo, hi).astype(A.dtype),)


class QLinearAveragePool(Op):
    """onnxruntime's ``com.microsoft`` QLinearAveragePool (channels first): each window's
    dequantized values (``x_scale * (x - x_zp)``, float32) summed in float32 in row-major tap
    order, divided by the window's count (the whole kernel with ``count_include_pad``, else
    the taps inside the input), then quantized as ``round(y / y_scale + y_zp)`` — onnxruntime's
    sequence, so the result is bit for bit its own."""

    type = "qlinear_average_pool"
    inputs = ("X", "x_scale", "x_zero_point?", "y_scale", "y_zero_point?")
    differentiable = False
    rowwise = True
    attrs = {**WINDOW_ATTRS,
             "ceil_mode": Attr("int", 0, choices=(0, 1), doc="round the output size up"),
             "count_include_pad": Attr("int", 0, choices=(0, 1),
                                       doc="divide by the whole kernel, pads included"),
             "channels_last": Attr("int", 0, choices=(0, 1),
                                   doc="NHWC layout (only 0, channels first, is supported)")}

    def check(self):
        if not self.kernel_shape:
            raise AttrError(f"{self.type}: needs kernel_shape", attr="kernel_shape")
        if self.channels_last:
            raise AttrError(f"{self.type}: channels_last is not supported; the model's layout "
                            "must be channels first (NCHW)", attr="channels_last")
        if self.dilations and set(self.dilations) != {1}:
            raise AttrError(f"{self.type}: dilations are not supported (onnxruntime has none "
                            "for this op)", attr="dilations")

    def _geometry(self, shape):
        if len(self.kernel_shape) != len(shape) - 2:
            raise ShapeError(f"kernel_shape {list(self.kernel_shape)} does not match the "
                             f"{len(shape) - 2} spatial axes of {format_shape(shape)}")
        return geometry(self, tuple(shape[2:]), tuple(self.kernel_shape),
                        bool(self.ceil_mode))

    def infer(self, X, x_scale, x_zp, y_scale, y_zp=None):
        _int_dtype(X, "X")
        _scalars((x_scale, x_zp, y_scale, y_zp),
                 ("x_scale", "x_zero_point", "y_scale", "y_zero_point"))
        if X.ndim < 3:
            raise ShapeError(f"X must have a batch, a channel and spatial axes, got "
                             f"{format_shape(X.shape)}")
        return (Spec(X.shape[:2] + self._geometry(X.shape).out, X.dtype),)

    def forward(self, ctx, X, x_scale, x_zp, y_scale, y_zp=None):
        f32 = np.float32
        g = self._geometry(X.shape)
        zx = 0 if x_zp is None else int(np.asarray(x_zp).reshape(()))
        zy = 0 if y_zp is None else int(np.asarray(y_zp).reshape(()))
        xf = f32(np.asarray(x_scale).reshape(())) * (X.astype(np.int32) - zx).astype(f32)
        padded = np.pad(xf, [(0, 0), (0, 0)] + list(zip(g.begin, g.end)))
        acc = np.zeros(X.shape[:2] + g.out, f32)
        for taps in itertools.product(*(range(k) for k in g.kernel)):   # row-major, as ORT
            acc += padded[(slice(None), slice(None)) + tuple(
                slice(t, t + s * (o - 1) + 1, s) for t, s, o in zip(taps, g.strides, g.out))]
        if self.count_include_pad:
            count = np.asarray(f32(np.prod(g.kernel)))
        else:
            count = np.ones((), f32)
            for axis, (n, k, s, b, o) in enumerate(zip(X.shape[2:], g.kernel, g.strides,
                                                       g.begin, g.out)):
                start = np.arange(o) * s - b
                inside = (np.minimum(start + k, n) - np.maximum(start, 0)).astype(f32)
                count = count * inside.reshape((-1,) + (1,) * (len(g.out) - axis - 1))
        y = acc / count
        q = np.rint(y / f32(np.asarray(y_scale).reshape(())) + f32(zy))
        lo, hi = QUANT_RANGES[X.dtype.name]
        return (np.clip(q, lo, hi).astype(X.dtype),)


# -- onnxruntime's com.microsoft DynamicQuantizeLSTM -----------------------------------------------

def dynamic_params(x: np.ndarray) -> tuple[np.float32, int]:
    """onnxruntime's dynamic uint8 quantization parameters of ``x`` (``GetQuantizationParameter``,
    the same arithmetic as DynamicQuantizeLinear): the range widened to include 0, ``scale =
    (max - min) / 255`` (1 for an all-zero range) and the zero point ``round(0 - min / scale)``
    clamped to [0, 255], all in float32."""
    f32 = np.float32
    zero = f32(0)
    hi = lo = zero
    if x.size:                  # (a NaN maximum or minimum counts as 0, as max(0, nan) gives)
        x32 = x.astype(f32, copy=False)
        hi, lo = x32.max(), x32.min()
        hi = hi if hi > zero else zero
        lo = lo if lo < zero else zero
    scale = f32(1) if hi == lo else (hi - lo) / f32(255)
    zp = int(np.rint(min(f32(255), max(zero, zero - lo / scale))))
    return scale, zp


def _quantize_u8(x: np.ndarray, scale: np.float32, zp: int, backend=DEFAULT) -> np.ndarray:
    """``saturate(round_half_even(x / scale) + zp)`` as uint8, the division in float32 (one
    pass: the ``quantize_u8`` kernel)."""
    out = backend.empty(x.shape, np.uint8)
    backend.kernels.quantize_u8(np.ascontiguousarray(x, dtype=np.float32).reshape(-1),
                                np.float32(scale), np.float32(zp), out.reshape(-1))
    return out


def zero_point_problem(zp: np.ndarray) -> str | None:
    """Why onnxruntime's DynamicQuantizeLSTM refuses these weight zero points, or None: its
    kernel reads one zero point per direction, so per-column (2-d) int8 zero points must all
    be 0 and uint8 ones all equal."""
    zp = np.asarray(zp)
    if zp.ndim == 2 and zp.size:
        if zp.dtype == np.int8 and zp.any():
            return ("per-column int8 zero points must all be 0 (onnxruntime's "
                    "DynamicQuantizeLSTM refuses others)")
        if zp.dtype == np.uint8 and (zp != zp.flat[0]).any():
            return ("per-column uint8 zero points must all be equal (onnxruntime's "
                    "DynamicQuantizeLSTM uses one)")
    return None


class DynamicQuantizeLSTM(LSTM):
    """onnxruntime's ``com.microsoft`` DynamicQuantizeLSTM (what ``quantize_dynamic`` makes of
    an LSTM): ONNX's LSTM whose two products ``x W`` and ``h R`` are integer products of
    dynamically quantized activations and stored int8/uint8 weights.

    Inputs are the LSTM's, then ``W_scale, W_zero_point, R_scale, R_zero_point``; the weights
    are stored **transposed** from LSTM's layout: ``W`` is ``(D, input_size, 4H)`` and ``R`` is
    ``(D, H, 4H)`` (gate order iofc along the last axis), the scales and zero points ``(D,)``
    (per tensor) or ``(D, 4H)`` (per output column).  There is no ``layout`` attribute.

    The forward is onnxruntime's CPU kernel (``UniDirectionalLstm`` with ``uint8`` weights),
    step by step, because its dynamic quantization decides the values:

    * per direction, the input rows of the first ``max(sequence_lens)`` steps (in the
      direction's order) are quantized together (:func:`dynamic_params`), multiplied exactly by
      ``W - zp`` and scaled by the float32 ``x_scale * W_scale``;
    * at every step the previous hidden state of the whole batch is quantized on its own range
      (rows already past their length count as 0, as onnxruntime's zeroed outputs do), its
      exact product with ``R - zp`` scaled by ``h_scale * R_scale`` is added, then the
      peepholes, then the fused bias ``Wb + Rb``, then clip and the activations;
    * only the **first** zero point of each direction is used (onnxruntime's kernel reads one;
      it refuses int8 per-column zero points that are not 0 and uint8 ones that differ, and so
      does this op);
    * an example of length 0 gives zero ``Y_h`` and ``Y_c`` (onnxruntime's choice), whatever
      the initial state.

    Integer products are exact (onnxruntime's AVX2 ``vpmaddubsw`` can saturate pairs of uint8 x
    int8 products, which is not copied) and the float32 operations come in onnxruntime's order,
    but its sigmoid and tanh are MLAS approximations a few ulp from numpy's, and a one-ulp
    difference in ``h`` can move a value across a rounding boundary of the next step's dynamic
    quantization: results agree with onnxruntime to about 1e-6, not bit for bit.  onnxruntime
    run with several threads quantizes chunks of the batch separately (the result depends on its
    thread count); this op is its single-threaded result.

    Gradients: the products are piecewise constant in the quantized activations, so the op is
    forward-only unless ``straight_through`` is set.  It then differentiates the surrogate in
    which each dynamic quantize-dequantize is the identity: the float ``lstm``'s backward (reused
    as is), through time on this forward's own gate values, with the dequantized weights as
    constants, for ``X``, ``B``, ``initial_h``, ``initial_c`` and ``P``.  Where no quantizer
    lies between an input and the outputs (``B``, ``P``, ``initial_c`` over one step) this is
    the exact derivative; through the quantized products it is the straight-through estimate.
    The integer weights, their scales and zero points get no gradient.
    """

    type = "dynamic_quantize_lstm"
    inputs = ("X", "W", "R", "B?", "sequence_lens?", "initial_h?", "initial_c?", "P?",
              "W_scale", "W_zero_point", "R_scale", "R_zero_point")
    outputs = ("Y", "Y_h", "Y_c")
    no_grad_inputs = frozenset({"W", "R", "sequence_lens", "W_scale", "W_zero_point",
                                "R_scale", "R_zero_point"})
    rowwise = False
    layout = 0                      # onnxruntime's op has no layout attribute: always (T, N, I)
    attrs = {k: v for k, v in LSTM.attrs.items() if k != "layout"}
    attrs["straight_through"] = Attr(
        "bool", False, doc="differentiate as the float lstm with the dequantized weights "
                           "(dynamic quantization as the identity)")
    differentiable = _StraightThrough()
    forward_only_hint = ("; or differentiate it as the float LSTM with its dequantized weights "
                         "(the straight-through estimator): 'straight_through: true' on the node "
                         "in YAML, flowgrad.load(model, straight_through=True) for an ONNX model")

    # -- shapes -------------------------------------------------------------------------------
    def infer(self, X, W, R, B=None, sequence_lens=None, initial_h=None, initial_c=None,
              P=None, W_scale=None, W_zero_point=None, R_scale=None, R_zero_point=None):
        if X.dtype.kind != "f":
            raise ShapeError(f"X must be floating point, got {X.dtype}")
        if X.ndim != 3 or W.ndim != 3 or R.ndim != 3:
            raise ShapeError(f"{self.type} needs 3-d X, W and R, got X {format_shape(X.shape)}, "
                             f"W {format_shape(W.shape)}, R {format_shape(R.shape)}")
        for spec, what in ((W, "W"), (R, "R")):
            _int_dtype(spec, what)
        D = self.num_directions
        hidden = R.shape[1] if R.shape[1] is not None else self.hidden_size
        if None not in (hidden, self.hidden_size) and hidden != self.hidden_size:
            raise ShapeError(f"hidden_size is {self.hidden_size} but R has shape "
                             f"{format_shape(R.shape)}")
        gh = None if hidden is None else 4 * hidden
        for name, spec, want in (("W", W, (D, X.shape[2], gh)), ("R", R, (D, hidden, gh))):
            if any(None not in (a, b) and a != b for a, b in zip(spec.shape, want)):
                raise ShapeError(f"{self.type} ({self.direction}): '{name}' must have shape "
                                 f"{format_shape(want)} (onnxruntime's layout: input by gates, "
                                 f"the transpose of LSTM's), got {format_shape(spec.shape)}")
        for spec, weight, what in ((W_scale, W, "W_scale"), (W_zero_point, W, "W_zero_point"),
                                   (R_scale, R, "R_scale"), (R_zero_point, R, "R_zero_point")):
            shape = spec.shape
            if not (len(shape) in (1, 2) and shape[0] in (None, D)
                    and (len(shape) == 1 or shape[1] in (None, gh) or gh is None)):
                raise ShapeError(f"{what} must have shape ({D},) (per tensor) or ({D}, "
                                 f"{gh if gh is not None else '4*hidden_size'}) (per column); "
                                 f"got {format_shape(shape)}")
            if what.endswith("zero_point") and spec.dtype != weight.dtype:
                raise ShapeError(f"{what} is {spec.dtype} but its weight is {weight.dtype}; "
                                 "they must have the same type")
            if what.endswith("scale") and spec.dtype.kind != "f":
                raise ShapeError(f"{what} must be floating point, got {spec.dtype}")
        if B is not None and gh is not None and B.shape not in ((D, 2 * gh), (None, 2 * gh),
                                                                 (D, None), (None, None)):
            raise ShapeError(f"B must have shape ({D}, {2 * gh}), got {format_shape(B.shape)}")
        if P is not None and hidden is not None and P.shape[-1] not in (None, 3 * hidden):
            raise ShapeError(f"P must have shape ({D}, {3 * hidden}), got "
                             f"{format_shape(P.shape)}")
        T, N = X.shape[0], X.shape[1]
        state = Spec((D, N, hidden), X.dtype)
        return (Spec((T, D, N, hidden), X.dtype), state, state)

    # -- forward ------------------------------------------------------------------------------
    def _weights(self, backend, q, scale, zp, what):
        """Per direction: (int weight, its one zero point, float32 scale (scalar or per
        column)), checked as onnxruntime's kernel checks them."""
        D = self.num_directions
        zp = np.asarray(zp).reshape(D, -1)
        problem = zero_point_problem(zp)
        if problem:
            raise ValueError(f"{what}_zero_point: {problem}")
        scale = np.asarray(scale, np.float32).reshape(D, -1)
        # one array per direction, kept for a constant weight (then shifted once, see
        # _shifted_weight)
        parts = backend.prepared(q, lambda v: tuple(np.ascontiguousarray(v[d]) for d in range(D)),
                                 "directions")
        return [(parts[d], int(zp[d, 0]), scale[d] if scale.shape[1] > 1 else scale[d, 0])
                for d in range(D)]

    @staticmethod
    def _product(backend, a, weight, dtype):
        """onnxruntime's quantized GEMM of the float rows ``a`` by one direction's weight:
        ``a`` quantized on its own range, the exact integer product, times the float32
        ``a_scale * w_scale``."""
        q, zp, w_scale = weight
        a_scale, a_zp = dynamic_params(a)
        acc = _int_matmul(_quantize_u8(a, a_scale, a_zp, backend), q, np.asarray(a_zp, np.uint8),
                          np.asarray(zp, q.dtype), backend)
        mult = (a_scale * np.asarray(w_scale, np.float32)).astype(np.float32)
        return (acc.astype(np.float32) * mult).astype(dtype, copy=False)

    def forward(self, ctx, X, W, R, B=None, sequence_lens=None, initial_h=None,
                initial_c=None, P=None, W_scale=None, W_zero_point=None, R_scale=None,
                R_zero_point=None):
        dtype = X.dtype
        T, N, I = X.shape
        D, H = self.num_directions, R.shape[1]
        gh = 4 * H
        if sequence_lens is None:
            lens = np.full(N, T, np.int64)
        else:
            lens = np.asarray(sequence_lens).reshape(-1).astype(np.int64)
            if lens.shape[0] != N or (lens < 0).any() or (lens > T).any():
                raise ValueError(f"sequence_lens must hold one length in [0, {T}] per example "
                                 f"of the batch of {N}; got {lens.tolist()}")
        max_len = int(lens.max(initial=0))
        min_len = int(lens.min(initial=0))
        Wd = self._weights(ctx.backend, W, W_scale, W_zero_point, "W")
        Rd = self._weights(ctx.backend, R, R_scale, R_zero_point, "R")
        bias = None if B is None else (B[:, :gh] + B[:, gh:]).astype(dtype)    # Wb + Rb
        rows = np.arange(N)
        Y = np.zeros((T, D, N, H), dtype)
        Y_h = np.zeros((D, N, H), dtype)
        Y_c = np.zeros((D, N, H), dtype)
        tapes = []
        keep = ctx.grad_enabled and self.straight_through
        for d in range(D):
            f, g, hact = self._acts[d]
            reverse = self.direction == "reverse" or d == 1
            # the time index of each (step, example), onnxruntime's ReverseSequence: an example
            # is read backwards from its last real step; its padding stays in place
            steps = np.arange(max_len)[:, None]
            tix = np.where(reverse & (steps < lens), lens - 1 - steps, steps) if reverse \
                else np.broadcast_to(steps, (max_len, N))
            XW = self._product(ctx.backend, X[tix, rows].reshape(max_len * N, I), Wd[d],
                               dtype).reshape(max_len, N, gh)
            h = (np.zeros((N, H), dtype) if initial_h is None else initial_h[d]).astype(dtype)
            c = (np.zeros((N, H), dtype) if initial_c is None else initial_c[d]).astype(dtype)
            p_i, p_o, p_f = (None,) * 3 if P is None else np.split(P[d].astype(dtype), 3)
            step = None if keep else self._eval_step(ctx.backend.kernels, d, bias, P, H, dtype)
            row = np.empty((N, H), dtype)
            if keep:        # the float lstm's tape, for the straight-through backward
                pre = np.zeros((T, N, gh), dtype)
                act = np.zeros((T, N, gh), dtype)
                prev_h, prev_c, cells, hc = (np.zeros((T, N, H), dtype) for _ in range(4))
            for s in range(max_len):
                # rows past their length output zeros in onnxruntime: 0 in the range
                live = h if s == 0 or s <= min_len else \
                    np.where((lens >= s)[:, None], h, 0).astype(dtype)
                if step is not None:        # evaluation: h and c updated in place
                    step(XW[s], self._product(ctx.backend, live, Rd[d], dtype), h, c, row,
                         lens, s)
                    Y[tix[s], d, rows] = row        # (finished rows: 0 where nothing was)
                    continue
                z = XW[s] + self._product(ctx.backend, live, Rd[d], dtype)
                if P is not None:
                    z[:, :H] += c * p_i
                    z[:, 2 * H:3 * H] += c * p_f
                if bias is not None:
                    z[:, :H] += bias[d, :H]
                    z[:, 2 * H:] += bias[d, 2 * H:]
                i = f(self._clip(z[:, :H]))
                fg = 1 - i if self.input_forget else f(self._clip(z[:, 2 * H:3 * H]))
                gg = g(self._clip(z[:, 3 * H:]))
                cell = c * fg + i * gg
                if P is not None:
                    z[:, H:2 * H] += cell * p_o
                if bias is not None:
                    z[:, H:2 * H] += bias[d, H:2 * H]
                o = f(self._clip(z[:, H:2 * H]))
                th = hact(cell)
                new = th * o
                on = s < lens
                if on.all():            # every example still running (always at batch 1)
                    Y[tix[s], d, rows] = new
                    if keep:
                        t, b = tix[s], rows
                        pre[t, b], prev_h[t, b], prev_c[t, b] = z, h, c
                        act[t, b] = np.concatenate([i, o, fg, gg], axis=1)
                        cells[t, b], hc[t, b] = cell, th
                    h, c = new, cell
                    continue
                t, b = tix[s][on], rows[on]
                if keep:
                    pre[t, b], prev_h[t, b], prev_c[t, b] = z[on], h[on], c[on]
                    act[t, b] = np.concatenate([i, o, fg, gg], axis=1)[on]
                    cells[t, b], hc[t, b] = cell[on], th[on]
                Y[t, d, b] = new[on]
                h = np.where(on[:, None], new, h)
                c = np.where(on[:, None], cell, c)
            empty = (lens == 0)[:, None]
            Y_h[d] = np.where(empty, 0, h)
            Y_c[d] = np.where(empty, 0, c)
            if keep:
                tapes.append((pre, act, prev_h, prev_c, cells, hc,
                              None if P is None else P[d]))
        if keep:
            Wf = np.stack([self._dequantized(w, dtype) for w in Wd])
            Rf = np.stack([self._dequantized(r, dtype) for r in Rd])
            masks = self._masks(sequence_lens, T, N, dtype)
            ctx.save(X, Wf, Rf, masks, tapes, (D, 2 * gh), initial_h is not None,
                     [initial_c is not None, P is not None], lens == 0)
        return Y, Y_h, Y_c

    def _eval_step(self, kernels, d, bias, P, H, dtype):
        """Evaluation (no tape): the rest of a step after the recurrent product (bias,
        peepholes, clip, gates, state and output row) as one call of the float lstm's step
        kernel (:mod:`flowgrad.kernels.recurrent`) instead of some twenty numpy calls on
        one-row arrays.  Its gates are evaluated in float64 and rounded once: within float32
        rounding of the numpy steps (which the tape needs, so training keeps them)."""
        rb = np.zeros(4 * H, dtype) if bias is None else np.ascontiguousarray(bias[d])
        if self._plain[d] and P is None and not self.input_forget:
            return lambda xw, hr, h, c, y, lens, s: kernels.lstm_step(xw, hr, rb, h, c, y,
                                                                      lens, s)
        codes, alphas, betas = self._kernel_acts[d]
        clip = np.inf if self.clip is None else float(self.clip)
        p = np.zeros(3 * H, dtype) if P is None else np.ascontiguousarray(P[d], dtype)
        forget, peep = bool(self.input_forget), P is not None
        return lambda xw, hr, h, c, y, lens, s: kernels.lstm_step_general(
            xw, hr, rb, p, h, c, y, lens, s, codes, alphas, betas, clip, forget, peep)

    @staticmethod
    def _dequantized(weight, dtype):
        """One direction's weight as the float LSTM takes it: ``(q - zp) * scale``,
        transposed to (gates, inputs)."""
        q, zp, scale = weight
        return ((q.astype(np.float64) - zp) * np.asarray(scale, np.float64)).T.astype(dtype)

    def backward(self, ctx, gY, *g_states):
        """The float lstm's backward on this forward's tape (see the class docstring); an
        example of length 0 passes no gradient to its initial state (its outputs are 0)."""
        *saved, empty = ctx.saved
        need = ctx.needs_input_grad
        if empty.any():
            g_states = tuple(None if gs is None else np.where(empty[None, :, None], 0, gs)
                             for gs in g_states)
        ctx.saved = tuple(saved)
        ctx.needs_input_grad = (need[0], False, False) + tuple(need[3:8])
        try:
            grads = super().backward(ctx, gY, *g_states)
        finally:
            ctx.saved, ctx.needs_input_grad = tuple(saved) + (empty,), need
        grads = tuple(grads) + (None,) * (len(need) - len(grads))
        return grads[:len(need)]
