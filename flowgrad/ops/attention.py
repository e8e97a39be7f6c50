"""Transformer ops: ONNX's ``Attention`` (opsets 23-25), ``RotaryEmbedding`` (23),
``LinearAttention`` (27) and ``SwiGLU`` (28).

All follow the ONNX operators (and their reference implementation where the text leaves a
choice), so that an exported transformer block imports as one node each and differentiates.

``attention`` computes ``softmax(softcap(scale · Q Kᵀ) + bias) V`` per head, where ``bias``
gathers every way ONNX lets a model hide keys: a float or bool ``attn_mask`` (shorter than the
key sequence: the rest is masked), ``is_causal`` (bottom-right aligned: query ``i`` of the block
sees key ``j`` when ``j <= i + offset``, ``offset`` being the past length, or per example
``nonpad_kv_seqlen - q_len``), a sliding window (opset 25) and the padding given by
``nonpad_kv_seqlen`` (opset 24).  A query that sees no key at all outputs zeros.

Grouped-query attention (fewer key/value heads than query heads) never copies K and V: the query
heads are viewed as ``(kv_heads, repeats)`` and the products broadcast over ``repeats``; query
head ``h`` reads key/value head ``h // repeats``, as ONNX's interleaved repeat does.
"""
from __future__ import annotations

import numpy as np

from ..errors import AttrError
from ..op import Attr, Op, ShapeError, Spec, format_shape, unbroadcast

_FLOATS = ("float16", "float32", "float64")


def _work_dtype(dtype) -> np.dtype:
    """Arithmetic precision: float32 for float16 inputs (their products and softmax would lose
    too much), the input's own otherwise."""
    return np.promote_types(np.dtype(dtype), np.float32)


def _mul(a, b):
    """Product of two static dims (None when either is unknown)."""
    return None if a is None or b is None else a * b


class Attention(Op):
    """ONNX Attention (opsets 23-25); see the module doc for the bias and the grouped heads.

    Inputs are 4-D ``(batch, heads, seq, head_size)`` or 3-D ``(batch, seq, heads · head_size)``
    (then ``q_num_heads`` and ``kv_num_heads`` say how to split them, and Y comes back 3-D).
    ``past_key`` / ``past_value`` (4-D) are prepended to K and V; ``present_key`` /
    ``present_value`` are the concatenations (4-D).  ``qk_matmul_output`` is, by
    ``qk_matmul_output_mode``, the scaled (and soft-capped) product ``Q Kᵀ`` (0 and 1, as ONNX's
    reference gives both), with the bias added (2), or the softmax (3).

    Backward gives exact gradients for Q, K, V, a float ``attn_mask`` and the past key and value,
    from every output (including ``present_*`` and ``qk_matmul_output``): with ``P`` the
    softmax, ``dZ = P ⊙ (dP - rowsum(dP ⊙ P))``, through ``softcap`` by ``1 - tanh²``.
    """

    type = "attention"
    inputs = ("Q", "K", "V", "attn_mask?", "past_key?", "past_value?", "nonpad_kv_seqlen?")
    outputs = ("Y", "present_key", "present_value", "qk_matmul_output")
    no_grad_inputs = frozenset({"nonpad_kv_seqlen"})
    attrs = {
        "scale": Attr("float", None, doc="factor of Q Kᵀ; default 1 / sqrt(head_size)"),
        "is_causal": Attr("bool", False, doc="each query sees only keys up to its position"),
        "q_num_heads": Attr("int", None, doc="query heads of 3-D inputs"),
        "kv_num_heads": Attr("int", None, doc="key/value heads of 3-D inputs"),
        "softcap": Attr("float", 0.0, doc="> 0: scores become softcap · tanh(scores / softcap)"),
        "qk_matmul_output_mode": Attr("int", 0, choices=(0, 1, 2, 3),
                                      doc="what output 'qk_matmul_output' holds (see the doc)"),
        "softmax_precision": Attr("str", None, choices=(None,) + _FLOATS,
                                  doc="dtype the softmax is computed in (at least float32)"),
        "left_window_size": Attr("int", -1, doc=">= 0: keys at most this far before the query"),
        "right_window_size": Attr("int", -1, doc=">= 0: keys at most this far after the query"),
    }

    def check(self):
        for name in ("q_num_heads", "kv_num_heads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise AttrError(f"attention: '{name}' must be >= 1, got {value}", attr=name)
        if self.softcap < 0:
            raise AttrError(f"attention: 'softcap' must be >= 0, got {self.softcap}",
                            attr="softcap")
        for name in ("left_window_size", "right_window_size"):
            if getattr(self, name) < -1:
                raise AttrError(f"attention: '{name}' must be -1 (unbounded) or >= 0, got "
                                f"{getattr(self, name)}", attr=name)

    # -- shapes ---------------------------------------------------------------------------
    def _heads(self, Q, K, V):
        """``(q_heads, kv_heads, head_size, v_head_size, q_len, kv_len)`` from the (static or
        real) shapes; a ShapeError for inconsistent inputs."""
        if not Q.ndim == K.ndim == V.ndim or Q.ndim not in (3, 4):
            raise ShapeError(f"attention: Q, K and V must all be 3-D (batch, seq, hidden) or "
                             f"all 4-D (batch, heads, seq, head_size); got "
                             f"{format_shape(Q.shape)}, {format_shape(K.shape)}, "
                             f"{format_shape(V.shape)}")
        if Q.ndim == 4:
            hq, sq, d = Q.shape[1:]
            hk, skv, dk = K.shape[1:]
            hv, sv, dv = V.shape[1:]
            if None not in (hk, hv) and hk != hv:
                raise ShapeError(f"attention: K has {hk} heads but V has {hv}")
        else:
            if self.q_num_heads is None or self.kv_num_heads is None:
                raise ShapeError("attention: 3-D inputs need 'q_num_heads' and 'kv_num_heads' "
                                 "to split the hidden axis into heads")
            hq, hk = self.q_num_heads, self.kv_num_heads
            sq, skv, sv = Q.shape[1], K.shape[1], V.shape[1]
            for name, v, heads in (("Q", Q, hq), ("K", K, hk), ("V", V, hk)):
                if v.shape[2] is not None and v.shape[2] % heads:
                    raise ShapeError(f"attention: {name}'s hidden size {v.shape[2]} does not "
                                     f"split into {heads} heads")
            d = None if Q.shape[2] is None else Q.shape[2] // hq
            dk = None if K.shape[2] is None else K.shape[2] // hk
            dv = None if V.shape[2] is None else V.shape[2] // hk
        if None not in (d, dk) and d != dk:
            raise ShapeError(f"attention: queries have head size {d} but keys {dk}")
        if None not in (skv, sv) and skv != sv:
            raise ShapeError(f"attention: K has {skv} positions but V has {sv}")
        if None not in (hq, hk) and hq % hk:
            raise ShapeError(f"attention: {hq} query heads do not split into groups over {hk} "
                             "key/value heads")
        return hq, hk, d, dv, sq, skv

    def infer(self, Q, K, V, attn_mask=None, past_key=None, past_value=None,
              nonpad_kv_seqlen=None):
        hq, hk, d, dv, sq, skv = self._heads(Q, K, V)
        if (past_key is None) != (past_value is None):
            raise ShapeError("attention: give past_key and past_value together")
        if past_key is not None and nonpad_kv_seqlen is not None:
            raise ShapeError("attention: nonpad_kv_seqlen cannot be combined with past_key")
        past = 0
        if past_key is not None:
            for name, p in (("past_key", past_key), ("past_value", past_value)):
                if p.ndim != 4:
                    raise ShapeError(f"attention: {name} must be 4-D (batch, kv_heads, "
                                     f"past_len, head_size), got {format_shape(p.shape)}")
            past = past_key.shape[2]
        total = None if past is None or skv is None else past + skv
        if attn_mask is not None:
            if not 1 <= attn_mask.ndim <= 4:
                raise ShapeError(f"attention: attn_mask must have 1 to 4 axes (..., q_len, "
                                 f"kv_len), got {format_shape(attn_mask.shape)}")
            full = (Q.shape[0], hq, sq)
            for axis, (got, want) in enumerate(zip(attn_mask.shape[-2::-1], full[::-1])):
                if None not in (got, want) and got not in (1, want):
                    what = ("query positions", "query heads", "batch")[axis]
                    raise ShapeError(f"attention: attn_mask {format_shape(attn_mask.shape)} "
                                     f"does not broadcast to (batch, q_heads, q_len, kv_len) = "
                                     f"{format_shape(full + (total,))}: {got} {what}")
            last = attn_mask.shape[-1]
            if None not in (last, total) and last > total:
                raise ShapeError(f"attention: attn_mask covers {last} keys but there are only "
                                 f"{total}")
        batch = Q.shape[0]
        if Q.ndim == 4:
            y = Spec((batch, hq, sq, dv), Q.dtype)
        else:
            y = Spec((batch, sq, _mul(hq, dv)), Q.dtype)
        return (y, Spec((batch, hk, total, d), K.dtype), Spec((batch, hk, total, dv), V.dtype),
                Spec((batch, hq, sq, total), Q.dtype))

    # -- forward --------------------------------------------------------------------------
    def _as4d(self, x, heads):
        """A 3-D (batch, seq, heads · size) input as (batch, heads, seq, size)."""
        if x.ndim == 4:
            return x
        b, s, h = x.shape
        return x.reshape(b, s, heads, h // heads).transpose(0, 2, 1, 3)

    def _bias(self, mask, batch, q_len, total, past, nonpad, work):
        """The additive bias (0 or -inf, plus a float mask) broadcastable to
        ``(batch, q_heads, q_len, total)``, or None; and the mask's padded width."""
        bias = None
        if mask is not None:
            width = mask.shape[-1]
            if width < total:
                pad = [(0, 0)] * (mask.ndim - 1) + [(0, total - width)]
                mask = np.pad(mask, pad, constant_values=False if mask.dtype == bool else -np.inf)
            bias = (np.where(mask, work.type(0), work.type(-np.inf)) if mask.dtype == bool
                    else np.asarray(mask, dtype=work))
        if nonpad is not None:
            offset = (np.asarray(nonpad).reshape(-1).astype(np.int64) - q_len).reshape(-1, 1, 1, 1)
        else:
            offset = np.int64(past)
        diff = np.arange(q_len).reshape(-1, 1) + offset - np.arange(total)   # i + offset - j
        allowed = None
        if self.is_causal:
            allowed = diff >= 0
        if self.left_window_size >= 0:
            allowed = _and(allowed, diff <= self.left_window_size)
        if self.right_window_size >= 0:
            allowed = _and(allowed, -diff <= self.right_window_size)
        if nonpad is not None:
            keep = (np.arange(total) < np.asarray(nonpad).reshape(-1, 1)).reshape(
                batch, 1, 1, total)
            allowed = _and(allowed, keep)
        if allowed is not None:
            extra = np.where(allowed, work.type(0), work.type(-np.inf))
            bias = extra if bias is None else bias + extra
        return bias

    def forward(self, ctx, Q, K, V, attn_mask=None, past_key=None, past_value=None,
                nonpad_kv_seqlen=None):
        hq, hk, d, dv, sq, skv = self._heads(Q, K, V)
        if (past_key is None) != (past_value is None):
            raise ShapeError("attention: give past_key and past_value together")
        work = _work_dtype(Q.dtype)
        q4, k4, v4 = self._as4d(Q, hq), self._as4d(K, hk), self._as4d(V, hk)
        present_k = k4 if past_key is None else np.concatenate([past_key, k4], axis=2)
        present_v = v4 if past_value is None else np.concatenate([past_value, v4], axis=2)
        batch, total = q4.shape[0], present_k.shape[2]
        past = 0 if past_key is None else past_key.shape[2]
        reps = hq // hk
        scale = self.scale if self.scale is not None else 1.0 / np.sqrt(d)
        # the query heads of one key/value head are stacked as rows: every product is a plain
        # batched matrix product (BLAS), with no broadcast operand
        rows = np.asarray(q4, dtype=work).reshape(batch, hk, reps * sq, d)
        kp = np.asarray(present_k, dtype=work)
        vp = np.asarray(present_v, dtype=work)
        scores = np.matmul(rows, kp.swapaxes(-1, -2)).reshape(batch, hk, reps, sq, total)
        scores *= work.type(scale)
        tanh = None
        if self.softcap > 0:
            tanh = np.tanh(scores / work.type(self.softcap))
            capped = tanh * work.type(self.softcap)
        else:
            capped = scores
        bias = self._bias(attn_mask, batch, sq, total, past, nonpad_kv_seqlen, work)
        bias5 = None if bias is None else _grouped(bias, hq, hk)
        logits = capped if bias5 is None else capped + bias5
        precision = np.promote_types(work, self.softmax_precision or work)
        probs = _softmax(np.asarray(logits, dtype=precision))
        if bias5 is not None:
            dead = np.isneginf(bias5.max(axis=-1, keepdims=True))
            if dead.any():
                probs = np.where(dead, probs.dtype.type(0), probs)
        probs = probs.astype(work, copy=False)
        y4 = np.matmul(probs.reshape(batch, hk, reps * sq, total), vp).reshape(batch, hq, sq, -1)
        y = y4 if Q.ndim == 4 else y4.transpose(0, 2, 1, 3).reshape(batch, sq, -1)
        mode = self.qk_matmul_output_mode
        qk = {0: capped, 1: capped, 2: logits, 3: probs}[mode]
        qk = np.broadcast_to(qk, (batch, hk, reps, sq, total)).reshape(batch, hq, sq, total)
        if ctx.grad_enabled:
            mask_shape = None if attn_mask is None else attn_mask.shape
            ctx.save(rows, kp, vp, probs, tanh, scale, mask_shape, past, Q.shape, K.shape,
                     V.shape, (Q.dtype, K.dtype, V.dtype,
                               None if attn_mask is None else attn_mask.dtype,
                               None if past_key is None else past_key.dtype))
        return (y.astype(Q.dtype, copy=False), present_k.astype(K.dtype, copy=False),
                present_v.astype(V.dtype, copy=False), qk.astype(Q.dtype, copy=False))

    # -- backward -------------------------------------------------------------------------
    def backward(self, ctx, gy, gpresent_k=None, gpresent_v=None, gqk=None):
        (rows, kp, vp, probs, tanh, scale, mask_shape, past, q_shape, k_shape, v_shape,
         dtypes) = ctx.saved
        need = tuple(ctx.needs_input_grad) + (False,) * 7
        batch, hk, reps, sq, total = probs.shape
        d = rows.shape[-1]
        work = rows.dtype
        mode = self.qk_matmul_output_mode
        gqk5 = None if gqk is None else np.asarray(gqk, dtype=work).reshape(probs.shape)
        gv_full = np.zeros(vp.shape, work)
        gprobs = None
        if gy is not None:
            gy4 = np.asarray(gy, dtype=work)
            if len(q_shape) == 3:
                gy4 = gy4.reshape(batch, sq, hk * reps, -1).transpose(0, 2, 1, 3)
            gy_rows = gy4.reshape(batch, hk, reps * sq, -1)
            probs_rows = probs.reshape(batch, hk, reps * sq, total)
            gv_full = np.matmul(probs_rows.swapaxes(-1, -2), gy_rows)
            gprobs = np.matmul(gy_rows, vp.swapaxes(-1, -2)).reshape(probs.shape)
        if gqk5 is not None and mode == 3:
            gprobs = gqk5 if gprobs is None else gprobs + gqk5
        glogits = None
        if gprobs is not None:
            glogits = probs * (gprobs - np.sum(gprobs * probs, axis=-1, keepdims=True))
        if gqk5 is not None and mode == 2:
            glogits = gqk5 if glogits is None else glogits + gqk5
        gcapped = glogits
        if gqk5 is not None and mode in (0, 1):
            gcapped = gqk5 if gcapped is None else gcapped + gqk5
        if gcapped is None:
            gscores = np.zeros(probs.shape, work)
        else:
            gscores = gcapped if tanh is None else gcapped * (1 - tanh * tanh)
        gscores = gscores * work.type(scale)
        gscores = gscores.reshape(batch, hk, reps * sq, total)
        gq_rows = np.matmul(gscores, kp)
        gk_full = np.matmul(gscores.swapaxes(-1, -2), rows)
        if gpresent_k is not None:
            gk_full = gk_full + gpresent_k
        if gpresent_v is not None:
            gv_full = gv_full + gpresent_v
        gq = gk = gv = gmask = gpast_k = gpast_v = None
        q_dtype, k_dtype, v_dtype, mask_dtype, past_dtype = dtypes
        if need[0]:
            gq4 = gq_rows.reshape(batch, hk * reps, sq, d)
            gq = gq4 if len(q_shape) == 4 else gq4.transpose(0, 2, 1, 3).reshape(q_shape)
            gq = gq.astype(q_dtype, copy=False)
        if need[1]:
            gk4 = gk_full[:, :, past:]
            gk = gk4 if len(k_shape) == 4 else gk4.transpose(0, 2, 1, 3).reshape(k_shape)
            gk = np.ascontiguousarray(gk, dtype=k_dtype)
        if need[2]:
            gv4 = gv_full[:, :, past:]
            gv = gv4 if len(v_shape) == 4 else gv4.transpose(0, 2, 1, 3).reshape(v_shape)
            gv = np.ascontiguousarray(gv, dtype=v_dtype)
        if need[3] and mask_shape is not None:
            full = np.zeros(probs.shape, work) if glogits is None else glogits
            full = full.reshape(batch, hk * reps, sq, total)
            padded = tuple(mask_shape[:-1]) + (total,)
            gmask = np.ascontiguousarray(unbroadcast(full, padded)[..., :mask_shape[-1]],
                                         dtype=mask_dtype)
        if need[4]:
            gpast_k = np.ascontiguousarray(gk_full[:, :, :past], dtype=past_dtype)
        if need[5]:
            gpast_v = np.ascontiguousarray(gv_full[:, :, :past], dtype=past_dtype)
        return (gq, gk, gv, gmask, gpast_k, gpast_v, None)[:len(ctx.needs_input_grad)]


def _and(a, b):
    return b if a is None else a & b


def _grouped(bias, hq, hk):
    """A bias broadcastable to (batch, q_heads, q, kv) as one broadcastable to
    (batch, kv_heads, repeats, q, kv), the layout of grouped-query scores."""
    bias = bias.reshape((1,) * (4 - bias.ndim) + bias.shape)
    b, h = bias.shape[:2]
    if h == 1:
        return bias[:, :, None]
    if h != hq:
        raise ShapeError(f"attention: the mask has {h} heads but there are {hq} query heads")
    return bias.reshape(b, hk, hq // hk, *bias.shape[2:])


def _softmax(x):
    """Softmax over the last axis; a row of -inf (no visible key) gives zeros, not NaN."""
    top = x.max(axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0)
    e = np.exp(x - top)
    total = e.sum(axis=-1, keepdims=True)
    return e / np.where(total == 0, 1, total)


class RotaryEmbedding(Op):
    """ONNX RotaryEmbedding (opset 23): rotate pairs of each head's first
    ``rotary_embedding_dim`` features by position-dependent angles.

    ``x`` is ``(batch, heads, seq, head_size)`` or ``(batch, seq, heads · head_size)`` (then
    ``num_heads`` splits it).  The pairs are the two halves of the rotated part, or with
    ``interleaved`` its even and odd features: ``(a, b) -> (a cos - b sin, a sin + b cos)``.
    ``cos_cache`` / ``sin_cache`` are ``(max_position, rot/2)`` read at ``position_ids``
    ``(batch, seq)``, or without position ids ``(batch, seq, rot/2)`` directly.

    Linear in ``x``; backward rotates the gradient back (the transpose: ``-sin``) and gives the
    caches their gradient too (summed into the positions read when ``position_ids`` is given).
    """

    type = "rotary_embedding"
    inputs = ("x", "cos_cache", "sin_cache", "position_ids?")
    no_grad_inputs = frozenset({"position_ids"})
    attrs = {"interleaved": Attr("bool", False, doc="pairs are (even, odd) features, not halves"),
             "rotary_embedding_dim": Attr("int", 0, doc="features rotated (0: the head size)"),
             "num_heads": Attr("int", 0, doc="heads of a 3-D input")}

    def check(self):
        if self.rotary_embedding_dim < 0 or self.rotary_embedding_dim % 2:
            raise AttrError("rotary_embedding: 'rotary_embedding_dim' must be even and >= 0, "
                            f"got {self.rotary_embedding_dim}", attr="rotary_embedding_dim")
        if self.num_heads < 0:
            raise AttrError(f"rotary_embedding: 'num_heads' must be >= 0, got {self.num_heads}",
                            attr="num_heads")

    def _dims(self, x):
        if x.ndim == 4:
            head = x.shape[3]
        elif x.ndim == 3:
            if not self.num_heads:
                raise ShapeError("rotary_embedding: a 3-D input (batch, seq, hidden) needs "
                                 "'num_heads'")
            if x.shape[2] is not None and x.shape[2] % self.num_heads:
                raise ShapeError(f"rotary_embedding: hidden size {x.shape[2]} does not split "
                                 f"into {self.num_heads} heads")
            head = None if x.shape[2] is None else x.shape[2] // self.num_heads
        else:
            raise ShapeError(f"rotary_embedding: input must be 3-D or 4-D, got "
                             f"{format_shape(x.shape)}")
        rot = self.rotary_embedding_dim or head
        if None not in (rot, head) and (rot > head or rot % 2):
            raise ShapeError(f"rotary_embedding: cannot rotate {rot} of {head} features per "
                             "head (an even number, at most the head size)")
        return head, rot

    def infer(self, x, cos_cache, sin_cache, position_ids=None):
        _, rot = self._dims(x)
        want = 2 if position_ids is not None else 3
        layout = "(max_position, rot/2)" if want == 2 else "(batch, seq, rot/2)"
        for name, c in (("cos_cache", cos_cache), ("sin_cache", sin_cache)):
            if c.ndim != want:
                raise ShapeError(f"rotary_embedding: {name} must be {layout}, got "
                                 f"{format_shape(c.shape)}")
            if None not in (rot, c.shape[-1]) and c.shape[-1] * 2 != rot:
                raise ShapeError(f"rotary_embedding: {name} has {c.shape[-1]} values per "
                                 f"position, but {rot} features are rotated (needs {rot // 2})")
        return (Spec(x.shape, x.dtype),)

    def _as_bshd(self, x):
        """The input as (batch, seq, heads, head_size)."""
        if x.ndim == 4:
            return x.transpose(0, 2, 1, 3)
        b, s, h = x.shape
        return x.reshape(b, s, self.num_heads, h // self.num_heads)

    def _back(self, y, shape):
        return (y.transpose(0, 2, 1, 3) if len(shape) == 4 else y.reshape(shape))

    def _pairs(self, rotated):
        if self.interleaved:
            return rotated[..., 0::2], rotated[..., 1::2]
        half = rotated.shape[-1] // 2
        return rotated[..., :half], rotated[..., half:]

    def _join(self, a, b, out):
        """Write the rotated pairs ``a``, ``b`` back into the first ``2 · len`` features."""
        half = a.shape[-1]
        if self.interleaved:
            out[..., 0:2 * half:2], out[..., 1:2 * half:2] = a, b
        else:
            out[..., :half], out[..., half:2 * half] = a, b

    def _caches(self, cos_cache, sin_cache, position_ids):
        if position_ids is not None:
            position_ids = np.asarray(position_ids)
            if position_ids.size and (position_ids.min() < 0
                                      or position_ids.max() >= cos_cache.shape[0]):
                raise ValueError(f"rotary_embedding: position_ids must be in [0, "
                                 f"{cos_cache.shape[0]}), got values from {position_ids.min()} "
                                 f"to {position_ids.max()}")
            cos_cache, sin_cache = cos_cache[position_ids], sin_cache[position_ids]
        return cos_cache[:, :, None], sin_cache[:, :, None]     # (batch, seq, 1, rot/2)

    def forward(self, ctx, x, cos_cache, sin_cache, position_ids=None):
        _, rot = self._dims(x)
        xb = self._as_bshd(x)
        cos, sin = self._caches(cos_cache, sin_cache, position_ids)
        a, b = self._pairs(xb[..., :rot])
        out = np.array(xb, dtype=np.result_type(x, cos_cache, sin_cache))
        self._join(cos * a - sin * b, sin * a + cos * b, out)
        if ctx.grad_enabled:
            ctx.save(a, b, cos, sin, rot, x.shape, position_ids, cos_cache.shape)
        return (np.ascontiguousarray(self._back(out, x.shape), dtype=x.dtype),)

    def backward(self, ctx, gy):
        a, b, cos, sin, rot, shape, position_ids, cache_shape = ctx.saved
        need_x, need_cos, need_sin = (tuple(ctx.needs_input_grad) + (False,) * 3)[:3]
        gb_ = self._as_bshd(gy)
        ga, gb = self._pairs(gb_[..., :rot])
        gx = gcos = gsin = None
        if need_x:
            out = np.array(gb_)
            self._join(cos * ga + sin * gb, -sin * ga + cos * gb, out)
            gx = np.ascontiguousarray(self._back(out, shape))
        if need_cos or need_sin:
            per_position = [(ga * a + gb * b).sum(axis=2), (-ga * b + gb * a).sum(axis=2)]
            grads = []
            for g in per_position:                   # (batch, seq, rot/2)
                if position_ids is not None:
                    full = np.zeros(cache_shape, g.dtype)
                    np.add.at(full, position_ids, g)
                    g = full
                grads.append(g)
            gcos = grads[0] if need_cos else None
            gsin = grads[1] if need_sin else None
        return (gx, gcos, gsin, None)[:len(ctx.needs_input_grad)]


class SwiGLU(Op):
    """ONNX SwiGLU (opset 28), the gated unit of LLaMA-style feed-forward blocks:
    ``y = a · sigmoid(alpha · a) · b`` for ``a`` and ``b`` of one shape (no broadcasting, as
    ONNX requires).  With ``s = sigmoid(alpha · a)``: ``da = dy · b · (s + alpha · a · s ·
    (1 - s))`` and ``db = dy · a · s``."""

    type = "swiglu"
    inputs = ("a", "b")
    rowwise = True
    attrs = {"alpha": Attr("float", 1.0, doc="slope inside the sigmoid of the Swish gate")}

    def infer(self, a, b):
        if a.ndim != b.ndim or any(None not in (x, y) and x != y
                                   for x, y in zip(a.shape, b.shape)):
            raise ShapeError(f"swiglu: 'a' and 'b' must have the same shape (no broadcasting), "
                             f"got {format_shape(a.shape)} and {format_shape(b.shape)}")
        if a.dtype != b.dtype:
            raise ShapeError(f"swiglu: 'a' and 'b' must have the same dtype, got {a.dtype} and "
                             f"{b.dtype}")
        return (Spec(a.shape, a.dtype),)

    def forward(self, ctx, a, b):
        s = (1.0 / (1.0 + np.exp(-self.alpha * a))).astype(a.dtype, copy=False)
        swish = a * s
        if ctx.grad_enabled:
            ctx.save(a, b, s, swish)
        return ((swish * b).astype(a.dtype, copy=False),)

    def backward(self, ctx, gy):
        a, b, s, swish = ctx.saved
        need_a, need_b = ctx.needs_input_grad
        ga = gy * b * (s + self.alpha * a * s * (1 - s)) if need_a else None
        gb = gy * swish if need_b else None
        return ga, gb


class LinearAttention(Op):
    """ONNX LinearAttention (opset 27): attention through a recurrent state matrix per key/value
    head, ``S (d_k, d_v)``, updated token by token (linear attention, gated linear attention,
    DeltaNet, Gated DeltaNet).

    For each step ``t``, with ``k``, ``v`` the token's key and value and ``q`` its query:
    ``gated``: ``S <- exp(g_t) · S`` (``decay`` per head or per key feature); ``delta``:
    ``v <- beta_t · (v - Sᵀ k)`` (the delta rule: write only what the state does not already
    predict); then ``S <- S + k vᵀ`` and the output is ``scale · Sᵀ q``.  ``update_rule``
    ``linear`` uses neither, ``gated_delta`` both.  Query heads share key/value heads in
    groups (``q_num_heads / kv_num_heads``, head ``h`` reading state ``h // group``).
    ``present_state`` is the final state; ``past_state`` the initial one (zeros by default).
    ``chunk_size`` is ONNX's tuning hint and does not change the result.

    The recurrence runs in a loop over time, each step vectorised over batch and heads.
    Backward runs through time in reverse from the states kept by forward, giving exact
    gradients for query, key, value, past_state, decay and beta.
    """

    type = "linear_attention"
    inputs = ("query", "key", "value", "past_state?", "decay?", "beta?")
    outputs = ("output", "present_state")
    attrs = {"q_num_heads": Attr("int", doc="query heads (hidden axis of query split)"),
             "kv_num_heads": Attr("int", doc="key/value heads"),
             "update_rule": Attr("str", "gated_delta",
                                 choices=("linear", "gated", "delta", "gated_delta"),
                                 doc="the state update (see the doc)"),
             "scale": Attr("float", 0.0, doc="output factor; 0: 1 / sqrt(d_k)"),
             "chunk_size": Attr("int", 64, doc="ONNX's tuning hint (no effect)")}

    def check(self):
        if self.q_num_heads < 1 or self.kv_num_heads < 1 or self.q_num_heads % self.kv_num_heads:
            raise AttrError(f"linear_attention: q_num_heads ({self.q_num_heads}) must be a "
                            f"positive multiple of kv_num_heads ({self.kv_num_heads})",
                            attr="q_num_heads")

    @property
    def _gated(self):
        return self.update_rule in ("gated", "gated_delta")

    @property
    def _delta(self):
        return self.update_rule in ("delta", "gated_delta")

    def infer(self, query, key, value, past_state=None, decay=None, beta=None):
        for name, v in (("query", query), ("key", key), ("value", value)):
            if v.ndim != 3:
                raise ShapeError(f"linear_attention: {name} must be (batch, seq, heads · size), "
                                 f"got {format_shape(v.shape)}")
        hq, hk = self.q_num_heads, self.kv_num_heads
        for name, v, heads in (("query", query, hq), ("key", key, hk), ("value", value, hk)):
            if v.shape[2] is not None and v.shape[2] % heads:
                raise ShapeError(f"linear_attention: {name}'s hidden size {v.shape[2]} does not "
                                 f"split into {heads} heads")
        dk = None if query.shape[2] is None else query.shape[2] // hq
        if None not in (dk, key.shape[2]) and key.shape[2] != dk * hk:
            raise ShapeError(f"linear_attention: key has hidden size {key.shape[2]}, not "
                             f"kv_num_heads · d_k = {hk * dk}")
        dv = None if value.shape[2] is None else value.shape[2] // hk
        rule = self.update_rule
        for name, v, wanted in (("decay", decay, self._gated), ("beta", beta, self._delta)):
            if wanted and v is None:
                raise ShapeError(f"linear_attention: update_rule '{rule}' needs the input "
                                 f"'{name}'")
            if not wanted and v is not None:
                raise ShapeError(f"linear_attention: update_rule '{rule}' takes no '{name}'; "
                                 "remove it or choose a rule that uses it")
        if decay is not None and (decay.ndim != 3 or decay.shape[2] not in (hk, _mul(hk, dk))):
            raise ShapeError(f"linear_attention: decay must be (batch, seq, kv_num_heads) or "
                             f"(batch, seq, kv_num_heads · d_k), got {format_shape(decay.shape)}")
        if beta is not None and (beta.ndim != 3 or beta.shape[2] not in (hk, 1)):
            raise ShapeError(f"linear_attention: beta must be (batch, seq, kv_num_heads) or "
                             f"(batch, seq, 1), got {format_shape(beta.shape)}")
        state = (query.shape[0], hk, dk, dv)
        if past_state is not None and (past_state.ndim != 4 or any(
                None not in (a, b) and a != b for a, b in zip(past_state.shape[1:], state[1:]))):
            raise ShapeError(f"linear_attention: past_state must be {format_shape(state)}, got "
                             f"{format_shape(past_state.shape)}")
        state_dtype = query.dtype if past_state is None else past_state.dtype
        return (Spec((query.shape[0], query.shape[1], _mul(hq, dv)), query.dtype),
                Spec(state, state_dtype))

    def _heads(self, x, heads, work):
        """(batch, seq, heads · size) as (seq, batch, heads, size), the loop's layout."""
        b, t, h = x.shape
        return np.asarray(x, dtype=work).reshape(b, t, heads, h // heads).transpose(1, 0, 2, 3)

    def forward(self, ctx, query, key, value, past_state=None, decay=None, beta=None):
        hq, hk = self.q_num_heads, self.kv_num_heads
        work = np.promote_types(query.dtype, np.float32)
        b, t, _ = query.shape
        group = hq // hk
        q = self._heads(query, hq, work)
        q = q.reshape(t, b, hk, group, -1)                           # (t, b, hk, g, dk)
        k, v = self._heads(key, hk, work), self._heads(value, hk, work)
        dk, dv = q.shape[-1], v.shape[-1]
        scale = self.scale or 1.0 / np.sqrt(dk)
        gate = None if decay is None else np.exp(self._heads(decay, hk, work))[..., None]
        weight = None if beta is None else self._heads(beta, beta.shape[2], work)
        state = (np.zeros((b, hk, dk, dv), work) if past_state is None
                 else np.array(past_state, dtype=work))
        before = np.empty((t, b, hk, dk, dv), work)                 # each step's input state
        out = np.empty((t, b, hk, group, dv), work)
        for i in range(t):
            before[i] = state
            s1 = state if gate is None else state * gate[i]
            u = v[i]
            if weight is not None:
                u = weight[i] * (u - np.einsum("bhdm,bhd->bhm", s1, k[i]))
            state = s1 + k[i][..., :, None] * u[..., None, :]
            out[i] = scale * np.einsum("bhgd,bhdm->bhgm", q[i], state)
        if ctx.grad_enabled:
            ctx.save(q, k, v, gate, weight, before, state, scale, query.dtype,
                     key.dtype, value.dtype,
                     None if past_state is None else past_state.dtype,
                     None if decay is None else decay.shape,
                     None if beta is None else beta.dtype)
        output = out.reshape(t, b, hq, dv).transpose(1, 0, 2, 3).reshape(b, t, hq * dv)
        state_dtype = query.dtype if past_state is None else past_state.dtype
        return output.astype(query.dtype), state.astype(state_dtype)

    def backward(self, ctx, gout, gpresent=None):
        (q, k, v, gate, weight, before, last, scale, q_dtype, k_dtype, v_dtype, past_dtype,
         decay_shape, beta_dtype) = ctx.saved
        need = tuple(ctx.needs_input_grad) + (False,) * 6
        t, b, hk, group, dk = q.shape
        dv = v.shape[-1]
        work = q.dtype
        go = None
        if gout is not None:
            go = np.asarray(gout, dtype=work).reshape(b, t, hk, group, dv).transpose(
                1, 0, 2, 3, 4)
        gq, gk, gv = np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)
        ggate = None if gate is None else np.zeros(gate.shape[:-1], work)
        gweight = None if weight is None else np.zeros_like(weight)
        gS = (np.zeros((b, hk, dk, dv), work) if gpresent is None
              else np.array(gpresent, dtype=work))
        for i in range(t - 1, -1, -1):
            s0 = before[i]
            s1 = s0 if gate is None else s0 * gate[i]
            u = v[i]
            if weight is not None:
                residual = v[i] - np.einsum("bhdm,bhd->bhm", s1, k[i])
                u = weight[i] * residual
            s2 = s1 + k[i][..., :, None] * u[..., None, :]
            if go is not None:
                gS = gS + scale * np.einsum("bhgd,bhgm->bhdm", q[i], go[i])
                gq[i] = scale * np.einsum("bhgm,bhdm->bhgd", go[i], s2)
            gk[i] = np.einsum("bhdm,bhm->bhd", gS, u)
            gu = np.einsum("bhdm,bhd->bhm", gS, k[i])
            gs1 = gS
            if weight is not None:
                gv[i] = weight[i] * gu
                gw = (gu * residual).sum(axis=-1, keepdims=True)
                gweight[i] = gw if weight.shape[2] == hk else gw.sum(axis=1, keepdims=True)
                gr = -weight[i] * gu
                gs1 = gS + k[i][..., :, None] * gr[..., None, :]
                gk[i] += np.einsum("bhdm,bhm->bhd", s1, gr)
            else:
                gv[i] = gu
            if gate is not None:
                ga = (gs1 * s0).sum(axis=-1)                   # (b, hk, dk)
                if gate.shape[-2] == 1:
                    ga = ga.sum(axis=-1, keepdims=True)
                ggate[i] = ga * gate[i][..., 0]
                gS = gs1 * gate[i]
            else:
                gS = gs1

        def back(g, dtype):                         # (t, b, heads, size) -> (b, t, heads·size)
            return g.transpose(1, 0, 2, 3).reshape(b, t, -1).astype(dtype)

        gquery = back(gq.reshape(t, b, hk * group, dk), q_dtype) if need[0] else None
        gkey = back(gk, k_dtype) if need[1] else None
        gvalue = back(gv, v_dtype) if need[2] else None
        gpast = gS.astype(past_dtype) if need[3] and past_dtype is not None else None
        gdecay = back(ggate, q_dtype).reshape(decay_shape) if need[4] and gate is not None \
            else None
        gbeta = back(gweight, beta_dtype) if need[5] and weight is not None else None
        return (gquery, gkey, gvalue, gpast, gdecay, gbeta)[:len(ctx.needs_input_grad)]
