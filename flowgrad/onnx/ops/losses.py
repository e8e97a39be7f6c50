"""Losses (flowgrad.ops.losses), so that exported training graphs import back: the losses
are model-local functions (SoftmaxCrossEntropyLoss inside for integer labels), and ONNX's
SoftmaxCrossEntropyLoss imports in the common case."""
from __future__ import annotations

import numpy as np
from onnx import helper

from ..builder import ImportProblem
from ..export import as_function
from ..translations import Translations

T = Translations("losses")


@T.imports("SoftmaxCrossEntropyLoss", since=12,
           partial="(N, C) scores, reduction mean or sum; no class weights, ignore_index or "
                   "log_prob output")
def softmax_cross_entropy_loss(b, a, ins):
    reduction = a.string("reduction", "mean")
    if reduction not in ("mean", "sum") or "ignore_index" in a:
        raise ImportProblem(f"SoftmaxCrossEntropyLoss is supported with reduction mean or sum "
                            f"and no ignore_index (got reduction={reduction!r})")
    if ins.opt(2) is not None or b.output_used(1):
        raise ImportProblem("SoftmaxCrossEntropyLoss with class weights or a log_prob output "
                            "is not supported")
    scores, labels = ins.need(0, "scores"), ins.need(1, "labels")
    if scores.ndim != 2:
        raise ImportProblem("SoftmaxCrossEntropyLoss is supported for (N, C) scores only")
    return b.final("softmax_cross_entropy", [scores, labels], reduction=reduction)


@T.exports("softmax_cross_entropy")
@as_function
def _softmax_cross_entropy(c):
    """Integer labels: ONNX SoftmaxCrossEntropyLoss; soft targets: -sum(t * log_softmax),
    divided by the batch size for the mean.  Either way a model-local function, so any logits
    shape imports back as exactly this op."""
    logits, labels = c.ins[:2]
    dtype = np.dtype(c.model.dtypes.get(logits, np.float32))
    if np.dtype(c.model.dtypes.get(labels, np.float32)).kind in "iu":
        c.node("SoftmaxCrossEntropyLoss", [logits, labels], c.outs, reduction=c.op.reduction)
        return
    logp = c.node("LogSoftmax", [logits], axis=1)
    total = c.node("ReduceSum", c.node("Mul", [labels, logp[0]]), keepdims=0)
    loss = c.node("Neg", total)
    if c.op.reduction == "mean":
        batch = c.node("Gather", [c.node("Shape", [logits])[0], c.const(0)], axis=0)
        n = c.node("Cast", batch, to=helper.np_dtype_to_tensor_dtype(dtype))
        c.node("Div", [loss[0], n[0]], c.outs)
    else:
        c.node("Identity", loss, c.outs)


@T.exports("mse")
@as_function
def _mse(c):
    d = c.node("Sub", c.ins[:2])
    sq = c.node("Mul", [d[0], d[0]])
    if c.op.reduction == "mean":
        c.node("ReduceMean", sq, c.outs, keepdims=0)
    else:
        total = c.node("ReduceSum", sq, keepdims=0)
        c.node("Mul", [total[0], c.const(0.5, c.model.dtypes.get(c.ins[0], np.float32))], c.outs)
