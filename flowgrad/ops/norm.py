"""Normalization and regularization: batch_norm, instance_norm, layer_norm, lrn, dropout.

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

import numpy as np

from ..errors import AttrError
from ..op import Attr, Op, ShapeError, Spec, format_shape, normalize_axis, unbroadcast


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
                                                "(1 - momentum)")}

    def infer(self, x, scale, bias, mean, var):
        _check_channel_vectors(self, x, {"scale": scale, "bias": bias, "mean": mean, "var": var})
        return (Spec(x.shape, x.dtype),)

    def forward(self, ctx, x, scale, bias, mean, var):
        shape = _per_channel(x)
        if ctx.training:
            axes = (0,) + tuple(range(2, x.ndim))
            xhat, inv, batch_mean, batch_var = _normalize(x, axes, self.epsilon)
            y = xhat * scale.reshape(shape) + bias.reshape(shape)
            m = self.momentum
            ctx.update_state(3, mean * m + batch_mean.reshape(-1) * (1 - m))
            ctx.update_state(4, var * m + batch_var.reshape(-1) * (1 - m))
            ctx.save(True, xhat, inv, scale, axes)
        else:
            inv, a, shift = self._eval_affine(x, scale, bias, mean, var)
            y = np.multiply(x, a, out=ctx.backend.empty(x.shape, x.dtype))
            np.add(y, shift, out=y)
            if ctx.grad_enabled:
                ctx.save(False, x, inv, a, mean)
            return (y,)
        return (y.astype(x.dtype, copy=False),)

    def _eval_affine(self, x, scale, bias, mean, var):
        """Evaluation mode is ``y = x * a + shift`` per channel; also returns 1/sqrt(var+eps)."""
        shape = _per_channel(x)
        inv = (1.0 / np.sqrt(var + self.epsilon)).reshape(shape)
        a = scale.reshape(shape) * inv
        return inv, a, bias.reshape(shape) - mean.reshape(shape) * a

    def affine(self, ctx, scale, bias, mean, var):
        """Evaluation mode: ``(a, shift)`` per channel, ``y = a * x + shift``."""
        a = scale * (1.0 / np.sqrt(var + self.epsilon))
        return a, bias - mean * a

    def backward(self, ctx, gy):
        need_x, need_scale, need_bias = ctx.needs_input_grad[:3]
        axes = (0,) + tuple(range(2, gy.ndim))
        gbias = gy.sum(axis=axes) if need_bias else None
        if ctx.saved[0]:
            _, xhat, inv, scale, axes = ctx.saved
            gscale = (gy * xhat).sum(axis=axes) if need_scale else None
            gx = _normalize_backward(gy * scale.reshape(_per_channel(gy)), xhat, inv, axes) \
                if need_x else None
        else:
            _, x, inv, a, mean = ctx.saved
            gx = gy * a if need_x else None
            gscale = (gy * (x - mean.reshape(_per_channel(x))) * inv).sum(axis=axes) \
                if need_scale else None
        return gx, gscale, gbias, None, None


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
    """ONNX LayerNormalization: normalise over axes ``axis..last``; scale/bias broadcast there."""

    type = "layer_norm"
    inputs = ("x", "scale", "bias?")
    attrs = {"axis": Attr("int", -1, doc="first normalised axis (counting the batch axis)"),
             "epsilon": Attr("float", 1e-5, doc="added to the variance")}

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
        axes = tuple(range(normalize_axis(self.axis, x.ndim), x.ndim))
        xhat, inv, _, _ = _normalize(x, axes, self.epsilon)
        y = xhat * scale
        if bias is not None:
            y += bias
        ctx.save(xhat, inv, scale, None if bias is None else bias.shape, axes)
        return (y.astype(x.dtype, copy=False),)

    def backward(self, ctx, gy):
        xhat, inv, scale, bias_shape, axes = ctx.saved
        need_x, need_scale, need_bias = (tuple(ctx.needs_input_grad) + (False,))[:3]
        gx = _normalize_backward(gy * scale, xhat, inv, axes) if need_x else None
        gscale = unbroadcast(gy * xhat, scale.shape) if need_scale else None
        gbias = unbroadcast(gy, bias_shape) if need_bias else None
        return (gx, gscale, gbias)[:len(ctx.needs_input_grad)]


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
