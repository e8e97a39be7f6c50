"""Loss functions: each returns a scalar, averaged or summed (the ``reduction`` attribute).

Every loss is written in a form that stays finite for extreme inputs (log-softmax with the max
subtracted, clamped or logit-space binary cross-entropy), because a single inf or NaN in a loss
poisons every gradient of a training step.
"""
from __future__ import annotations

import numpy as np

from ..op import (Attr, Op, ShapeError, Spec, broadcast_shapes, format_shape, result_dtype,
                  unbroadcast)
from .elementwise import float_dtype


class SoftmaxCrossEntropy(Op):
    """Cross-entropy of softmax(logits) against integer class labels or one-hot/soft targets.

    Computed from log-softmax with the max subtracted, so large logits do not overflow; the
    backward is the classic ``(softmax - target) / N``.  ``labels`` takes no gradient.
    """

    type = "softmax_cross_entropy"
    inputs = ("logits", "labels")
    no_grad_inputs = frozenset({"labels"})
    attrs = {"reduction": Attr("str", "mean", choices=("mean", "sum"),
                               doc="average or sum over the batch")}

    def infer(self, logits, labels):
        if logits.ndim != 2:
            raise ShapeError(f"logits must be (N, classes), got {format_shape(logits.shape)}")
        if labels.shape != logits.shape and labels.ndim != 1:
            raise ShapeError(f"labels must be (N,) class indices or (N, classes) targets, got "
                             f"{format_shape(labels.shape)}")
        return (Spec((), logits.dtype),)

    def forward(self, ctx, logits, labels):
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_z = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        log_p = shifted - log_z
        n = logits.shape[0]
        if labels.ndim == 1:
            picked = log_p[np.arange(n), labels]
            total = -picked.sum()
        else:
            total = -(labels * log_p).sum()
        scale = 1.0 / n if self.reduction == "mean" else 1.0
        ctx.save(log_p, labels, scale)
        return (np.asarray(total * scale, dtype=logits.dtype),)

    def backward(self, ctx, gy):
        log_p, labels, scale = ctx.saved
        grad = np.exp(log_p)
        if labels.ndim == 1:
            grad[np.arange(len(labels)), labels] -= 1
        else:
            grad -= labels
        grad *= gy * scale
        return grad, None


def _like(target: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Integer or boolean targets (hard labels) take the prediction's float dtype, so that
    int64 labels do not promote a float32 loss to float64."""
    if target.dtype.kind != "f" and y.dtype.kind == "f":
        return target.astype(y.dtype)
    return target


def _loss_dtype(y: Spec, target: Spec) -> np.dtype:
    if target.dtype.kind != "f" and y.dtype.kind == "f":
        return y.dtype
    return float_dtype(result_dtype(y, target))


class Mse(Op):
    """Squared error between ``y`` and ``target`` (broadcasting), both differentiable.

    ``reduction: mean`` averages (y − t)² over every element; ``half_sum`` is ½‖y − t‖² summed
    over everything, the lecture notes' form, whose gradient is simply y − t.
    """

    type = "mse"
    inputs = ("y", "target")
    attrs = {"reduction": Attr("str", "mean", choices=("mean", "half_sum"),
                               doc="mean of squares, or half the sum of squares")}

    def infer(self, y, target):
        broadcast_shapes(y.shape, target.shape)
        return (Spec((), _loss_dtype(y, target)),)

    def forward(self, ctx, y, target):
        d = y - _like(target, y)
        half = 0.5 if self.reduction == "half_sum" else 1.0 / d.size
        ctx.save(d, 2.0 * half, y, target)
        # vdot: one BLAS call, several times cheaper than np.mean on the small batches of
        # the XOR-sized nets whose per-node overhead we benchmark
        return (np.asarray(np.vdot(d, d) * half, dtype=float_dtype(d.dtype)),)

    def backward(self, ctx, gy):
        d, scale, y, target = ctx.saved
        need_y, need_t = ctx.needs_input_grad
        g = d * (gy * scale)
        return (unbroadcast(g, y.shape).astype(y.dtype, copy=False) if need_y else None,
                unbroadcast(-g, target.shape).astype(target.dtype, copy=False) if need_t
                else None)


class BinaryCrossEntropy(Op):
    """−[t·log p + (1 − t)·log(1 − p)], averaged or summed over every element.

    With probabilities, ``p`` is clamped to [eps, 1 − eps] so the log stays finite (the clamped
    elements get the clamp's zero gradient).  With ``from_logits``, the input is a logit z and the
    loss is computed as softplus(z) − t·z = max(z, 0) − t·z + log1p(e^−|z|), finite for any z,
    with gradient sigmoid(z) − t.  ``target`` (hard or soft labels) is differentiable too.
    """

    type = "binary_cross_entropy"
    inputs = ("p", "target")
    attrs = {"reduction": Attr("str", "mean", choices=("mean", "sum")),
             "from_logits": Attr("bool", False, doc="p holds logits, not probabilities"),
             "eps": Attr("float", 1e-7, doc="probabilities are clamped to [eps, 1 - eps]")}

    def check(self):
        if not 0 <= self.eps < 0.5:
            from ..errors import AttrError
            raise AttrError(f"eps must be in [0, 0.5), got {self.eps}", attr="eps")

    def infer(self, p, target):
        broadcast_shapes(p.shape, target.shape)
        return (Spec((), _loss_dtype(p, target)),)

    def forward(self, ctx, p, target):
        target = _like(target, p)
        if self.from_logits:
            elementwise = (np.maximum(p, 0) - target * p
                           + np.log1p(np.exp(-np.abs(p))))
            log_odds = None
        else:
            q = np.clip(p, self.eps, 1 - self.eps)
            log_p, log_1p = np.log(q), np.log1p(-q)
            elementwise = -(target * log_p + (1 - target) * log_1p)
            log_odds = log_p - log_1p
        scale = 1.0 / elementwise.size if self.reduction == "mean" else 1.0
        ctx.save(p, target, log_odds, scale)
        return (np.asarray(elementwise.sum() * scale, dtype=float_dtype(elementwise.dtype)),)

    def backward(self, ctx, gy):
        p, target, log_odds, scale = ctx.saved
        need_p, need_t = ctx.needs_input_grad
        s = gy * scale
        gp = gt = None
        if need_p:
            if self.from_logits:
                g = (np.exp(-np.logaddexp(0, -p)) - target) * s
            else:
                inside = (p > self.eps) & (p < 1 - self.eps)
                q = np.where(inside, p, 0.5)           # no division by 0 where clamped
                g = np.where(inside, (q - target) / (q * (1 - q)), 0) * s
            gp = unbroadcast(g, p.shape).astype(p.dtype, copy=False)
        if need_t:
            g = (-p if self.from_logits else -log_odds) * s
            gt = unbroadcast(np.broadcast_to(g, np.broadcast_shapes(p.shape, target.shape)),
                             target.shape).astype(target.dtype, copy=False)
        return gp, gt
