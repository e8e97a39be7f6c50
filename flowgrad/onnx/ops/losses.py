"""Losses (flowgrad.ops.losses), so that exported training graphs import back: the losses
are model-local functions (SoftmaxCrossEntropyLoss inside for integer labels); ONNX's
NegativeLogLikelihoodLoss is ``nll_loss`` and its SoftmaxCrossEntropyLoss is ``log_softmax``
then ``nll_loss`` (or the fused op in the common case)."""
from __future__ import annotations

import numpy as np
from onnx import helper

from ..builder import ImportProblem
from ..export import as_function
from ..translations import Translations

T = Translations("losses")


def _nll_attrs(a) -> dict:
    reduction = a.string("reduction", "mean")
    if reduction not in ("none", "sum", "mean"):
        raise ImportProblem(f"attribute 'reduction' must be none, sum or mean, not "
                            f"{reduction!r}")
    attrs = {"reduction": reduction}
    if "ignore_index" in a:
        attrs["ignore_index"] = a.int("ignore_index")
    return attrs


@T.imports("NegativeLogLikelihoodLoss", since=12)
def negative_log_likelihood_loss(b, a, ins):
    return b.final("nll_loss", [ins.need(0, "input"), ins.need(1, "target"), ins.opt(2)],
                   **_nll_attrs(a))


@T.exports("nll_loss")
def _nll_loss(c):
    attrs = {"reduction": c.op.reduction}
    if c.op.ignore_index is not None:
        attrs["ignore_index"] = c.op.ignore_index
    c.node("NegativeLogLikelihoodLoss", c.ins, c.outs, **attrs)


@T.imports("SoftmaxCrossEntropyLoss", since=12)
def softmax_cross_entropy_loss(b, a, ins):
    """ONNX defines it as NegativeLogLikelihoodLoss of LogSoftmax over axis 1, and so it is
    imported (any rank, class weights, ignore_index, every reduction, the log_prob output).
    The common case — (N, C) scores, no weights or ignore_index, mean or sum, log_prob unread —
    is flowgrad's fused ``softmax_cross_entropy`` op instead, which YAML graphs use."""
    attrs = _nll_attrs(a)
    scores, labels, weights = ins.need(0, "scores"), ins.need(1, "labels"), ins.opt(2)
    if scores.ndim < 2:
        raise ImportProblem(f"SoftmaxCrossEntropyLoss needs scores (N, C, ...), got "
                            f"{scores.ndim}-d")
    if (scores.ndim == 2 and weights is None and len(attrs) == 1
            and attrs["reduction"] != "none" and not b.output_used(1)):
        return b.final("softmax_cross_entropy", [scores, labels], reduction=attrs["reduction"])
    log_prob = b.op("log_softmax", [scores], axis=1, name=b.final_name(1))[0]
    return b.final("nll_loss", [log_prob, labels, weights], **attrs) + [log_prob]


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
