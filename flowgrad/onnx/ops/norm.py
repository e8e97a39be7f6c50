"""Normalization and dropout (flowgrad.ops.norm)."""
from __future__ import annotations

import numpy as np

from ..access import scalar
from ..builder import ImportProblem
from ..translations import Translations, node_exporter
from ._common import axis as checked_axis

#: BatchNormalization's inputs
_BN_INPUTS = ("X", "scale", "B", "input_mean", "input_var")

T = Translations("norm")

T.same("InstanceNormalization", "instance_norm", attrs=("epsilon",))
T.same("LRN", "lrn", attrs=("size", "alpha", "beta", "bias"))


@T.imports("BatchNormalization", state=(3, 4))
def batch_norm(b, a, ins):
    """Inference-form batch norm (running statistics); training mode uses batch statistics.
    The running mean and variance (inputs 3 and 4) are state: non-trainable params."""
    if a.int("spatial", 1) == 0:
        raise ImportProblem("BatchNormalization with spatial=0 (per-activation statistics) is "
                            "not supported")
    values = [ins.need(i, name) for i, name in enumerate(_BN_INPUTS)]
    if a.bool("training_mode", False):
        return _batch_norm_training(b, a, values)
    if b.output_used(1, 2, 3, 4):
        raise ImportProblem("BatchNormalization's running mean/var outputs are not supported")
    return b.final("batch_norm", values, epsilon=a.float("epsilon", 1e-5),
                   momentum=a.float("momentum", 0.9))


def _batch_norm_training(b, a, ins):
    """training_mode=1 (opset 14+): normalise with the batch's statistics and output the updated
    running mean and variance, written with reductions (all differentiable)."""
    x, scale, bias, mean_in, var_in = ins
    eps, momentum = a.float("epsilon", 1e-5), a.float("momentum", 0.9)
    if x.ndim < 2:
        raise ImportProblem(f"BatchNormalization needs an input of 2 or more dims, not {x.ndim}")
    axes = [0] + list(range(2, x.ndim))
    keep = [-1] + [1] * (x.ndim - 2)
    mean = b.op("reduce_mean", [x], axes=axes, keepdims=True)[0]
    d = b.op("sub", [x, mean])[0]
    var = b.op("reduce_mean", [b.op("mul", [d, d])[0]], axes=axes, keepdims=True)[0]
    std = b.op("sqrt", [b.op("add", [var, b.const(np.asarray(eps, x.dtype))])[0]])[0]
    normed = b.op("div", [d, std])[0]
    per_channel = lambda v: b.op("reshape", [v], shape=keep)[0]  # noqa: E731
    y = b.final("add", [b.op("mul", [normed, per_channel(scale)])[0], per_channel(bias)])
    outs = [y[0]]
    for index, (running, batch) in enumerate(((mean_in, mean), (var_in, var)), start=1):
        if not b.output_used(index):
            outs.append(None)
            continue
        old = b.op("mul", [running, b.const(np.asarray(momentum, running.dtype))])[0]
        new = b.op("mul", [b.op("reshape", [batch], shape=[-1])[0],
                           b.const(np.asarray(1.0 - momentum, running.dtype))])[0]
        outs.append(b.final("add", [old, new], index=index)[0])
    return outs


T.exports("batch_norm")(node_exporter("BatchNormalization", ("epsilon", "momentum")))


@T.imports("LayerNormalization", since=17)
def layer_norm(b, a, ins):
    """Y from flowgrad's layer_norm; the optional Mean and InvStdDev outputs are computed with
    reductions (they are what ONNX keeps for a training backward, in the stash type)."""
    x, scale, bias = ins.need(0, "X"), ins.need(1, "Scale"), ins.opt(2)
    axis, eps = a.int("axis", -1), a.float("epsilon", 1e-5)
    first = checked_axis(axis, x.ndim)
    whole = first == 0                          # over the batch axis too: no layer_norm op
    if not whole:
        y = b.final("layer_norm", [x, scale, bias], axis=axis, epsilon=eps)
        if not b.output_used(1, 2):
            return y
    stash = "float32" if a.int("stash_type", 1) == 1 else x.dtype.name
    axes = list(range(first, x.ndim))
    xs = b.op("cast", [x], to=stash)[0] if x.dtype.name != stash else x
    mean = b.final("reduce_mean", [xs], index=1, axes=axes, keepdims=True)[0]
    d = b.op("sub", [xs, mean])[0]
    var = b.op("reduce_mean", [b.op("mul", [d, d])[0]], axes=axes, keepdims=True)[0]
    std = b.op("sqrt", [b.op("add", [var, b.const(np.asarray(eps, stash))])[0]])[0]
    inv = b.final("reciprocal", [std], index=2)[0]
    if whole:
        normed = b.op("mul", [d, inv])[0]
        if normed.dtype != x.dtype:
            normed = b.op("cast", [normed], to=x.dtype.name)[0]
        scaled = b.op("mul", [normed, scale])[0]
        y = b.final("add", [scaled, bias]) if bias is not None else [scaled]
    return [y[0], mean, inv]


T.exports("layer_norm")(node_exporter("LayerNormalization", ("axis", "epsilon")))


def _dropout(b, ratio: float, ins, training: bool = False, seed=None):
    """Without ``training_mode=true`` flowgrad's dropout follows the plan's train()/eval()
    mode (so an imported model drops while fine-tuning); with it, it always drops, and a
    ``seed`` attribute makes the mask the one ONNX's reference draws (``RandomState(seed)``).
    The optional second output is the bool mask."""
    attrs = {"ratio": ratio}
    if training:
        attrs["training_mode"] = True
        if seed is not None:
            attrs["seed"] = int(seed)
    outs = b.final("dropout", [ins.need(0, "data")], **attrs)
    return outs if b.output_used(1) else outs[:1]


@T.imports("Dropout")
def dropout_1(b, a, ins):
    """Opsets 1-11: ``is_test`` (before 7) is ignored, the plan's mode decides."""
    return _dropout(b, a.float("ratio", 0.5), ins)


@T.imports("Dropout", since=12, static=(1, 2))
def dropout_12(b, a, ins):
    ratio = b.static(ins.opt(1), "Dropout ratio")
    training = b.static(ins.opt(2), "Dropout training_mode")
    return _dropout(b, 0.5 if ratio is None else scalar(ratio, "Dropout ratio"), ins,
                    training is not None and scalar(training, "Dropout training_mode", bool),
                    a.int("seed", None))


@T.exports("dropout")
def _dropout_export(c):
    """A fixed ``training_mode`` becomes ONNX's input; unset (the plan's mode) exports as
    inference, as a deployed model runs."""
    ins = [c.ins[0], c.const(c.op.ratio, np.float32)]
    if c.op.training_mode is not None:
        ins.append(c.const(c.op.training_mode, np.bool_))
    attrs = {} if c.op.seed is None else {"seed": c.op.seed}
    c.node("Dropout", ins, c.outs, **attrs)


T.same("LpNormalization", "lp_normalization", attrs=("axis", "p"))
T.same("MeanVarianceNormalization", "mean_variance_normalization", attrs=("axes",), since=9)


@T.imports("RMSNormalization", since=23)
def rms_norm(b, a, ins):
    x = ins.need(0, "X")
    checked_axis(a.int("axis", -1), x.ndim)
    return b.final("rms_normalization", [x, ins.need(1, "scale")], axis=a.int("axis", -1),
                   epsilon=a.float("epsilon", 1e-5), stash_type=a.int("stash_type", 1))


@T.exports("rms_normalization")
def _rms_norm(c):
    c.node("RMSNormalization", c.ins, c.outs, opset=23, axis=c.op.axis, epsilon=c.op.epsilon,
           stash_type=c.op.stash_type)


def _group_norm(b, a, x, scale, bias):
    return b.final("group_norm", [x, scale, bias], num_groups=a.int("num_groups"),
                   epsilon=a.float("epsilon", 1e-5), stash_type=a.int("stash_type", 1))


@T.imports("GroupNormalization", since=18)
def group_norm_18(b, a, ins):
    """Opset 18's scale and bias hold one value per *group*; flowgrad's op takes one per
    channel, so each is gathered to channel ``c``'s group ``c // (C / num_groups)`` (a gather
    whose backward sums each group's channels back, so both stay trainable)."""
    x, scale, bias = ins.need(0, "X"), ins.need(1, "scale"), ins.need(2, "bias")
    groups = a.int("num_groups")
    channels = x.shape[1] if x.ndim >= 2 else None
    if channels is None:
        raise ImportProblem("GroupNormalization (opset 18) needs the input's channel count "
                            "known at load time, to repeat the per-group scale and bias")
    if groups < 1 or channels % groups:
        raise ImportProblem(f"GroupNormalization: {channels} channels do not split into "
                            f"num_groups={groups}")
    index = b.const(np.arange(channels, dtype=np.int64) // (channels // groups))
    per_channel = [b.op("gather", [v, index], axis=0)[0] for v in (scale, bias)]
    return _group_norm(b, a, x, *per_channel)


@T.imports("GroupNormalization", since=21)
def group_norm_21(b, a, ins):
    return _group_norm(b, a, ins.need(0, "X"), ins.need(1, "scale"), ins.need(2, "bias"))


@T.exports("group_norm")
def _group_norm_export(c):
    c.node("GroupNormalization", c.ins, c.outs, opset=21, num_groups=c.op.num_groups,
           epsilon=c.op.epsilon, stash_type=c.op.stash_type)
