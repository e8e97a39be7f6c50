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


class NllLoss(Op):
    """Negative log-likelihood of integer targets under log-probabilities (ONNX
    NegativeLogLikelihoodLoss): ``loss[n, d…] = −weight[t]·input[n, t, d…]`` with
    ``t = target[n, d…]``, 0 where ``t == ignore_index``.

    ``input`` is (N, C) or (N, C, d1, …, dk) and ``target`` (N) or (N, d1, …, dk); the optional
    ``weight`` (C,) weighs the classes.  ``reduction``: ``none`` keeps the per-element losses,
    ``sum`` adds them, ``mean`` divides the sum by the total weight of the elements not ignored
    (their count without ``weight``), as ONNX and PyTorch define it.  log_softmax followed by
    this op is ONNX's SoftmaxCrossEntropyLoss.

    Backward: each element's gradient goes to its target class only (one ``put_along_axis``);
    ``weight`` is differentiable too (a ``bincount`` per class; the mean's denominator depends
    on it).  ``target`` takes no gradient.
    """

    type = "nll_loss"
    inputs = ("input", "target", "weight?")
    no_grad_inputs = frozenset({"target"})
    attrs = {"reduction": Attr("str", "mean", choices=("none", "sum", "mean"),
                               doc="per element, summed, or averaged by total weight"),
             "ignore_index": Attr("int", None, doc="target value whose elements count for "
                                                   "nothing (default: none)")}

    def infer(self, x, target, weight):
        if x.ndim < 2:
            raise ShapeError(f"nll_loss: input must be (N, C, ...), got {format_shape(x.shape)}")
        if target.dtype.kind not in "iu":
            raise ShapeError(f"nll_loss: target holds class indices, an integer tensor, not "
                             f"{target.dtype}")
        expected = x.shape[:1] + x.shape[2:]
        if target.ndim != len(expected) or any(
                a is not None and b is not None and a != b
                for a, b in zip(target.shape, expected)):
            raise ShapeError(f"nll_loss: target must be {format_shape(expected)} for input "
                             f"{format_shape(x.shape)}, got {format_shape(target.shape)}")
        if weight is not None and (weight.ndim != 1 or None not in (weight.shape[0], x.shape[1])
                                   and weight.shape[0] != x.shape[1]):
            raise ShapeError(f"nll_loss: weight must be ({x.shape[1]},), one per class, got "
                             f"{format_shape(weight.shape)}")
        shape = target.shape if self.reduction == "none" else ()
        return (Spec(shape, x.dtype),)

    def forward(self, ctx, x, target, weight):
        classes = x.shape[1]
        valid = np.ones(target.shape, bool) if self.ignore_index is None \
            else target != self.ignore_index
        if np.any(valid & ((target < 0) | (target >= classes))):
            bad = target[valid & ((target < 0) | (target >= classes))].ravel()[:5]
            raise ShapeError(f"nll_loss: target values {bad.tolist()} are not classes of an "
                             f"input with {classes} (valid: 0 to {classes - 1}, or "
                             "ignore_index)")
        index = np.where(valid, target, 0)[:, None]
        picked = np.take_along_axis(x, index, axis=1)[:, 0]
        w = (np.ones(target.shape, x.dtype) if weight is None
             else np.asarray(weight, x.dtype)[index[:, 0]])
        w = np.where(valid, w, 0).astype(x.dtype, copy=False)
        loss = -picked * w
        total = w.sum() if self.reduction == "mean" else None
        ctx.save(x.shape, index, valid, picked, w, weight, loss.sum(), total)
        if self.reduction == "none":
            return (loss.astype(x.dtype, copy=False),)
        out = loss.sum() if self.reduction == "sum" else loss.sum() / total
        return (np.asarray(out, dtype=x.dtype),)

    def backward(self, ctx, gy):
        shape, index, valid, picked, w, weight, summed, total = ctx.saved
        need_x, _, need_w = ctx.needs_input_grad
        gy = np.asarray(gy)
        per = gy if self.reduction == "none" else np.broadcast_to(gy, w.shape)
        if self.reduction == "mean":
            per = per / total
        gx = gw = None
        if need_x:
            gx = np.zeros(shape, w.dtype)
            np.put_along_axis(gx, index, (-(per * w))[:, None], axis=1)
        if need_w:
            unweighted = -picked * valid                 # d loss_element / d weight[target]
            if self.reduction == "mean":                 # L = S / W, both depend on weight
                contrib = per * unweighted - gy * (summed / total) / total * valid
            else:
                contrib = per * unweighted
            gw = np.bincount(index.ravel(), weights=np.ravel(contrib),
                             minlength=len(weight)).astype(weight.dtype, copy=False)
        return gx, None, gw
