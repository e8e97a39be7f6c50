"""Normalization and regularization: batch_norm, instance_norm, layer_norm, group_norm, rms_normalization,
lp_normalization, mean_variance_normalization, lrn, dropout.

All follow ONNX semantics so that imported models behave identically.  Two of them act
differently in training and evaluation, following the plan's ``train()`` / ``eval()`` switch
(``ctx.training``):

* ``batch_norm`` normalises with the batch's own statistics while training and moves its running
  statistics towards them (``running = running * momentum + batch * (1 - momentum)``, biased
  batch variance, as ONNX's reference does); the running mean and variance are state — params
  declared ``trainable: false`` — updated through ``ctx.update_state``, never by an optimizer.
  In evaluation it uses the running statistics.
* ``dropout`` zeroes each value with probability ``ratio`` while training (a mask drawn from the
  plan's seeded generator, kept for backward) and scales the survivors by ``1 / (1 - ratio)``, so
  evaluation is the identity.

The three normalisations share one backward: with ``xhat = (x - mean) * inv`` over some axes,
``dx = inv * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))``.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import AttrError
from ..op import Attr, Op, ShapeError, Spec, format_shape, normalize_axis, unbroadcast
from .activations import SHARED_ROWS


def _normalize(x: np.ndarray, axes: tuple[int, ...], epsilon: float):
    """``(xhat, inv)`` with mean and (biased) variance over ``axes``; also returns mean, var."""
    mean = x.mean(axis=axes, keepdims=True)
    centered = x - mean
    var = np.mean(np.square(centered), axis=axes, keepdims=True)
    inv = 1.0 / np.sqrt(var + epsilon)
    return centered * inv, inv, mean, var


def _normalize_backward(gxhat: np.ndarray, xhat: np.ndarray, inv: np.ndarray,
                        axes: tuple[int, ...]) -> np.ndarray:
    return inv * (gxhat - gxhat.mean(axis=axes, keepdims=True)
                  - xhat * np.mean(gxhat * xhat, axis=axes, keepdims=True))


def _per_channel(x) -> tuple[int, ...]:
    """Shape that broadcasts a (C,) vector over (N, C, *spatial)."""
    return (1, -1) + (1,) * (x.ndim - 2)


def _check_channel_vectors(op, x, vectors: dict) -> None:
    if x.ndim < 2:
        raise ShapeError(f"{op.type} needs an input (N, C, ...), got {format_shape(x.shape)}")
    channels = x.shape[1]
    for name, v in vectors.items():
        if v is None:
            continue
        if v.ndim != 1 or None not in (v.shape[0], channels) and v.shape[0] != channels:
            raise ShapeError(f"{op.type}: '{name}' must have shape ({channels},) (one value per "
                             f"channel), got {format_shape(v.shape)}")


class BatchNorm(Op):
    """ONNX BatchNormalization over axis 1 of ``(N, C, *spatial)``; see the module doc."""

    type = "batch_norm"
    inputs = ("x", "scale", "bias", "mean", "var")
    no_grad_inputs = frozenset({"mean", "var"})
    updates_state = True
    rowwise = inplace = True            # in evaluation, a per-channel affine map
    attrs = {"epsilon": Attr("float", 1e-5, doc="added to the variance"),
             "momentum": Attr("float", 0.9, doc="running = running * momentum + batch * "
                                                "(1 - momentum)"),
             "use_running_stats": Attr("bool", False, doc="normalise with the running "
                                       "statistics in training mode too, and leave them "
                                       "unchanged (Caffe's use_global_stats; fine-tuning)")}

    def infer(self, x, scale, bias, mean, var):
        _check_channel_vectors(self, x, {"scale": scale, "bias": bias, "mean": mean, "var": var})
        return (Spec(x.shape, x.dtype),)

    def forward(self, ctx, x, scale, bias, mean, var):
        kernels = ctx.backend.kernels
        x3 = _channels_view(x)
        y = ctx.backend.empty(x.shape, x.dtype)
        if ctx.training and not self.use_running_stats:   # batch statistics (kernels.norm)
            batch_mean = np.empty(x3.shape[1])
            batch_var = np.empty(x3.shape[1])
            kernels.bn_stats(x3, batch_mean, batch_var)
            inv = 1.0 / np.sqrt(batch_var + self.epsilon)
            a = scale * inv
            kernels.bn_apply(x3, a.astype(x.dtype), (bias - batch_mean * a).astype(x.dtype),
                             y.reshape(x3.shape))
            m = self.momentum
            ctx.update_state(3, (mean * m + batch_mean * (1 - m)).astype(mean.dtype))
            ctx.update_state(4, (var * m + batch_var * (1 - m)).astype(var.dtype))
            if ctx.grad_enabled:
                ctx.save(True, x3, batch_mean, inv, scale)
            return (y,)
        a, shift = self.affine(ctx, scale, bias, mean, var)
        kernels.bn_apply(x3, a.astype(x.dtype, copy=False), shift.astype(x.dtype, copy=False),
                         y.reshape(x3.shape))
        if ctx.grad_enabled:
            ctx.save(False, x3, mean, 1.0 / np.sqrt(var + self.epsilon), a)
        return (y,)

    def affine(self, ctx, scale, bias, mean, var):
        """Evaluation mode: ``(a, shift)`` per channel, ``y = a * x + shift``."""
        a = scale * (1.0 / np.sqrt(var + self.epsilon))
        return a, bias - mean * a

    def backward(self, ctx, gy):
        need_x, need_scale, need_bias = ctx.needs_input_grad[:3]
        training, x3, mean, inv, weight = ctx.saved     # weight: scale, or a in evaluation
        gy3 = _channels_view(gy)
        if training:
            scale = weight
            gx = (ctx.backend.empty(gy.shape, gy.dtype) if need_x
                  else np.empty((0, 0, 0), gy.dtype))
            gscale, gbias = np.empty(len(scale)), np.empty(len(scale))
            ctx.backend.kernels.bn_backward(gy3, x3, mean, inv, scale.astype(np.float64),
                                            gx.reshape(gy3.shape) if need_x else gx,
                                            gscale, gbias)
            return (gx if need_x else None, gscale.astype(scale.dtype) if need_scale else None,
                    gbias.astype(scale.dtype) if need_bias else None, None, None)
        a = weight
        gx = gy * a.reshape(_per_channel(gy)) if need_x else None
        gscale = gbias = None
        if need_scale:
            xhat = (x3 - mean.reshape(1, -1, 1)) * inv.reshape(1, -1, 1)
            gscale = (gy3 * xhat).sum(axis=(0, 2)).astype(a.dtype, copy=False)
        if need_bias:
            gbias = gy3.sum(axis=(0, 2)).astype(a.dtype, copy=False)
        return gx, gscale, gbias, None, None


def _channels_view(x: np.ndarray) -> np.ndarray:
    """``x`` (N, C, *spatial) as a C-contiguous (N, C, S) array (a view when it already is)."""
    return np.ascontiguousarray(x).reshape(x.shape[0], x.shape[1], -1)


class InstanceNorm(Op):
    """ONNX InstanceNormalization: each (image, channel) normalised over its spatial axes."""

    type = "instance_norm"
    inputs = ("x", "scale", "bias")
    attrs = {"epsilon": Attr("float", 1e-5, doc="added to the variance")}

    def infer(self, x, scale, bias):
        _check_channel_vectors(self, x, {"scale": scale, "bias": bias})
        if x.ndim < 3:
            raise ShapeError(f"instance_norm needs (N, C, *spatial), got {format_shape(x.shape)}")
        return (Spec(x.shape, x.dtype),)

    def forward(self, ctx, x, scale, bias):
        axes = tuple(range(2, x.ndim))
        xhat, inv, _, _ = _normalize(x, axes, self.epsilon)
        shape = _per_channel(x)
        ctx.save(xhat, inv, scale)
        return ((xhat * scale.reshape(shape) + bias.reshape(shape)).astype(x.dtype, copy=False),)

    def backward(self, ctx, gy):
        xhat, inv, scale = ctx.saved
        need_x, need_scale, need_bias = ctx.needs_input_grad
        axes = tuple(range(2, gy.ndim))
        gx = _normalize_backward(gy * scale.reshape(_per_channel(gy)), xhat, inv, axes) \
            if need_x else None
        gscale = (gy * xhat).sum(axis=(0,) + axes) if need_scale else None
        gbias = gy.sum(axis=(0,) + axes) if need_bias else None
        return gx, gscale, gbias


class LayerNorm(Op):
    """ONNX LayerNormalization: normalise over axes ``axis..last``; scale/bias broadcast there.

    float32 and float64 inputs run the row kernels (``kernels.layer_norm`` and its backward,
    :mod:`flowgrad.kernels.rows`) on the (rows, normalised size) view: statistics in float64,
    one pass over memory each way, and backward recomputes ``xhat`` from the saved per-row mean
    and 1/std instead of keeping a normalised copy of the input.  Other dtypes take the numpy
    path.  The op is ``rowwise`` (infer refuses axis 0) and may run in place: the kernel reads a
    whole row before writing it.
    """

    type = "layer_norm"
    inputs = ("x", "scale", "bias?")
    attrs = {"axis": Attr("int", -1, doc="first normalised axis (counting the batch axis)"),
             "epsilon": Attr("float", 1e-5, doc="added to the variance")}
    rowwise = inplace = True

    def infer(self, x, scale, bias=None):
        axis = normalize_axis(self.axis, x.ndim)
        if axis == 0:
            raise ShapeError("layer_norm over the batch axis mixes examples; use axis >= 1")
        tail = x.shape[axis:]
        for name, v in (("scale", scale), ("bias", bias)):
            if v is None:
                continue
            if v.ndim > len(tail) or any(a not in (1, b) and None not in (a, b)
                                         for a, b in zip(v.shape[::-1], tail[::-1])):
                raise ShapeError(f"layer_norm: '{name}' of shape {format_shape(v.shape)} does "
                                 f"not broadcast to the normalised axes {format_shape(tail)}")
        return (Spec(x.shape, x.dtype),)

    def forward(self, ctx, x, scale, bias=None):
        axis = normalize_axis(self.axis, x.ndim)
        if x.dtype not in (np.float32, np.float64):
            axes = tuple(range(axis, x.ndim))
            xhat, inv, _, _ = _normalize(x, axes, self.epsilon)
            y = xhat * scale
            if bias is not None:
                y += bias
            ctx.save(False, xhat, inv, scale, None if bias is None else bias.shape, axes)
            return (y.astype(x.dtype, copy=False),)
        tail = x.shape[axis:]
        rows, n = math.prod(x.shape[:axis]), math.prod(tail)
        y = ctx.backend.empty(x.shape, x.dtype)           # first: the plan may place it over x
        x2 = np.asarray(x, order="C").reshape(rows, n)
        s = _tail_vector(scale, tail)
        b = np.zeros(n) if bias is None else _tail_vector(bias, tail)
        mean, inv = np.empty(rows), np.empty(rows)
        placed_aside = not y.flags.c_contiguous             # a non-contiguous placement
        y2 = np.empty((rows, n), x.dtype) if placed_aside else y.reshape(rows, n)
        # epsilon in x's precision, as numpy added it and as ONNX stores it (a float32
        # attribute): 1e-5 from YAML and from an exported model then give the same bits
        epsilon = float(x.dtype.type(self.epsilon))
        layer_norm = ctx.backend.kernels.layer_norm
        if x2.size < SHARED_ROWS:
            layer_norm(x2, s, b, epsilon, y2, mean, inv)
        else:       # each row alone: the threads share ranges of rows (the bits do not move)
            ctx.backend.batch(rows, 2 * n, lambda start, stop: layer_norm(
                x2[start:stop], s, b, epsilon, y2[start:stop], mean[start:stop],
                inv[start:stop]))
        if placed_aside:
            np.copyto(y, y2.reshape(x.shape))
        if ctx.grad_enabled:
            ctx.save(True, x2, mean, inv, s, scale, bias, x.shape, tail)
        return (y,)

    def backward(self, ctx, gy):
        need_x, need_scale, need_bias = (tuple(ctx.needs_input_grad) + (False,))[:3]
        if not ctx.saved[0]:
            _, xhat, inv, scale, bias_shape, axes = ctx.saved
            gx = _normalize_backward(gy * scale, xhat, inv, axes) if need_x else None
            gscale = unbroadcast(gy * xhat, scale.shape) if need_scale else None
            gbias = unbroadcast(gy, bias_shape) if need_bias else None
            return (gx, gscale, gbias)[:len(ctx.needs_input_grad)]
        _, x2, mean, inv, s, scale, bias, shape, tail = ctx.saved
        gy2 = np.asarray(gy, dtype=x2.dtype, order="C").reshape(x2.shape)
        gx = ctx.backend.empty(shape, x2.dtype)
        gscale, gbias = np.empty(x2.shape[1]), np.empty(x2.shape[1])
        ctx.backend.kernels.layer_norm_backward(x2, mean, inv, s, gy2, gx.reshape(x2.shape),
                                                gscale, gbias)
        return (gx if need_x else None,
                unbroadcast(gscale.reshape(tail), scale.shape).astype(scale.dtype, copy=False)
                if need_scale else None,
                unbroadcast(gbias.reshape(tail), bias.shape).astype(bias.dtype, copy=False)
                if need_bias else None)[:len(ctx.needs_input_grad)]


def _tail_vector(v: np.ndarray, tail: tuple[int, ...]) -> np.ndarray:
    """A scale or bias broadcast to the normalised axes, flattened, in float64 (the kernels'
    arithmetic): a (n,) contiguous vector."""
    return np.ascontiguousarray(np.broadcast_to(v, tail), dtype=np.float64).reshape(-1)


class LRN(Op):
    """ONNX LRN across channels: ``y = x / (bias + alpha / size * sum_window x^2) ** beta``.

    The window of channel ``c`` is ``[c - floor((size-1)/2), c + ceil((size-1)/2)]``; sums over
    it are a loop over the ``size`` offsets, each one vectorised slice.
    """

    type = "lrn"
    attrs = {"size": Attr("int", doc="channels in the window"),
             "alpha": Attr("float", 1e-4), "beta": Attr("float", 0.75),
             "bias": Attr("float", 1.0)}

    def check(self):
        if self.size < 1:
            raise AttrError("lrn: 'size' must be >= 1", attr="size")

    def infer(self, x):
        if x.ndim < 2:
            raise ShapeError(f"lrn needs (N, C, ...), got {format_shape(x.shape)}")
        return (Spec(x.shape, x.dtype),)

    def _window_sum(self, v: np.ndarray, before: int, after: int) -> np.ndarray:
        channels = v.shape[1]
        padded = np.zeros((v.shape[0], channels + before + after) + v.shape[2:], dtype=v.dtype)
        padded[:, before:before + channels] = v
        total = padded[:, :channels].copy()
        for k in range(1, self.size):
            total += padded[:, k:k + channels]
        return total

    def forward(self, ctx, x):
        lo, hi = (self.size - 1) // 2, self.size - 1 - (self.size - 1) // 2
        denom = self.bias + (self.alpha / self.size) * self._window_sum(x * x, lo, hi)
        scale = denom ** -self.beta
        ctx.save(x, denom, scale)
        return ((x * scale).astype(x.dtype, copy=False),)

    def backward(self, ctx, gy):
        x, denom, scale = ctx.saved
        lo, hi = (self.size - 1) // 2, self.size - 1 - (self.size - 1) // 2
        q = gy * x * scale / denom
        spread = self._window_sum(q, hi, lo)      # the transpose of the forward window
        return (gy * scale - (2 * self.alpha * self.beta / self.size) * x * spread,)


class Dropout(Op):
    """Zero each value with probability ``ratio`` while training; identity in evaluation.

    ``training_mode`` unset follows the plan's ``train()`` / ``eval()``; true or false fixes it
    (ONNX Dropout's ``training_mode`` input).  The mask comes from the plan's seeded generator,
    or, when ``seed`` is set, from ``numpy.random.RandomState(seed).uniform(0, 1, shape) >=
    ratio`` — the same mask at every call, which is how ONNX's reference implementation (and so
    its conformance data) reads Dropout's ``seed`` attribute.  The second output ``mask`` (bool)
    tells which values were kept (all true when nothing is dropped).
    """

    type = "dropout"
    outputs = ("y", "mask")
    attrs = {"ratio": Attr("float", 0.5, doc="probability of dropping a value, in [0, 1)"),
             "training_mode": Attr("bool", None, doc="unset: follow the plan's train()/eval(); "
                                                     "true: always drop; false: never drop"),
             "seed": Attr("int", None, doc="draw the mask from numpy.random.RandomState(seed) "
                                           "(the same mask every call) instead of the plan's "
                                           "generator")}

    def check(self):
        if not 0.0 <= self.ratio < 1.0:
            raise AttrError(f"dropout: 'ratio' must be in [0, 1), got {self.ratio}",
                            attr="ratio")
        if self.seed is not None and not 0 <= self.seed < 2**32:
            raise AttrError(f"dropout: 'seed' must be in [0, 2**32), got {self.seed}",
                            attr="seed")

    def infer(self, x):
        return Spec(x.shape, x.dtype), Spec(x.shape, np.dtype(bool))

    def forward(self, ctx, x):
        active = ctx.training if self.training_mode is None else self.training_mode
        if not active or self.ratio == 0.0:
            ctx.save(None, x.shape, x.dtype)
            return x, np.broadcast_to(np.True_, x.shape)
        if self.seed is not None:
            keep = np.random.RandomState(self.seed).uniform(0.0, 1.0, x.shape) >= self.ratio
        else:
            rng = ctx.rng if ctx.rng is not None else np.random.default_rng()
            keep = rng.random(x.shape, dtype=np.float32) >= self.ratio
        mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - self.ratio))
        ctx.save(mask, x.shape, x.dtype)
        return x * mask, keep

    def backward(self, ctx, gy, gmask=None):
        mask, shape, dtype = ctx.saved
        if gy is None:                      # only the (bool) mask was used
            return (np.zeros(shape, dtype) if ctx.needs_input_grad[0] else None,)
        return (gy if mask is None else gy * mask,)


def _stash_dtype(dtype: np.dtype, stash_type: int) -> np.dtype:
    """The dtype statistics are computed in: ONNX's ``stash_type`` (1 = float32) or the input's
    own precision, whichever is wider, so float16 models keep float32 statistics and float64
    stays exact (finite-difference checks and float64 models)."""
    stash = np.dtype(np.float32) if stash_type == 1 else dtype
    return np.promote_types(stash, dtype) if dtype.kind == "f" else np.dtype(np.float32)


def _check_tail(op, x, tail_from: int, vectors: dict) -> None:
    """``vectors`` (scale, bias) must broadcast to the normalised axes ``x.shape[tail_from:]``."""
    tail = x.shape[tail_from:]
    for name, v in vectors.items():
        if v is None:
            continue
        if v.ndim > len(tail) or any(a not in (1, b) and None not in (a, b)
                                     for a, b in zip(v.shape[::-1], tail[::-1])):
            raise ShapeError(f"{op.type}: '{name}' of shape {format_shape(v.shape)} does not "
                             f"broadcast to the normalised axes {format_shape(tail)}")


class RMSNorm(Op):
    """ONNX RMSNormalization (opset 23): ``y = x / sqrt(mean(x², axes) + epsilon) * scale`` over
    the axes ``axis..last``, ``scale`` broadcasting to them (as in LLaMA-style models).

    Unlike layer_norm nothing is centred and there is no bias.  ``axis`` may be 0 (the batch
    axis too, as ONNX allows).  Statistics are computed in the ``stash_type`` precision or
    wider (:func:`_stash_dtype`).  With ``r = 1 / rms`` and ``xhat = x r`` over ``n`` values,
    backward is ``dx = r (g - xhat mean(g xhat))`` where ``g = dy * scale``.
    """

    type = "rms_normalization"
    inputs = ("x", "scale")
    attrs = {"axis": Attr("int", -1, doc="first normalised axis (counting the batch axis)"),
             "epsilon": Attr("float", 1e-5, doc="added to the mean square"),
             "stash_type": Attr("int", 1, doc="ONNX element type of the statistics "
                                              "(1 = float32; a wider input keeps its own)")}

    def check(self):
        if self.epsilon < 0:
            raise AttrError(f"rms_normalization: 'epsilon' must be >= 0, got {self.epsilon}",
                            attr="epsilon")

    def infer(self, x, scale):
        axis = normalize_axis(self.axis, x.ndim)
        _check_tail(self, x, axis, {"scale": scale})
        return (Spec(x.shape, np.result_type(x.dtype, scale.dtype)),)

    def forward(self, ctx, x, scale):
        axes = tuple(range(normalize_axis(self.axis, x.ndim), x.ndim))
        work = _stash_dtype(x.dtype, self.stash_type)
        xs = np.asarray(x, dtype=work)
        inv = 1.0 / np.sqrt(np.mean(np.square(xs), axis=axes, keepdims=True)
                            + work.type(self.epsilon))
        xhat = xs * inv
        if ctx.grad_enabled:
            ctx.save(xhat, inv, scale, axes)
        return ((xhat * scale).astype(np.result_type(x.dtype, scale.dtype), copy=False),)

    def backward(self, ctx, gy):
        xhat, inv, scale, axes = ctx.saved
        need_x, need_scale = ctx.needs_input_grad
        gx = gscale = None
        if need_x:
            g = gy * scale
            gx = (inv * (g - xhat * np.mean(g * xhat, axis=axes, keepdims=True))).astype(
                gy.dtype, copy=False)
        if need_scale:
            gscale = unbroadcast(gy * xhat, scale.shape).astype(scale.dtype, copy=False)
        return gx, gscale


class GroupNorm(Op):
    """ONNX GroupNormalization (opset 21 form): the channels of ``(N, C, *spatial)`` split into
    ``num_groups`` groups, each (example, group) normalised over its channels and positions,
    then a per-channel ``scale`` and ``bias``.  (Opset 18's per-group scale and bias are
    repeated per channel by the importer.)  Shares the normalisations' backward."""

    type = "group_norm"
    inputs = ("x", "scale", "bias")
    rowwise = True
    attrs = {"num_groups": Attr("int", doc="channel groups; C must divide by it"),
             "epsilon": Attr("float", 1e-5, doc="added to the variance"),
             "stash_type": Attr("int", 1, doc="ONNX element type of the statistics "
                                              "(1 = float32; a wider input keeps its own)")}

    def check(self):
        if self.num_groups < 1:
            raise AttrError(f"group_norm: 'num_groups' must be >= 1, got {self.num_groups}",
                            attr="num_groups")

    def infer(self, x, scale, bias):
        _check_channel_vectors(self, x, {"scale": scale, "bias": bias})
        channels = x.shape[1]
        if channels is not None and channels % self.num_groups:
            raise ShapeError(f"group_norm: {channels} channels do not split into "
                             f"num_groups={self.num_groups}")
        return (Spec(x.shape, x.dtype),)

    def forward(self, ctx, x, scale, bias):
        work = _stash_dtype(x.dtype, self.stash_type)
        grouped = np.asarray(x, dtype=work).reshape(x.shape[0], self.num_groups, -1)
        xhat, inv, _, _ = _normalize(grouped, (2,), work.type(self.epsilon))
        xhat = xhat.reshape(x.shape)
        shape = _per_channel(x)
        if ctx.grad_enabled:
            ctx.save(xhat, inv, scale)
        return ((xhat * scale.reshape(shape) + bias.reshape(shape)).astype(x.dtype, copy=False),)

    def backward(self, ctx, gy):
        xhat, inv, scale = ctx.saved
        need_x, need_scale, need_bias = ctx.needs_input_grad
        spatial = tuple(range(2, gy.ndim))
        gx = gscale = gbias = None
        if need_x:
            n = gy.shape[0]
            gxhat = (gy * scale.reshape(_per_channel(gy))).reshape(n, self.num_groups, -1)
            gx = _normalize_backward(gxhat, xhat.reshape(gxhat.shape), inv, (2,)).reshape(
                gy.shape).astype(gy.dtype, copy=False)
        if need_scale:
            gscale = (gy * xhat).sum(axis=(0,) + spatial).astype(scale.dtype, copy=False)
        if need_bias:
            gbias = gy.sum(axis=(0,) + spatial).astype(scale.dtype, copy=False)
        return gx, gscale, gbias


class LpNormalization(Op):
    """ONNX LpNormalization: ``y = x / ||x||_p`` along ``axis`` (p = 1 or 2), 0 where the norm
    is 0 (as ONNX's reference gives, instead of NaN; the gradient there is 0 too).

    Backward: for p = 2, ``dx = (dy - y sum(dy y)) / n``; for p = 1,
    ``dx = dy / n - sign(x) sum(dy x) / n²``.
    """

    type = "lp_normalization"
    attrs = {"axis": Attr("int", -1, doc="the axis normalised (counting the batch axis)"),
             "p": Attr("int", 2, choices=(1, 2), doc="the norm: 1 or 2")}

    def infer(self, x):
        normalize_axis(self.axis, x.ndim)
        return (Spec(x.shape, x.dtype),)

    def forward(self, ctx, x):
        axis = normalize_axis(self.axis, x.ndim)
        norm = (np.abs(x).sum(axis=axis, keepdims=True) if self.p == 1
                else np.sqrt(np.square(x).sum(axis=axis, keepdims=True)))
        zero = norm == 0
        safe = np.where(zero, 1, norm).astype(x.dtype, copy=False)
        y = np.where(zero, 0, x / safe).astype(x.dtype, copy=False)
        if ctx.grad_enabled:
            ctx.save(x, y, safe, zero, axis)
        return (y,)

    def backward(self, ctx, gy):
        x, y, norm, zero, axis = ctx.saved
        if self.p == 2:
            gx = (gy - y * np.sum(gy * y, axis=axis, keepdims=True)) / norm
        else:
            gx = gy / norm - np.sign(x) * np.sum(gy * x, axis=axis, keepdims=True) / (norm * norm)
        return (np.where(zero, 0, gx).astype(gy.dtype, copy=False),)


class MeanVarianceNormalization(Op):
    """ONNX MeanVarianceNormalization: ``y = (x - mean) / (std + 1e-9)`` over ``axes``, the
    epsilon and its place (added to the standard deviation) being ONNX's function body.

    Default axes (0, 2, 3) include the batch axis: statistics cross examples, so the op is not
    rowwise.  With ``c = x - mean``, ``s = std`` and ``r = 1 / (s + 1e-9)`` over ``n`` values,
    ``dc = dy r - c r² sum(dy c) / (n s)`` and ``dx = dc - mean(dc)``.
    """

    type = "mean_variance_normalization"
    attrs = {"axes": Attr("ints", (0, 2, 3), doc="axes the statistics are taken over")}
    EPSILON = 1e-9

    def _axes(self, ndim: int) -> tuple[int, ...]:
        axes = tuple(sorted({normalize_axis(a, ndim) for a in self.axes}))
        if len(axes) != len(self.axes):
            raise ShapeError(f"mean_variance_normalization: 'axes' {list(self.axes)} repeats "
                             "an axis")
        return axes

    def infer(self, x):
        self._axes(x.ndim)
        return (Spec(x.shape, x.dtype),)

    def forward(self, ctx, x):
        axes = self._axes(x.ndim)
        centered = x - x.mean(axis=axes, keepdims=True)
        std = np.sqrt(np.mean(np.square(centered), axis=axes, keepdims=True))
        r = 1.0 / (std + self.EPSILON)
        if ctx.grad_enabled:
            ctx.save(centered, std, r, axes)
        return ((centered * r).astype(x.dtype, copy=False),)

    def backward(self, ctx, gy):
        centered, std, r, axes = ctx.saved
        n = centered.size // std.size
        coupling = np.sum(gy * centered, axis=axes, keepdims=True) * r * r
        coupling = np.where(std > 0, coupling / (n * np.where(std > 0, std, 1)), 0)
        gc = gy * r - centered * coupling
        return ((gc - gc.mean(axis=axes, keepdims=True)).astype(gy.dtype, copy=False),)
