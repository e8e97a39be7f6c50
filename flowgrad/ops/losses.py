"""Loss functions: each returns a scalar averaged (or summed) over the batch."""
from __future__ import annotations

import numpy as np

from ..op import Attr, Op, ShapeError, Spec, format_shape


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
