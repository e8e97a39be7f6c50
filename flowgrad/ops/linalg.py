"""Linear algebra for matrix calculus: inverse, determinant, log-determinant and trace.

Each works on the last two axes and is batched over any leading axes, so a batch of matrices
(N, n, n) and a single parameter matrix (n, n) use the same op.  The backward formulas are the
matrix-calculus identities of the lecture notes: d(A⁻¹) = −A⁻¹ dA A⁻¹, d log|det A| =
tr(A⁻¹ dA), d tr(A) = tr(dA).
"""
from __future__ import annotations

import numpy as np

from ..op import Op, ShapeError, Spec, format_shape
from .elementwise import float_dtype


def _mT(a: np.ndarray) -> np.ndarray:
    return np.swapaxes(a, -1, -2)


def _square(x: Spec, what: str) -> None:
    if x.ndim < 2:
        raise ShapeError(f"{what} needs matrices (..., n, n), got {format_shape(x.shape)}")
    rows, cols = x.shape[-2:]
    if rows is not None and cols is not None and rows != cols:
        raise ShapeError(f"{what} needs square matrices, got {format_shape(x.shape)}")


class Inverse(Op):
    """A⁻¹ of each square matrix; gradient −A⁻ᵀ G A⁻ᵀ."""

    type = "inverse"

    def infer(self, x):
        _square(x, "inverse")
        return (Spec(x.shape, float_dtype(x.dtype)),)

    def forward(self, ctx, x):
        y = np.linalg.inv(x)
        ctx.save(y)
        return (y,)

    def backward(self, ctx, gy):
        (y,) = ctx.saved
        yt = _mT(y)
        return (-(yt @ gy @ yt),)


class LogDet(Op):
    """log |det A| of each square matrix, via ``slogdet`` (no overflow of det itself).

    Gradient A⁻ᵀ (for either sign of the determinant), scaled by the incoming gradient.
    """

    type = "logdet"

    def infer(self, x):
        _square(x, "logdet")
        return (Spec(x.shape[:-2], float_dtype(x.dtype)),)

    def forward(self, ctx, x):
        ctx.save(x)
        return (np.asarray(np.linalg.slogdet(x).logabsdet),)

    def backward(self, ctx, gy):
        (x,) = ctx.saved
        return (np.asarray(gy)[..., None, None] * _mT(np.linalg.inv(x)),)


class Trace(Op):
    """Sum of the diagonal of the last two axes (as ``numpy.trace``); gradient G·I."""

    type = "trace"

    def infer(self, x):
        if x.ndim < 2:
            raise ShapeError(f"trace needs matrices (..., m, n), got {format_shape(x.shape)}")
        return (Spec(x.shape[:-2], x.dtype),)

    def forward(self, ctx, x):
        ctx.save(x.shape)
        return (np.asarray(np.trace(x, axis1=-2, axis2=-1, dtype=x.dtype)),)

    def backward(self, ctx, gy):
        (shape,) = ctx.saved
        eye = np.eye(shape[-2], shape[-1], dtype=gy.dtype)
        return (np.asarray(gy)[..., None, None] * eye,)


def adjugate(a: np.ndarray) -> np.ndarray:
    """The adjugate adj(A) of each square matrix (batched), also for singular ones.

    adj(A) = det(A)·A⁻¹ only where A is invertible; to get it everywhere it is taken from the
    SVD A = U S Vᵀ: adj(A) = det(U) det(V) · V adj(S) Uᵀ, where adj(S) is diagonal with entry
    i the product of the singular values other than s_i (prefix times suffix products, no
    division), so a rank n−1 matrix gets its nonzero adjugate and rank n−2 gets zero.
    """
    u, s, vh = np.linalg.svd(a)
    ones = np.ones(s.shape[:-1] + (1,), s.dtype)
    before = np.cumprod(np.concatenate([ones, s[..., :-1]], axis=-1), axis=-1)
    after = np.cumprod(np.concatenate([ones, s[..., :0:-1]], axis=-1), axis=-1)[..., ::-1]
    sign = np.linalg.det(u) * np.linalg.det(vh)
    return sign[..., None, None] * ((_mT(vh) * (before * after)[..., None, :]) @ _mT(u))


class Det(Op):
    """det A of each square matrix (ONNX Det), batched over leading axes.

    Gradient: G · adj(A)ᵀ, the cofactor matrix (Jacobi's formula).  For an invertible A that is
    G·det(A)·A⁻ᵀ, the ``logdet`` gradient scaled by det; the adjugate form (:func:`adjugate`)
    keeps it right for singular matrices, where A⁻¹ does not exist but the gradient does.
    """

    type = "det"

    def infer(self, x):
        _square(x, "det")
        return (Spec(x.shape[:-2], float_dtype(x.dtype)),)

    def forward(self, ctx, x):
        ctx.save(x)
        return (np.asarray(np.linalg.det(x)),)

    def backward(self, ctx, gy):
        (x,) = ctx.saved
        grad = np.asarray(gy)[..., None, None] * _mT(adjugate(x))
        return (grad.astype(float_dtype(x.dtype), copy=False),)
