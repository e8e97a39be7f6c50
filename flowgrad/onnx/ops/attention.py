"""Attention (flowgrad.ops.attention): ONNX's Attention (opsets 23, 24, 25), RotaryEmbedding
(23), LinearAttention (27) and SwiGLU (28), each one flowgrad op with the node's inputs,
outputs and attributes; and the preview domain's FlexAttention, written with flowgrad ops
(its score and probability mods are ONNX graphs, inlined)."""
from __future__ import annotations

import numpy as np

from ..builder import ImportProblem
from ..subgraph import InlineScope
from ..translations import Translations

T = Translations("attention")

#: ONNX element types a softmax_precision may name, as numpy dtypes (bfloat16, which numpy
#: lacks, computes in float32: at least as precise)
_PRECISION = {1: "float32", 10: "float16", 11: "float64", 16: "float32"}
_PRECISION_CODE = {"float32": 1, "float16": 10, "float64": 11}


def _attention(b, a, ins, inputs: int, window: bool):
    attrs = {"is_causal": a.bool("is_causal", False),
             "softcap": a.float("softcap", 0.0),
             "qk_matmul_output_mode": a.int("qk_matmul_output_mode", 0)}
    for name in ("q_num_heads", "kv_num_heads"):
        if name in a:
            attrs[name] = a.int(name)
    if "scale" in a:
        attrs["scale"] = a.float("scale")
    if "softmax_precision" in a:
        code = a.int("softmax_precision")
        if code not in _PRECISION:
            raise ImportProblem(f"Attention: softmax_precision {code} is not a float type "
                                f"(use one of {sorted(_PRECISION)}: float32, float16, double, "
                                "bfloat16)")
        attrs["softmax_precision"] = _PRECISION[code]
    if window:
        attrs["left_window_size"] = a.int("left_window_size", -1)
        attrs["right_window_size"] = a.int("right_window_size", -1)
    q = ins.need(0, "Q")
    if window and q.ndim == 4 and ("q_num_heads" in a or "kv_num_heads" in a):
        raise ImportProblem("Attention (opset 25): q_num_heads and kv_num_heads apply to 3-D "
                            "inputs only; remove them for 4-D Q, K and V")
    values = [q, ins.need(1, "K"), ins.need(2, "V")] + [ins.opt(i) for i in range(3, inputs)]
    return b.final("attention", values, **attrs)


@T.imports("Attention", since=23)
def attention_23(b, a, ins):
    """Q, K, V, attn_mask, past_key, past_value; outputs Y, present_key, present_value,
    qk_matmul_output."""
    return _attention(b, a, ins, 6, window=False)


@T.imports("Attention", since=24)
def attention_24(b, a, ins):
    """Opset 24 adds the input nonpad_kv_seqlen (an external, padded key/value cache)."""
    return _attention(b, a, ins, 7, window=False)


@T.imports("Attention", since=25)
def attention_25(b, a, ins):
    """Opset 25 adds the sliding window (left_window_size, right_window_size)."""
    return _attention(b, a, ins, 7, window=True)


@T.exports("attention")
def _attention_export(c):
    op = c.op
    attrs = {"is_causal": int(op.is_causal), "qk_matmul_output_mode": op.qk_matmul_output_mode}
    if op.softcap:
        attrs["softcap"] = op.softcap
    if op.scale is not None:
        attrs["scale"] = op.scale
    for name in ("q_num_heads", "kv_num_heads"):
        if getattr(op, name) is not None:
            attrs[name] = getattr(op, name)
    if op.softmax_precision is not None:
        attrs["softmax_precision"] = _PRECISION_CODE[op.softmax_precision]
    opset = 23
    if len(c.ins) > 6 and c.ins[6]:
        opset = 24
    if op.left_window_size >= 0 or op.right_window_size >= 0:
        opset = 25
        attrs["left_window_size"] = op.left_window_size
        attrs["right_window_size"] = op.right_window_size
    c.node("Attention", c.ins, c.outs, opset=opset, **attrs)


@T.imports("RotaryEmbedding", since=23)
def rotary_embedding(b, a, ins):
    values = [ins.need(0, "X"), ins.need(1, "cos_cache"), ins.need(2, "sin_cache"), ins.opt(3)]
    return b.final("rotary_embedding", values, interleaved=a.bool("interleaved", False),
                   rotary_embedding_dim=a.int("rotary_embedding_dim", 0),
                   num_heads=a.int("num_heads", 0))


@T.exports("rotary_embedding")
def _rotary_embedding_export(c):
    c.node("RotaryEmbedding", c.ins, c.outs, opset=23, interleaved=int(c.op.interleaved),
           rotary_embedding_dim=c.op.rotary_embedding_dim, num_heads=c.op.num_heads)


@T.imports("SwiGLU", since=28)
def swiglu(b, a, ins):
    return b.final("swiglu", [ins.need(0, "A"), ins.need(1, "B")], alpha=a.float("alpha", 1.0))


@T.exports("swiglu")
def _swiglu_export(c):
    c.node("SwiGLU", c.ins, c.outs, opset=28, alpha=c.op.alpha)


@T.imports("LinearAttention", since=27)
def linear_attention(b, a, ins):
    values = [ins.need(0, "query"), ins.need(1, "key"), ins.need(2, "value")] + [
        ins.opt(i) for i in range(3, 6)]
    for name in ("q_num_heads", "kv_num_heads"):
        if name not in a:
            raise ImportProblem(f"LinearAttention needs the attribute '{name}'")
    return b.final("linear_attention", values, q_num_heads=a.int("q_num_heads"),
                   kv_num_heads=a.int("kv_num_heads"),
                   update_rule=a.string("update_rule", "gated_delta"),
                   scale=a.float("scale", 0.0), chunk_size=a.int("chunk_size", 64))


@T.exports("linear_attention")
def _linear_attention_export(c):
    op = c.op
    c.node("LinearAttention", c.ins, c.outs, opset=27, q_num_heads=op.q_num_heads,
           kv_num_heads=op.kv_num_heads, update_rule=op.update_rule, scale=op.scale,
           chunk_size=op.chunk_size)


def _inline_mod(b, graph, value, what: str):
    """Translate a FlexAttention ``score_mod`` / ``prob_mod`` body in place, its one input
    bound to ``value``; returns the Value of its one output.  Its nodes become ordinary
    flowgrad ops of the enclosing graph (so they differentiate and fold like any other), and
    it may read the enclosing graph's values."""
    from ..subgraph import translate
    from ..tensors import to_array
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise ImportProblem(f"FlexAttention's {what} must take one input and give one output, "
                            f"not {len(graph.input)} and {len(graph.output)}")
    node = b.current
    scope = b.values
    local = InlineScope(scope)
    local[graph.input[0].name] = value
    for init in graph.initializer:
        local[init.name] = b.const(to_array(init))
    b.values = local
    try:
        problems = translate(b, graph.node, local)
    finally:
        b.values = scope
        b.begin(node)
    if problems:
        raise ImportProblem(f"in its {what}: " + "; ".join(problems))
    out = graph.output[0].name
    if out not in local:
        raise ImportProblem(f"its {what} declares output '{out}', which nothing computes")
    return local[out]



@T.imports("FlexAttention", domain="ai.onnx.preview")
def flex_attention(b, a, ins):
    """FlexAttention (preview domain): ``softmax(score_mod(scale · Q Kᵀ)) V`` with an optional
    ``prob_mod`` on the probabilities, the two mods being ONNX graphs over the whole score
    tensor.  Written with flowgrad ops (matmul, softmax...) and the mods' nodes inlined, so
    the whole node differentiates; grouped heads broadcast as in ``attention``.  Scores and
    probabilities are computed in ``softmax_precision`` (default: float32 for float16
    inputs), as ONNX's reference does."""
    q, k, v = ins.need(0, "Q"), ins.need(1, "K"), ins.need(2, "V")
    if not q.ndim == k.ndim == v.ndim == 4:
        raise ImportProblem("FlexAttention needs 4-D Q, K and V (batch, heads, seq, size), not "
                            f"{q.ndim}-, {k.ndim}- and {v.ndim}-d")
    hq, hk, head = q.shape[1], k.shape[1], q.shape[3]
    if None in (hq, hk, head) or hq % hk:
        raise ImportProblem(f"FlexAttention needs known head counts with the query heads ({hq}) "
                            f"a multiple of the key/value heads ({hk})")
    scale = a.float("scale", 1.0 / np.sqrt(head))
    precision = (np.dtype(_PRECISION[a.int("softmax_precision")]) if "softmax_precision" in a
                 else np.promote_types(q.dtype, np.float32))
    root = b.const(np.asarray(np.sqrt(np.float32(scale)), q.dtype))
    qs = b.op("mul", [q, root])[0]
    ks = b.op("mul", [k, root])[0]
    reps = hq // hk
    keys, width = k.shape[2], v.shape[3]
    if None in (keys, width):
        raise ImportProblem("FlexAttention needs the key length and value size known at load "
                            "time")
    qs = b.op("reshape", [qs], shape=[0, hk, reps, -1, head])[0]
    kt = b.op("transpose", [b.op("unsqueeze", [ks], axes=[2])[0]], perm=[0, 1, 2, 4, 3])[0]
    scores = b.op("matmul", [qs, kt])[0]
    scores = b.op("reshape", [scores], shape=[0, hq, -1, keys])[0]
    if scores.dtype != precision:
        scores = b.op("cast", [scores], to=precision.name)[0]
    if "score_mod" in a:
        scores = _inline_mod(b, _graph(b, "score_mod"), scores, "score_mod")
    probs = b.op("softmax", [scores], axis=-1)[0]
    if "prob_mod" in a:
        probs = _inline_mod(b, _graph(b, "prob_mod"), probs, "prob_mod")
    probs = b.op("reshape", [probs], shape=[0, hk, reps, -1, keys])[0]
    vs = b.op("unsqueeze", [v], axes=[2])[0]
    if vs.dtype != precision:
        vs = b.op("cast", [vs], to=precision.name)[0]
    out = b.op("matmul", [probs, vs])[0]
    out = b.op("reshape", [out], shape=[0, hq, -1, width])[0]
    if out.dtype == v.dtype:
        return b.final("identity", [out])
    return b.final("cast", [out], to=v.dtype.name)


def _graph(b, name):
    from ..subgraph import graph_attr
    return graph_attr(b.current, name)
