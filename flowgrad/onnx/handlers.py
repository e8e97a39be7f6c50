"""Translations of ONNX ops (domain ``ai.onnx``) into flowgrad ops.

Each handler maps one ONNX node onto one or a few flowgrad ops (see :mod:`flowgrad.onnx.opset`
for the calling convention).  Where ONNX moved an attribute to an input between versions
(Reshape, Slice, Clip, Pad, Split, Squeeze/Unsqueeze, Reduce*, Resize, Dropout, TopK, Tile), a
handler per version reads it from the right place and hands flowgrad one canonical form.
Inputs that configure an op (axes, pads, sizes) must be constants; shapes may be computed at run
time where the flowgrad op takes them as an input (Reshape, Expand, ConstantOfShape, Range).
"""
from __future__ import annotations

import numpy as np
import onnx

from .builder import Builder, ImportProblem, Value
from .opset import onnx_op


def _final(b: Builder, op_type: str, inputs, index: int = 0, **attrs) -> list[Value]:
    """Add the op that produces the ONNX node's output ``index`` (named after it)."""
    return b.op(op_type, inputs, name=b.final_name(index), **attrs)


def _ints(array) -> list[int]:
    return [int(v) for v in np.asarray(array).reshape(-1)]


# -- pointwise -----------------------------------------------------------------------------
_UNARY = {"Neg": "neg", "Exp": "exp", "Log": "log", "Sqrt": "sqrt", "Abs": "abs",
          "Reciprocal": "reciprocal", "Identity": "identity", "Relu": "relu",
          "Sigmoid": "sigmoid", "Tanh": "tanh", "Softplus": "softplus", "Softsign": "softsign",
          "Erf": "erf", "Floor": "floor", "Ceil": "ceil", "Not": "not", "HardSwish": "hard_swish"}


def _unary(fg_type: str):
    def handler(b, a, ins):
        return _final(b, fg_type, [ins[0]])
    return handler


for _onnx, _fg in _UNARY.items():
    onnx_op(_onnx)(_unary(_fg))


@onnx_op("LeakyRelu")
def leaky_relu(b, a, ins):
    return _final(b, "leaky_relu", [ins[0]], alpha=float(a.get("alpha", 0.01)))


@onnx_op("Elu")
def elu(b, a, ins):
    return _final(b, "elu", [ins[0]], alpha=float(a.get("alpha", 1.0)))


@onnx_op("Selu")
def selu(b, a, ins):
    return _final(b, "selu", [ins[0]], alpha=float(a.get("alpha", 1.67326319217681884765625)),
                  gamma=float(a.get("gamma", 1.05070102214813232421875)))


@onnx_op("HardSigmoid")
def hard_sigmoid(b, a, ins):
    return _final(b, "hard_sigmoid", [ins[0]], alpha=float(a.get("alpha", 0.2)),
                  beta=float(a.get("beta", 0.5)))


@onnx_op("Gelu", since=20)
def gelu(b, a, ins):
    return _final(b, "gelu", [ins[0]], approximate=a.get("approximate", "none"))


@onnx_op("PRelu")
def prelu(b, a, ins):
    """A 1-d slope with one value per channel (axis 1) is aligned to that axis, as exporters
    that predate numpy broadcasting meant it."""
    x, slope = ins[0], ins[1]
    if (slope.ndim == 1 and x.ndim > 2 and slope.shape[0] not in (1, x.shape[-1])
            and slope.shape[0] == x.shape[1]):
        slope = b.op("reshape", [slope], shape=[-1] + [1] * (x.ndim - 2))[0]
    return _final(b, "prelu", [x, slope])


@onnx_op("Clip")
def clip_1(b, a, ins):
    return _final(b, "clip", [ins[0]], min=float(a.get("min", -np.inf)),
                  max=float(a.get("max", np.inf)))


@onnx_op("Clip", since=11, static=(1, 2))
def clip_11(b, a, ins):
    lo = b.static(ins[1] if len(ins) > 1 else None, "Clip min")
    hi = b.static(ins[2] if len(ins) > 2 else None, "Clip max")
    attrs = {}
    if lo is not None and hi is not None and float(lo) > float(hi):
        lo = hi                                 # ONNX: min > max sets everything to max
    if lo is not None:
        attrs["min"] = float(lo)
    if hi is not None:
        attrs["max"] = float(hi)
    return _final(b, "clip", [ins[0]], **attrs)


_BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Equal": "equal", "Less": "less",
           "Greater": "greater", "And": "and", "Or": "or"}


def _legacy_broadcast(b, a, x: Value, y: Value) -> Value:
    """Opset < 7 ``broadcast=1, axis=k``: align ``y`` with ``x`` starting at axis ``k``."""
    if a.get("broadcast", 0) and "axis" in a and y.ndim:
        axis = int(a["axis"]) % x.ndim
        trailing = x.ndim - axis - y.ndim
        if trailing > 0:
            shape = list(y.shape) + [1] * trailing
            y = b.op("reshape", [y], shape=[-1 if d is None else d for d in shape])[0]
    return y


def _binary(fg_type: str):
    def handler(b, a, ins):
        return _final(b, fg_type, [ins[0], _legacy_broadcast(b, a, ins[0], ins[1])])
    return handler


for _onnx, _fg in _BINARY.items():
    onnx_op(_onnx)(_binary(_fg))


@onnx_op("Pow")
def pow_(b, a, ins):
    """The result has the base's type, also for an integer base and a float exponent."""
    x, y = ins[0], _legacy_broadcast(b, a, ins[0], ins[1])
    if x.dtype.kind in "iu" and y.dtype.kind == "f":
        p = b.op("pow", [b.op("cast", [x], to="float64")[0], y])[0]
        return _final(b, "cast", [p], to=x.dtype.name)
    return _final(b, "pow", [x, y])


@onnx_op("Div")
def div(b, a, ins):
    x, y = ins[0], _legacy_broadcast(b, a, ins[0], ins[1])
    if x.dtype.kind in "iu" and y.dtype.kind in "iu":
        q = b.op("div", [x, y])[0]            # ONNX integer division truncates toward zero
        return _final(b, "cast", [q], to=x.dtype.name)
    return _final(b, "div", [x, y])


_VARIADIC = {"Sum": "sum", "Mean": "mean", "Min": "min", "Max": "max"}


def _variadic(fg_type: str):
    def handler(b, a, ins):
        xs = [v for v in ins if v is not None]
        if len(xs) == 1:
            return _final(b, "identity", xs)
        return _final(b, fg_type, xs)
    return handler


for _onnx, _fg in _VARIADIC.items():
    onnx_op(_onnx)(_variadic(_fg))


@onnx_op("Where")
def where(b, a, ins):
    return _final(b, "where", ins[:3])


# -- softmax ---------------------------------------------------------------------------------
def _coerced_softmax(fg_type: str):
    """Softmax before opset 13: flatten to 2-d at ``axis``, normalise rows, reshape back."""
    def handler(b, a, ins):
        x = ins[0]
        axis = int(a.get("axis", 1)) % max(x.ndim, 1)
        if axis == x.ndim - 1:
            return _final(b, fg_type, [x], axis=-1)
        flat = b.op("flatten", [x], axis=axis)[0]
        y = b.op(fg_type, [flat], axis=-1)[0]
        shape = b.op("shape", [x])[0]
        return _final(b, "reshape", [y, shape])
    return handler


def _softmax(fg_type: str):
    def handler(b, a, ins):
        return _final(b, fg_type, [ins[0]], axis=int(a.get("axis", -1)))
    return handler


for _onnx, _fg in (("Softmax", "softmax"), ("LogSoftmax", "log_softmax")):
    onnx_op(_onnx)(_coerced_softmax(_fg))
    onnx_op(_onnx, since=13)(_softmax(_fg))


# -- matrix products --------------------------------------------------------------------------
@onnx_op("MatMul")
def matmul(b, a, ins):
    return _final(b, "matmul", ins[:2])


@onnx_op("Gemm")
def gemm(b, a, ins):
    """alpha * A' @ B' + beta * C as transpose, dense/matmul, mul and add nodes."""
    A, B = ins[0], ins[1]
    C = ins[2] if len(ins) > 2 else None
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    if a.get("transA", 0):
        A = b.op("transpose", [A], perm=[1, 0])[0]
    if a.get("transB", 0):
        B = b.op("transpose", [B], perm=[1, 0])[0]
    if C is not None and beta == 0.0:
        C = None
    n_out = B.shape[1]
    simple_bias = (C is not None and beta == 1.0 and alpha == 1.0
                   and C.shape in ((n_out,), (1, n_out)))
    if simple_bias or C is None and alpha == 1.0:
        return _final(b, "dense", [A, B, C if simple_bias else None])
    y = b.op("matmul", [A, B])[0]
    if alpha != 1.0:
        y = b.op("mul", [y, b.const(np.asarray(alpha, dtype=y.dtype))])[0]
    if C is None:
        return [y] if alpha == 1.0 else _final(b, "identity", [y])
    if beta != 1.0:
        C = b.op("mul", [C, b.const(np.asarray(beta, dtype=C.dtype))])[0]
    return _final(b, "add", [y, C])


@onnx_op("Einsum")
def einsum(b, a, ins):
    return _final(b, "einsum", [v for v in ins if v is not None], equation=a["equation"])


# -- convolution family (flowgrad's ops use ONNX attribute names) ---------------------------
def _conv_attrs(a, names):
    out = {}
    for key in names:
        if key in a:
            value = a[key]
            out[key] = value.decode() if isinstance(value, bytes) else value
    return out


_CONV = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")


@onnx_op("Conv")
def conv(b, a, ins):
    return _final(b, "conv", ins[:3], **_conv_attrs(a, _CONV))


@onnx_op("ConvTranspose")
def conv_transpose(b, a, ins):
    return _final(b, "conv_transpose", ins[:3],
                  **_conv_attrs(a, _CONV + ("output_padding", "output_shape")))


@onnx_op("MaxPool")
def max_pool(b, a, ins):
    attrs = _conv_attrs(a, ("auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads",
                            "strides", "storage_order"))
    if b.output_used(1):
        attrs["indices"] = True
    return _final(b, "max_pool", [ins[0]], **attrs)


@onnx_op("AveragePool")
def avg_pool(b, a, ins):
    attrs = _conv_attrs(a, ("auto_pad", "ceil_mode", "count_include_pad", "dilations",
                            "kernel_shape", "pads", "strides"))
    return _final(b, "avg_pool", [ins[0]], **attrs)


@onnx_op("GlobalAveragePool")
def global_avg_pool(b, a, ins):
    return _final(b, "global_avg_pool", [ins[0]])


@onnx_op("GlobalMaxPool")
def global_max_pool(b, a, ins):
    return _final(b, "global_max_pool", [ins[0]])


@onnx_op("BatchNormalization")
def batch_norm(b, a, ins):
    """Inference-form batch norm (running statistics); training mode uses batch statistics."""
    if a.get("spatial", 1) == 0:
        raise ImportProblem("BatchNormalization with spatial=0 (per-activation statistics) is "
                            "not supported")
    if a.get("training_mode", 0):
        return _batch_norm_training(b, a, ins)
    if b.output_used(1, 2, 3, 4):
        raise ImportProblem("BatchNormalization's running mean/var outputs are not supported")
    return _final(b, "batch_norm", ins[:5], epsilon=float(a.get("epsilon", 1e-5)),
                  momentum=float(a.get("momentum", 0.9)))


def _batch_norm_training(b, a, ins):
    """training_mode=1 (opset 14+): normalise with the batch's statistics and output the updated
    running mean and variance, written with reductions (all differentiable)."""
    x, scale, bias, mean_in, var_in = ins[:5]
    eps, momentum = float(a.get("epsilon", 1e-5)), float(a.get("momentum", 0.9))
    axes = [0] + list(range(2, x.ndim))
    keep = [-1] + [1] * (x.ndim - 2)
    mean = b.op("reduce_mean", [x], axes=axes, keepdims=True)[0]
    d = b.op("sub", [x, mean])[0]
    var = b.op("reduce_mean", [b.op("mul", [d, d])[0]], axes=axes, keepdims=True)[0]
    std = b.op("sqrt", [b.op("add", [var, b.const(np.asarray(eps, x.dtype))])[0]])[0]
    normed = b.op("div", [d, std])[0]
    per_channel = lambda v: b.op("reshape", [v], shape=keep)[0]  # noqa: E731
    y = _final(b, "add", [b.op("mul", [normed, per_channel(scale)])[0], per_channel(bias)])
    outs = [y[0]]
    for index, (running, batch) in enumerate(((mean_in, mean), (var_in, var)), start=1):
        if not b.output_used(index):
            outs.append(None)
            continue
        old = b.op("mul", [running, b.const(np.asarray(momentum, running.dtype))])[0]
        new = b.op("mul", [b.op("reshape", [batch], shape=[-1])[0],
                           b.const(np.asarray(1.0 - momentum, running.dtype))])[0]
        outs.append(_final(b, "add", [old, new], index=index)[0])
    return outs


@onnx_op("InstanceNormalization")
def instance_norm(b, a, ins):
    return _final(b, "instance_norm", ins[:3], epsilon=float(a.get("epsilon", 1e-5)))


@onnx_op("LayerNormalization", since=17)
def layer_norm(b, a, ins):
    """Y from flowgrad's layer_norm; the optional Mean and InvStdDev outputs are computed with
    reductions (they are what ONNX keeps for a training backward, in the stash type)."""
    x = ins[0]
    axis, eps = int(a.get("axis", -1)), float(a.get("epsilon", 1e-5))
    whole = axis % max(x.ndim, 1) == 0          # over the batch axis too: no layer_norm op
    if not whole:
        y = _final(b, "layer_norm", ins[:3], axis=axis, epsilon=eps)
        if not b.output_used(1, 2):
            return y
    stash = "float32" if int(a.get("stash_type", 1)) == 1 else x.dtype.name
    axes = list(range(axis % x.ndim, x.ndim))
    xs = b.op("cast", [x], to=stash)[0] if x.dtype.name != stash else x
    mean = _final(b, "reduce_mean", [xs], index=1, axes=axes, keepdims=True)[0]
    d = b.op("sub", [xs, mean])[0]
    var = b.op("reduce_mean", [b.op("mul", [d, d])[0]], axes=axes, keepdims=True)[0]
    std = b.op("sqrt", [b.op("add", [var, b.const(np.asarray(eps, stash))])[0]])[0]
    inv = _final(b, "reciprocal", [std], index=2)[0]
    if whole:
        normed = b.op("mul", [d, inv])[0]
        if normed.dtype != x.dtype:
            normed = b.op("cast", [normed], to=x.dtype.name)[0]
        scaled = b.op("mul", [normed, ins[1]])[0]
        bias = ins[2] if len(ins) > 2 else None
        y = _final(b, "add", [scaled, bias]) if bias is not None else [scaled]
    return [y[0], mean, inv]


@onnx_op("LRN")
def lrn(b, a, ins):
    return _final(b, "lrn", [ins[0]], size=int(a["size"]), alpha=float(a.get("alpha", 1e-4)),
                  beta=float(a.get("beta", 0.75)), bias=float(a.get("bias", 1.0)))


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
    outs = _final(b, "dropout", [ins[0]], **attrs)
    return outs if b.output_used(1) else outs[:1]


@onnx_op("Dropout")
def dropout_1(b, a, ins):
    """Opsets 1-11: ``is_test`` (before 7) is ignored, the plan's mode decides."""
    return _dropout(b, float(a.get("ratio", 0.5)), ins)


@onnx_op("Dropout", since=12, static=(1, 2))
def dropout_12(b, a, ins):
    ratio = b.static(ins[1] if len(ins) > 1 else None, "Dropout ratio")
    training = b.static(ins[2] if len(ins) > 2 else None, "Dropout training_mode")
    return _dropout(b, 0.5 if ratio is None else float(np.asarray(ratio).reshape(-1)[0]), ins,
                    training is not None and bool(np.asarray(training).reshape(-1)[0]),
                    a.get("seed"))


# -- shape ---------------------------------------------------------------------------------
@onnx_op("Flatten")
def flatten(b, a, ins):
    return _final(b, "flatten", [ins[0]], axis=int(a.get("axis", 1)))


@onnx_op("Reshape")
def reshape_1(b, a, ins):
    return _final(b, "reshape", [ins[0]], shape=_ints(a["shape"]))


@onnx_op("Reshape", since=5)
def reshape_5(b, a, ins):
    allowzero = int(a.get("allowzero", 0))
    extra = {"allowzero": True} if allowzero else {}
    shape = ins[1]
    if shape.is_const or shape.initial is not None:
        return _final(b, "reshape", [ins[0]], shape=_ints(b.static(shape, "shape")), **extra)
    return _final(b, "reshape", [ins[0], shape], **extra)


@onnx_op("Transpose")
def transpose(b, a, ins):
    perm = a.get("perm")
    if perm is None:
        perm = list(range(ins[0].ndim))[::-1]
    return _final(b, "transpose", [ins[0]], perm=[int(p) for p in perm])


@onnx_op("Squeeze")
def squeeze_1(b, a, ins):
    attrs = {"axes": [int(v) for v in a["axes"]]} if "axes" in a else {}
    return _final(b, "squeeze", [ins[0]], **attrs)


@onnx_op("Squeeze", since=13, static=(1,))
def squeeze_13(b, a, ins):
    axes = b.static(ins[1] if len(ins) > 1 else None, "Squeeze axes")
    attrs = {} if axes is None else {"axes": _ints(axes)}
    return _final(b, "squeeze", [ins[0]], **attrs)


@onnx_op("Unsqueeze")
def unsqueeze_1(b, a, ins):
    return _final(b, "unsqueeze", [ins[0]], axes=[int(v) for v in a["axes"]])


@onnx_op("Unsqueeze", since=13, static=(1,))
def unsqueeze_13(b, a, ins):
    return _final(b, "unsqueeze", [ins[0]], axes=_ints(b.static(ins[1], "Unsqueeze axes")))


@onnx_op("Concat")
def concat(b, a, ins):
    return _final(b, "concat", [v for v in ins if v is not None], axis=int(a.get("axis", 1)))


def _split(b, x: Value, axis: int, sizes, count: int):
    attrs = {"split": [int(s) for s in sizes]} if sizes is not None else {"parts": count}
    return b.op("split", [x], name=b.final_name(0), axis=axis, **attrs)


@onnx_op("Split")
def split_1(b, a, ins):
    sizes = a.get("split")
    if sizes is None and len(ins) > 1 and ins[1] is not None:
        sizes = b.static(ins[1], "Split sizes")
    return _split(b, ins[0], int(a.get("axis", 0)), sizes, len(b.current.output))


@onnx_op("Split", since=13, static=(1,))
def split_13(b, a, ins):
    sizes = b.static(ins[1] if len(ins) > 1 else None, "Split sizes")
    count = int(a.get("num_outputs", len(b.current.output)))
    return _split(b, ins[0], int(a.get("axis", 0)), None if sizes is None else _ints(sizes), count)


@onnx_op("Slice")
def slice_1(b, a, ins):
    attrs = {"starts": _ints(a["starts"]), "ends": _ints(a["ends"])}
    if "axes" in a:
        attrs["axes"] = _ints(a["axes"])
    return _final(b, "slice", [ins[0]], **attrs)


@onnx_op("Slice", since=10, static=(1, 2, 3, 4))
def slice_10(b, a, ins):
    attrs = {"starts": _ints(b.static(ins[1], "Slice starts")),
             "ends": _ints(b.static(ins[2], "Slice ends"))}
    for i, key in ((3, "axes"), (4, "steps")):
        value = b.static(ins[i] if len(ins) > i else None, f"Slice {key}")
        if value is not None:
            attrs[key] = _ints(value)
    return _final(b, "slice", [ins[0]], **attrs)


@onnx_op("Gather")
def gather(b, a, ins):
    return _final(b, "gather", ins[:2], axis=int(a.get("axis", 0)))


@onnx_op("Expand")
def expand(b, a, ins):
    shape = ins[1]
    if shape.is_const or shape.initial is not None:
        return _final(b, "expand", [ins[0]], shape=_ints(b.static(shape, "Expand shape")))
    return _final(b, "expand", [ins[0], shape])


@onnx_op("Tile", static=(1, 2))
def tile_1(b, a, ins):
    tiles = int(b.static(ins[1], "Tile tiles"))
    axis = int(b.static(ins[2], "Tile axis"))
    reps = [1] * ins[0].ndim
    reps[axis] = tiles
    return _final(b, "tile", [ins[0]], repeats=reps)


@onnx_op("Tile", since=6, static=(1,))
def tile_6(b, a, ins):
    return _final(b, "tile", [ins[0]], repeats=_ints(b.static(ins[1], "Tile repeats")))


def _pad(b, x, mode, pads, value):
    attrs = {"mode": mode, "pads": [int(p) for p in pads]}
    if value is not None:
        attrs["value"] = float(value)
    return _final(b, "pad", [x], **attrs)


@onnx_op("Pad")
def pad_1(b, a, ins):
    pads = a.get("pads", a.get("paddings"))
    return _pad(b, ins[0], a.get("mode", "constant"), pads, a.get("value", 0.0))


@onnx_op("Pad", since=11, static=(1, 2, 3))
def pad_11(b, a, ins):
    pads = _ints(b.static(ins[1], "Pad pads"))
    value = b.static(ins[2] if len(ins) > 2 else None, "Pad constant_value")
    axes = b.static(ins[3] if len(ins) > 3 else None, "Pad axes")
    if axes is not None:
        ndim = ins[0].ndim
        full = [0] * (2 * ndim)
        axes = [int(ax) % ndim for ax in _ints(axes)]
        for i, ax in enumerate(axes):
            full[ax], full[ax + ndim] = pads[i], pads[i + len(axes)]
        pads = full
    return _pad(b, ins[0], a.get("mode", "constant"), pads,
                None if value is None or np.size(value) == 0 else float(np.asarray(value).reshape(-1)[0]))


def _resize(b, x: Value, a, scales, sizes, roi=None):
    attrs = _conv_attrs(a, ("mode", "coordinate_transformation_mode", "cubic_coeff_a",
                            "exclude_outside", "extrapolation_value", "nearest_mode",
                            "antialias", "keep_aspect_ratio_policy"))
    if attrs.get("keep_aspect_ratio_policy") == "stretch":
        del attrs["keep_aspect_ratio_policy"]
    if not attrs.get("antialias", 1):
        del attrs["antialias"]
    if "extrapolation_value" in attrs and attrs.get("coordinate_transformation_mode") \
            != "tf_crop_and_resize":
        del attrs["extrapolation_value"]            # only used by tf_crop_and_resize
    if a.get("axes") is not None:                   # opset 18: scales/sizes/roi of these axes
        attrs["axes"] = [int(v) for v in a["axes"]]
    if scales is not None and np.size(scales):
        attrs["scales"] = [float(s) for s in np.asarray(scales).reshape(-1)]
    if sizes is not None and np.size(sizes):
        attrs["sizes"] = _ints(sizes)
    if roi is not None and np.size(roi) and attrs.get("coordinate_transformation_mode") \
            == "tf_crop_and_resize":
        attrs["roi"] = [float(r) for r in np.asarray(roi).reshape(-1)]
    return _final(b, "resize", [x], **attrs)


@onnx_op("Upsample")
def upsample_1(b, a, ins):
    scales = a.get("scales")
    if scales is None:
        scales = [1.0, 1.0, float(a["height_scale"]), float(a["width_scale"])]
    return _resize(b, ins[0], {"mode": a.get("mode", "nearest"),
                               "coordinate_transformation_mode": "asymmetric",
                               "nearest_mode": "floor"}, scales, None)


@onnx_op("Upsample", since=9, static=(1,))
def upsample_9(b, a, ins):
    return _resize(b, ins[0], {"mode": a.get("mode", "nearest"),
                               "coordinate_transformation_mode": "asymmetric",
                               "nearest_mode": "floor"}, b.static(ins[1], "Upsample scales"), None)


@onnx_op("Resize", since=10, static=(1,))
def resize_10(b, a, ins):
    mode = a.get("mode", "nearest")
    return _resize(b, ins[0], {"mode": mode, "coordinate_transformation_mode": "asymmetric",
                               "nearest_mode": "floor"}, b.static(ins[1], "Resize scales"), None)


@onnx_op("Resize", since=11, static=(1, 2, 3))
def resize_11(b, a, ins):
    get = lambda i, what: b.static(ins[i] if len(ins) > i else None, what)  # noqa: E731
    return _resize(b, ins[0], a, get(2, "Resize scales"), get(3, "Resize sizes"),
                   get(1, "Resize roi"))


# -- reductions ------------------------------------------------------------------------------
_REDUCE = {"ReduceMean": "reduce_mean", "ReduceSum": "reduce_sum", "ReduceMax": "reduce_max",
           "ReduceMin": "reduce_min", "ReduceL2": "reduce_l2"}


def _reduce(b, fg_type, x, axes, keepdims, noop):
    if axes is None or len(axes) == 0:
        if noop:
            return _final(b, "identity", [x])
        axes = None
    attrs = {"keepdims": bool(keepdims)}
    if axes is not None:
        attrs["axes"] = [int(v) for v in axes]
    return _final(b, fg_type, [x], **attrs)


def _reduce_attr(fg_type):
    def handler(b, a, ins):
        return _reduce(b, fg_type, ins[0], a.get("axes"), a.get("keepdims", 1), False)
    return handler


def _reduce_input(fg_type):
    def handler(b, a, ins):
        axes = b.static(ins[1] if len(ins) > 1 else None, "reduction axes")
        return _reduce(b, fg_type, ins[0], None if axes is None else _ints(axes),
                       a.get("keepdims", 1), a.get("noop_with_empty_axes", 0))
    return handler


for _onnx, _fg in _REDUCE.items():
    onnx_op(_onnx)(_reduce_attr(_fg))
    onnx_op(_onnx, since=13 if _onnx == "ReduceSum" else 18, static=(1,))(_reduce_input(_fg))


@onnx_op("ArgMax")
def argmax(b, a, ins):
    return _final(b, "argmax", [ins[0]], axis=int(a.get("axis", 0)),
                  keepdims=bool(a.get("keepdims", 1)),
                  select_last_index=bool(a.get("select_last_index", 0)))


def _topk(b, a, x, k):
    outs = b.op("topk", [x], k=int(k), axis=int(a.get("axis", -1)),
                largest=bool(a.get("largest", 1)), sorted=bool(a.get("sorted", 1)))
    return outs


@onnx_op("TopK")
def topk_1(b, a, ins):
    return _topk(b, a, ins[0], a["k"])


@onnx_op("TopK", since=10, static=(1,))
def topk_10(b, a, ins):
    return _topk(b, a, ins[0], np.asarray(b.static(ins[1], "TopK k")).reshape(-1)[0])


# -- tensor creation and inspection -----------------------------------------------------------
@onnx_op("Constant")
def constant(b, a, ins):
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if key in a:
            value = np.asarray(a[key])
            if key == "value_float" or key == "value_floats":
                value = value.astype(np.float32)
            elif key in ("value_int", "value_ints"):
                value = value.astype(np.int64)
            return [b.const(value)]
    raise ImportProblem(f"Constant with attribute(s) {', '.join(a)} is not supported")


@onnx_op("Shape")
def shape(b, a, ins):
    x = ins[0]
    start, end = a.get("start"), a.get("end")
    dims = x.shape[slice(start, end)]
    if x.is_const or None not in dims:
        return [b.const(np.asarray(dims if not x.is_const else x.const.shape[slice(start, end)],
                                   dtype=np.int64))]
    attrs = {}
    if start is not None:
        attrs["start"] = int(start)
    if end is not None:
        attrs["end"] = int(end)
    return _final(b, "shape", [x], **attrs)


@onnx_op("Size")
def size(b, a, ins):
    x = ins[0]
    if x.is_const or None not in x.shape:
        return [b.const(np.asarray(int(np.prod(x.shape if not x.is_const else x.const.shape)),
                                   dtype=np.int64))]
    return _final(b, "size", [x])


@onnx_op("Cast")
def cast(b, a, ins):
    dtype = onnx.helper.tensor_dtype_to_np_dtype(int(a["to"]))
    if ins[0].dtype == dtype:
        return _final(b, "identity", [ins[0]])
    return _final(b, "cast", [ins[0]], to=np.dtype(dtype).name)


@onnx_op("ConstantOfShape")
def constant_of_shape(b, a, ins):
    value = a.get("value")
    value = np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(-1)
    if ins[0].is_const:
        return [b.const(np.full(_ints(ins[0].const), value[0], dtype=value.dtype))]
    return _final(b, "constant_of_shape", [ins[0]], value=value[0].item(),
                  dtype=value.dtype.name)


@onnx_op("Range")
def range_(b, a, ins):
    return _final(b, "range", ins[:3])


# -- losses (so exported training graphs import back) ----------------------------------------
@onnx_op("SoftmaxCrossEntropyLoss", since=12)
def softmax_cross_entropy_loss(b, a, ins):
    reduction = a.get("reduction", "mean")
    if reduction not in ("mean", "sum") or "ignore_index" in a:
        raise ImportProblem(f"SoftmaxCrossEntropyLoss is supported with reduction mean or sum "
                            f"and no ignore_index (got reduction={reduction!r})")
    if len(ins) > 2 and ins[2] is not None or b.output_used(1):
        raise ImportProblem("SoftmaxCrossEntropyLoss with class weights or a log_prob output "
                            "is not supported")
    if ins[0].ndim != 2:
        raise ImportProblem("SoftmaxCrossEntropyLoss is supported for (N, C) scores only")
    return _final(b, "softmax_cross_entropy", ins[:2], reduction=reduction)


# -- flowgrad's own ops, exported as model-local functions (see flowgrad.onnx.export) ----------
def flowgrad_function(b, a, ins):
    """A node of domain ``flowgrad``: its function's doc_string names the flowgrad op."""
    import json
    function = b.functions.get(b.current.op_type)
    try:
        config = json.loads(function.doc_string)
        op_type, attrs = config["type"], config["attrs"]
    except (AttributeError, ValueError, KeyError, TypeError):
        raise ImportProblem(f"no function '{b.current.op_type}' describing a flowgrad op in "
                            "the model") from None
    return _final(b, op_type, ins, **attrs)


# -- further ops of the suite that map onto flowgrad ops ----------------------------------
for _onnx, _fg in (("Sin", "sin"), ("Cos", "cos"), ("Round", "round"), ("Sign", "sign")):
    onnx_op(_onnx)(_unary(_fg))
for _onnx, _fg in (("Xor", "xor"), ("LessOrEqual", "less_or_equal"),
                   ("GreaterOrEqual", "greater_or_equal")):
    onnx_op(_onnx)(_binary(_fg))


@onnx_op("ArgMin")
def argmin(b, a, ins):
    return _final(b, "argmin", [ins[0]], axis=int(a.get("axis", 0)),
                  keepdims=bool(a.get("keepdims", 1)),
                  select_last_index=bool(a.get("select_last_index", 0)))


@onnx_op("Mod")
def mod(b, a, ins):
    return _final(b, "mod", ins[:2], fmod=bool(a.get("fmod", 0)))


@onnx_op("GatherElements")
def gather_elements(b, a, ins):
    return _final(b, "gather_elements", ins[:2], axis=int(a.get("axis", 0)))


@onnx_op("OneHot", since=9)
def one_hot(b, a, ins):
    return _final(b, "one_hot", ins[:3], axis=int(a.get("axis", -1)))


@onnx_op("CastLike")
def cast_like(b, a, ins):
    if ins[0].dtype == ins[1].dtype:
        return _final(b, "identity", [ins[0]])
    return _final(b, "cast", [ins[0]], to=ins[1].dtype.name)


@onnx_op("Celu", since=12)
def celu(b, a, ins):
    """alpha * elu(x / alpha)."""
    alpha = float(a.get("alpha", 1.0))
    x = ins[0]
    if alpha == 1.0:
        return _final(b, "elu", [x], alpha=1.0)
    scaled = b.op("div", [x, b.const(np.asarray(alpha, x.dtype))])[0]
    e = b.op("elu", [scaled], alpha=1.0)[0]
    return _final(b, "mul", [e, b.const(np.asarray(alpha, x.dtype))])


@onnx_op("Mish", since=18)
def mish(b, a, ins):
    """x * tanh(softplus(x))."""
    x = ins[0]
    t = b.op("tanh", [b.op("softplus", [x])[0]])[0]
    return _final(b, "mul", [x, t])


def _reduce_composite(kind: str):
    """ReduceL1 / ReduceSumSquare / ReduceLogSum / ReduceLogSumExp from flowgrad ops."""
    def build(b, x, axes, keepdims, noop):
        if (axes is None or len(axes) == 0) and noop:
            return _final(b, "identity", [x])
        attrs = {"keepdims": bool(keepdims)}
        if axes is not None and len(axes):
            attrs["axes"] = [int(v) for v in axes]
        if kind == "l1":
            return _final(b, "reduce_sum", [b.op("abs", [x])[0]], **attrs)
        if kind == "sum_square":
            return _final(b, "reduce_sum", [b.op("mul", [x, x])[0]], **attrs)
        if kind == "log_sum":
            return _final(b, "log", [b.op("reduce_sum", [x], **attrs)[0]])
        # log-sum-exp, shifted by the max so large inputs do not overflow
        m = b.op("reduce_max", [x], **{**attrs, "keepdims": True})[0]
        s = b.op("reduce_sum", [b.op("exp", [b.op("sub", [x, m])[0]])[0]], **attrs)[0]
        m_out = m if attrs["keepdims"] else b.op("reduce_max", [x], **attrs)[0]
        return _final(b, "add", [b.op("log", [s])[0], m_out])

    def with_attr(b, a, ins):
        return build(b, ins[0], a.get("axes"), a.get("keepdims", 1), False)

    def with_input(b, a, ins):
        axes = b.static(ins[1] if len(ins) > 1 else None, "reduction axes")
        return build(b, ins[0], None if axes is None else _ints(axes), a.get("keepdims", 1),
                     a.get("noop_with_empty_axes", 0))
    return with_attr, with_input


for _onnx, _kind in (("ReduceL1", "l1"), ("ReduceSumSquare", "sum_square"),
                     ("ReduceLogSum", "log_sum"), ("ReduceLogSumExp", "log_sum_exp")):
    _attr_form, _input_form = _reduce_composite(_kind)
    onnx_op(_onnx)(_attr_form)
    onnx_op(_onnx, since=18, static=(1,))(_input_form)


# -- compositions for a few more ops of the suite --------------------------------------------
def _static_dims(x: Value, what: str, skip_batch: bool = True) -> list[int]:
    dims = list(x.shape)
    if None in dims[1 if skip_batch else 0:]:
        raise ImportProblem(f"{what} needs the input's dims (after the batch) to be static")
    return dims


@onnx_op("DepthToSpace")
def depth_to_space(b, a, ins):
    x, k = ins[0], int(a["blocksize"])
    _, c, h, w = _static_dims(x, "DepthToSpace")
    if a.get("mode", "DCR") == "DCR":
        t = b.op("reshape", [x], shape=[0, k, k, c // (k * k), h, w])[0]
        t = b.op("transpose", [t], perm=[0, 3, 4, 1, 5, 2])[0]
    else:
        t = b.op("reshape", [x], shape=[0, c // (k * k), k, k, h, w])[0]
        t = b.op("transpose", [t], perm=[0, 1, 4, 2, 5, 3])[0]
    return _final(b, "reshape", [t], shape=[-1, c // (k * k), h * k, w * k])


@onnx_op("SpaceToDepth")
def space_to_depth(b, a, ins):
    x, k = ins[0], int(a["blocksize"])
    _, c, h, w = _static_dims(x, "SpaceToDepth")
    t = b.op("reshape", [x], shape=[0, c, h // k, k, w // k, k])[0]
    perm = [0, 3, 5, 1, 2, 4] if a.get("mode", "DCR") == "DCR" else [0, 1, 3, 5, 2, 4]
    t = b.op("transpose", [t], perm=perm)[0]
    return _final(b, "reshape", [t], shape=[-1, c * k * k, h // k, w // k])


@onnx_op("Hardmax", since=13)
def hardmax(b, a, ins):
    """one_hot(argmax(x)) along ``axis`` (the first maximum wins, as in ONNX)."""
    x = ins[0]
    axis = int(a.get("axis", -1)) % x.ndim
    depth = x.shape[axis]
    if depth is None:
        raise ImportProblem("Hardmax needs a static size along its axis")
    idx = b.op("argmax", [x], axis=axis, keepdims=False)[0]
    hot = b.op("one_hot", [idx, b.const(np.asarray(depth, np.int64)),
                           b.const(np.asarray([0, 1], x.dtype))], axis=axis)[0]
    return _final(b, "identity", [hot])


@onnx_op("Shrink", since=9)
def shrink(b, a, ins):
    """x + bias below -lambd, x - bias above lambd, 0 in between."""
    x = ins[0]
    bias, lambd = float(a.get("bias", 0.0)), float(a.get("lambd", 0.5))
    c = lambda v: b.const(np.asarray(v, x.dtype))  # noqa: E731
    low = b.op("less", [x, c(-lambd)])[0]
    high = b.op("greater", [x, c(lambd)])[0]
    inner = b.op("where", [high, b.op("sub", [x, c(bias)])[0], c(0)])[0]
    return _final(b, "where", [low, b.op("add", [x, c(bias)])[0], inner])


@onnx_op("ThresholdedRelu", since=10)
def thresholded_relu(b, a, ins):
    x = ins[0]
    alpha = b.const(np.asarray(float(a.get("alpha", 1.0)), x.dtype))
    return _final(b, "where", [b.op("greater", [x, alpha])[0], x,
                               b.const(np.asarray(0, x.dtype))])


def _hyperbolic(sign: float):
    def handler(b, a, ins):
        x = ins[0]
        e_pos = b.op("exp", [x])[0]
        e_neg = b.op("exp", [b.op("neg", [x])[0]])[0]
        both = b.op("add" if sign > 0 else "sub", [e_pos, e_neg])[0]
        return _final(b, "mul", [both, b.const(np.asarray(0.5, x.dtype))])
    return handler


onnx_op("Cosh", since=9)(_hyperbolic(1.0))
onnx_op("Sinh", since=9)(_hyperbolic(-1.0))


@onnx_op("Trilu", since=14, static=(1,))
def trilu(b, a, ins):
    """A constant lower/upper triangular mask (built at load time) selects the values."""
    x = ins[0]
    k = b.static(ins[1] if len(ins) > 1 else None, "Trilu k")
    k = 0 if k is None else int(np.asarray(k).reshape(-1)[0])
    rows, cols = x.shape[-2], x.shape[-1]
    if rows is None or cols is None:
        raise ImportProblem("Trilu needs the last two dims to be static")
    ones = np.ones((rows, cols), bool)
    mask = np.triu(ones, k) if a.get("upper", 1) else np.tril(ones, k)
    return _final(b, "where", [b.const(mask), x, b.const(np.zeros((), x.dtype))])
