"""Nonlinearities.  Each backward multiplies the incoming gradient by f'(x).

The transcendental ones (erf, gelu, tanh, sigmoid, softplus, elu/selu) and the cheap but
multi-pass ones (softsign, hard_swish) run as compiled kernels, ``ctx.backend.kernels.<name>``
(:mod:`flowgrad.kernels.activations`, where their numpy references and accuracy are stated):
one pass over memory, float64 inside, one rounding on the store.  softmax and log_softmax run
the row kernels (:mod:`flowgrad.kernels.rows`) along their axis.  relu, leaky_relu, clip and
hard_sigmoid stay numpy ufuncs, already one pass each.

Forms are chosen to be stable over the whole float range: sigmoid and softplus from e^−|x| (no
overflow, precise tails), softmax subtracts the max, elu/selu take exponentials of the negative
part only.  Outputs keep numpy's float dtype for the input (float32 stays float32; integers
give floats).  Elementwise ops declare ``rowwise`` and ``inplace``: their kernels read each
element before writing it, so the plan may place the output over the input when evaluating.
"""
from __future__ import annotations

import math

import functools

import numpy as np

from ..backend import DEFAULT as _DEFAULT_BACKEND
from ..op import Attr, Op, ShapeError, Spec, broadcast_shapes, normalize_axis, result_dtype, \
    unbroadcast
from .elementwise import Unary, float_dtype

_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


@functools.lru_cache(maxsize=None)
def _compute_dtype(dtype) -> np.dtype:
    """The dtype a kernel runs on for results of ``dtype``: float32 or float64 as they are,
    float16 (from float16 or small integer inputs) in float32.  (Cached, as the promotion
    below: on small arrays numpy's dtype logic costs more than the kernel.)"""
    dtype = np.dtype(dtype)
    return dtype if dtype in _KERNEL_DTYPES else np.dtype(np.float32)


@functools.lru_cache(maxsize=None)
def _grad_dtype(gy_dtype, saved_dtype) -> np.dtype:
    return np.result_type(gy_dtype, float_dtype(saved_dtype))


def _flat(a, dtype) -> np.ndarray:
    """``a`` as a C-contiguous 1-d array of ``dtype``: a view when it already is one."""
    if type(a) is np.ndarray and a.dtype == dtype and a.flags.c_contiguous:
        return a.reshape(-1)
    return np.asarray(a, dtype=dtype, order="C").reshape(-1)


#: Elements per piece of a large elementwise kernel call shared among threads
#: (:meth:`~flowgrad.backend.CPUBackend.parallel`): a megabyte of float32, long enough that
#: handing a piece to a thread costs little next to computing it, short enough to share out
#: the activations of a large batch.
PIECE_ELEMENTS = 1 << 18

#: Elements from which a row kernel's rows (softmax, layer norm) are shared among threads
#: (:meth:`~flowgrad.backend.CPUBackend.batch`, ranges of whole rows): ~0.1 ms of work, where a
#: call into the thread pool costs a few microseconds.  (An attention's probabilities, 16 x 4
#: heads x 64 x 64: 0.57 ms on one core.)
SHARED_ROWS = 1 << 16


def _pointwise(backend, kernel, dtype, arrays, *scalars) -> np.ndarray:
    """``kernel(*arrays, *scalars, out)`` elementwise over same-shape ``arrays``, into an output
    of ``dtype`` allocated through ``backend``.

    The output is allocated first, before anything else of its shape: when the plan runs the op
    in place, that is where it hands back the input's own memory (the kernels read each element
    before writing it).  An output the kernel cannot write directly (float16, a non-contiguous
    placement) is computed aside and copied in.
    """
    out = backend.empty(arrays[0].shape, dtype)
    work = _compute_dtype(dtype)
    flat = [_flat(a, work) for a in arrays]
    direct = out.dtype == work and out.flags.c_contiguous
    target = (out if direct else np.empty(out.shape, work)).reshape(-1)
    if target.size < 2 * PIECE_ELEMENTS:
        kernel(*flat, *scalars, target)
    else:       # pieces of a size fixed by the array's, whatever the thread count
        pieces = -(-target.size // PIECE_ELEMENTS)

        def piece(i):
            part = slice(i * PIECE_ELEMENTS, (i + 1) * PIECE_ELEMENTS)
            kernel(*[f[part] for f in flat], *scalars, target[part])
        backend.parallel(piece, pieces)
    if not direct:
        np.copyto(out, target.reshape(out.shape), casting="unsafe")
    return out


def _input_grad(ctx, kernel, saved, gy, *scalars) -> np.ndarray:
    """The gradient ``kernel(saved, gy, *scalars)`` in gy's float dtype (that of the output)."""
    dtype = _grad_dtype(gy.dtype, saved.dtype)
    return _pointwise(ctx.backend, kernel, dtype, (saved, gy), *scalars)


class _SameDtype(Unary):
    """Pointwise op whose output has its input's dtype (also for integer inputs)."""

    def infer(self, x):
        return (x,)


class Relu(_SameDtype):
    """max(x, 0); gradient 1 where x > 0."""

    type = "relu"
    rowwise = inplace = True

    def pointwise(self):
        return (("max", 0.0),)

    def forward(self, ctx, x):
        if x.dtype.kind == "f":
            y = _pointwise(ctx.backend, ctx.backend.kernels.relu, x.dtype, (x,))
        else:                           # (integer relu: numpy's, exact anyway)
            y = np.maximum(x, 0, out=ctx.backend.empty(x.shape, x.dtype))
        ctx.save(y)
        return (y,)

    def backward(self, ctx, gy):
        (y,) = ctx.saved
        return (_input_grad(ctx, ctx.backend.kernels.relu_backward, y, gy),)


class LeakyRelu(Unary):
    """x for x > 0, alpha·x otherwise: a small slope keeps negative units trainable."""

    type = "leaky_relu"
    attrs = {"alpha": Attr("float", 0.01, doc="slope for x <= 0")}
    rowwise = inplace = True

    def forward(self, ctx, x):
        positive = x > 0
        ctx.save(positive)
        y = ctx.backend.empty(x.shape, float_dtype(x.dtype))
        np.multiply(x, self.alpha, out=y, where=~positive)
        np.copyto(y, x, where=positive)
        return (y,)

    def backward(self, ctx, gy):
        (positive,) = ctx.saved
        return (np.where(positive, gy, self.alpha * gy),)


class Elu(Unary):
    """Exponential linear unit: x for x > 0, alpha·(e^x − 1) otherwise."""

    type = "elu"
    attrs = {"alpha": Attr("float", 1.0, doc="saturation value for large negative x is -alpha")}
    rowwise = inplace = True
    _gamma = 1.0

    def forward(self, ctx, x):
        if ctx.grad_enabled:
            ctx.save(x)
        return (_pointwise(ctx.backend, ctx.backend.kernels.elu, float_dtype(x.dtype), (x,),
                           self.alpha, self._gamma),)

    def backward(self, ctx, gy):
        (x,) = ctx.saved
        return (_input_grad(ctx, ctx.backend.kernels.elu_backward, x, gy, self.alpha,
                            self._gamma),)


class Selu(Elu):
    """Scaled ELU, gamma·elu(x, alpha), with ONNX's self-normalising constants as defaults."""

    type = "selu"
    attrs = {"alpha": Attr("float", 1.67326319217681884765625),
             "gamma": Attr("float", 1.05070102214813232421875)}

    @property
    def _gamma(self):
        return self.gamma


class Sigmoid(Unary):
    """1 / (1 + e^-x), computed without overflow; gradient y (1 - y)."""

    type = "sigmoid"
    rowwise = inplace = True

    def pointwise(self):
        return (("sigmoid",),)

    def forward(self, ctx, x):
        y = _pointwise(ctx.backend, ctx.backend.kernels.sigmoid, float_dtype(x.dtype), (x,))
        ctx.save(y)
        return (y,)

    def backward(self, ctx, gy):
        (y,) = ctx.saved
        return (_input_grad(ctx, ctx.backend.kernels.sigmoid_backward, y, gy),)


class Tanh(Unary):
    """tanh(x); gradient 1 - y²."""

    type = "tanh"
    rowwise = inplace = True

    def pointwise(self):
        return (("tanh",),)

    def forward(self, ctx, x):
        y = _pointwise(ctx.backend, ctx.backend.kernels.tanh, float_dtype(x.dtype), (x,))
        ctx.save(y)
        return (y,)

    def backward(self, ctx, gy):
        (y,) = ctx.saved
        return (_input_grad(ctx, ctx.backend.kernels.tanh_backward, y, gy),)


class Softplus(Unary):
    """log(1 + e^x) = max(x, 0) + log(1 + e^−|x|) (exact for large |x|); gradient sigmoid(x)."""

    type = "softplus"
    rowwise = inplace = True

    def forward(self, ctx, x):
        if ctx.grad_enabled:
            ctx.save(x)
        return (_pointwise(ctx.backend, ctx.backend.kernels.softplus, float_dtype(x.dtype),
                           (x,)),)

    def backward(self, ctx, gy):
        (x,) = ctx.saved
        return (_input_grad(ctx, ctx.backend.kernels.softplus_backward, x, gy),)


class Softsign(Unary):
    """x / (1 + |x|); gradient 1 / (1 + |x|)²."""

    type = "softsign"
    rowwise = inplace = True

    def forward(self, ctx, x):
        if ctx.grad_enabled:
            ctx.save(x)
        return (_pointwise(ctx.backend, ctx.backend.kernels.softsign, float_dtype(x.dtype),
                           (x,)),)

    def backward(self, ctx, gy):
        (x,) = ctx.saved
        return (_input_grad(ctx, ctx.backend.kernels.softsign_backward, x, gy),)


class Step(_SameDtype):
    """Hard threshold: 1 where x > 0, else 0 — the perceptron unit.

    Its derivative is 0 almost everywhere, so backward returns zeros rather than refusing:
    a graph mixing threshold units with differentiable ones still runs backward, and the
    threshold units simply pass no signal (as in the lecture notes).
    """

    type = "step"

    def forward(self, ctx, x):
        ctx.save(x.shape, x.dtype)
        return ((x > 0).astype(x.dtype),)

    def backward(self, ctx, gy):
        shape, dtype = ctx.saved
        return (np.zeros(shape, dtype),)


# -- erf and gelu ---------------------------------------------------------------------------

def erf(x, backend=_DEFAULT_BACKEND) -> np.ndarray:
    """The error function of an array, in its float dtype: the ``erf`` kernel (float32 within
    1 ulp; float64 by libm's ``erf``)."""
    x = np.asarray(x)
    return _pointwise(backend, backend.kernels.erf, float_dtype(x.dtype), (x,))


class Erf(Unary):
    """The Gauss error function; gradient 2/√π · e^(−x²)."""

    type = "erf"
    rowwise = inplace = True

    def forward(self, ctx, x):
        if ctx.grad_enabled:
            ctx.save(x)
        return (erf(x, ctx.backend),)

    def backward(self, ctx, gy):
        (x,) = ctx.saved
        return (_input_grad(ctx, ctx.backend.kernels.erf_backward, x, gy),)


class Gelu(Unary):
    """x·Φ(x), exactly (``approximate: none``, via erf) or with the tanh approximation.

    Forward and backward are one kernel each; backward recomputes Φ and φ from the saved input
    rather than saving them (a pass of arithmetic is cheaper than two more arrays in memory).
    """

    type = "gelu"
    attrs = {"approximate": Attr("str", "none", choices=("none", "tanh"))}
    rowwise = inplace = True

    def forward(self, ctx, x):
        if ctx.grad_enabled:
            ctx.save(x)
        kernels = ctx.backend.kernels
        kernel = kernels.gelu_tanh if self.approximate == "tanh" else kernels.gelu
        return (_pointwise(ctx.backend, kernel, float_dtype(x.dtype), (x,)),)

    def backward(self, ctx, gy):
        (x,) = ctx.saved
        kernels = ctx.backend.kernels
        kernel = kernels.gelu_tanh_backward if self.approximate == "tanh" else kernels.gelu_backward
        return (_input_grad(ctx, kernel, x, gy),)


# -- clipping and hard approximations -------------------------------------------------------

class Clip(_SameDtype):
    """min(max(x, min), max); the gradient passes where min < x < max."""

    type = "clip"
    attrs = {"min": Attr("float", -math.inf, doc="lower bound"),
             "max": Attr("float", math.inf, doc="upper bound")}

    def check(self):
        if self.min > self.max:
            from ..errors import AttrError
            raise AttrError(f"clip needs min <= max, got min={self.min}, max={self.max}",
                            attr="min")

    rowwise = inplace = True

    def pointwise(self):
        return (("clip", self.min, self.max),)

    def forward(self, ctx, x):
        if ctx.grad_enabled:     # (two passes and a mask: only for a backward to come)
            ctx.save((x > self.min) & (x < self.max))
        if x.dtype.kind != "f":
            return (np.clip(x, self.min, self.max).astype(x.dtype, copy=False),)
        return (np.clip(x, self.min, self.max, out=ctx.backend.empty(x.shape, x.dtype)),)

    def backward(self, ctx, gy):
        (inside,) = ctx.saved
        return (gy * inside,)


class HardSigmoid(Unary):
    """max(0, min(1, alpha·x + beta)): a piecewise-linear sigmoid (ONNX defaults)."""

    type = "hard_sigmoid"
    attrs = {"alpha": Attr("float", 0.2), "beta": Attr("float", 0.5)}
    rowwise = inplace = True

    def pointwise(self):
        return (("mul", self.alpha), ("add", self.beta), ("clip", 0.0, 1.0))

    def forward(self, ctx, x):
        z = np.multiply(x, self.alpha, out=ctx.backend.empty(x.shape, float_dtype(x.dtype)))
        np.add(z, self.beta, out=z)
        if ctx.grad_enabled:
            ctx.save((z > 0) & (z < 1))
        return (np.clip(z, 0, 1, out=z),)

    def backward(self, ctx, gy):
        (inside,) = ctx.saved
        return (gy * inside * self.alpha,)


class HardSwish(Unary):
    """x · hard_sigmoid(x) with alpha = 1/6, beta = 1/2 (ONNX HardSwish, MobileNetV3)."""

    type = "hard_swish"
    rowwise = inplace = True

    def forward(self, ctx, x):
        if ctx.grad_enabled:
            ctx.save(x)
        return (_pointwise(ctx.backend, ctx.backend.kernels.hard_swish, float_dtype(x.dtype),
                           (x,)),)

    def backward(self, ctx, gy):
        (x,) = ctx.saved
        return (_input_grad(ctx, ctx.backend.kernels.hard_swish_backward, x, gy),)


class Prelu(Op):
    """Leaky ReLU with a learned slope: x for x > 0, slope·x otherwise.

    ``slope`` broadcasts against ``x`` (one per channel is typical) and its gradient is summed
    back to its own shape.
    """

    type = "prelu"
    inputs = ("x", "slope")

    def infer(self, x, slope):
        shape = broadcast_shapes(x.shape, slope.shape)
        if len(shape) != x.ndim or any(d is not None and e is not None and d != e
                                       for d, e in zip(shape, x.shape)):
            raise ShapeError(f"prelu slope of shape {slope.shape} must broadcast to x's shape "
                             f"{x.shape} without enlarging it")
        return (Spec(x.shape, result_dtype(x, slope)),)

    def forward(self, ctx, x, slope):
        positive = x > 0
        ctx.save(x, slope, positive)
        return (np.where(positive, x, slope * x),)

    def backward(self, ctx, gy):
        x, slope, positive = ctx.saved
        need_x, need_slope = ctx.needs_input_grad
        gx = gs = None
        if need_x:
            gx = unbroadcast(np.where(positive, gy, gy * slope), x.shape).astype(x.dtype,
                                                                                copy=False)
        if need_slope:
            gs = unbroadcast(np.where(positive, 0, gy * x), slope.shape).astype(slope.dtype,
                                                                                copy=False)
        return gx, gs


# -- normalised exponentials ----------------------------------------------------------------

def _along_rows(backend, kernel, dtype, arrays, axis) -> np.ndarray:
    """``kernel(*rows, out)`` over the 1-d slices along ``axis`` of same-shape ``arrays``.

    The row kernels take a C-contiguous (rows, n) array: the axis is moved last (a copy only
    when it is not last already) and moved back on the result, a view.
    """
    shape = arrays[0].shape
    last = axis == len(shape) - 1
    if not last:
        arrays = [np.moveaxis(a, axis, -1) for a in arrays]
        shape = arrays[0].shape
    rows = (math.prod(shape[:-1]), shape[-1])
    work = _compute_dtype(dtype)
    ins = [np.asarray(a, dtype=work, order="C").reshape(rows) for a in arrays]
    out = backend.empty(shape, dtype)
    direct = out.dtype == work and out.flags.c_contiguous
    target = out.reshape(rows) if direct else np.empty(rows, work)
    if target.size < SHARED_ROWS:
        kernel(*ins, target)
    else:       # each row alone: the threads share ranges of rows (the bits do not move)
        backend.batch(rows[0], 2 * rows[1], lambda start, stop: kernel(
            *[a[start:stop] for a in ins], target[start:stop]))
    if not direct:
        np.copyto(out, target.reshape(shape), casting="unsafe")
    return out if last else np.moveaxis(out, -1, axis)


class _AlongAxis(Unary):
    attrs = {"axis": Attr("int", -1, doc="the axis that sums to one (batch axis is 0)")}

    def infer(self, x):
        normalize_axis(self.axis, x.ndim)
        return (Spec(x.shape, float_dtype(x.dtype)),)

    def _run(self, ctx, name, arrays):
        axis = normalize_axis(self.axis, arrays[0].ndim)
        dtype = np.result_type(*[float_dtype(a.dtype) for a in arrays])
        return _along_rows(ctx.backend, getattr(ctx.backend.kernels, name), dtype, arrays, axis)


class Softmax(_AlongAxis):
    """exp(x) / Σ exp(x) along ``axis``, with the max subtracted first (no overflow)."""

    type = "softmax"

    def forward(self, ctx, x):
        y = self._run(ctx, "softmax", [x])
        ctx.save(y)
        return (y,)

    def backward(self, ctx, gy):
        (y,) = ctx.saved
        return (self._run(ctx, "softmax_backward", [y, gy]),)


class LogSoftmax(_AlongAxis):
    """x − logsumexp(x) along ``axis``: the stable log of softmax, for likelihood losses."""

    type = "log_softmax"

    def forward(self, ctx, x):
        y = self._run(ctx, "log_softmax", [x])
        ctx.save(y)
        return (y,)

    def backward(self, ctx, gy):
        (y,) = ctx.saved
        return (self._run(ctx, "log_softmax_backward", [y, gy]),)
