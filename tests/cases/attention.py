"""Gradient cases for attention and rotary_embedding: every way ONNX's Attention combines heads,
masks, caches and outputs (qk_matmul_output in each mode is checked as an output too)."""
import numpy as np

from flowgrad.testing import Case, integers


def bool_mask(shape, p=0.7):
    """A bool mask with at least one visible key per row (no fully masked query)."""
    def make(rng):
        m = rng.random(shape) < p
        m[..., 0] = True
        return m
    return make


def finite_mask(shape):
    return lambda rng: rng.standard_normal(shape) * 0.5


def lengths(values):
    return lambda rng: np.asarray(values, dtype=np.int64)


CASES = {
    "attention": [
        Case([(2, 2, 3, 4), (2, 2, 5, 4), (2, 2, 5, 3)], id="4d"),
        Case([(2, 3, 8), (2, 4, 4), (2, 4, 6)], {"q_num_heads": 4, "kv_num_heads": 2},
             id="3d-gqa"),
        Case([(1, 4, 3, 2), (1, 1, 3, 2), (1, 1, 3, 2)], {"is_causal": True, "scale": 0.7},
             id="4d-mqa-causal-scaled"),
        Case([(2, 2, 3, 4), (2, 2, 5, 4), (2, 2, 5, 4), finite_mask((2, 1, 3, 4))],
             id="float-mask-short"),          # 4 of 5 keys: the fifth is masked
        Case([(2, 2, 3, 4), (2, 2, 4, 4), (2, 2, 4, 4), bool_mask((3, 4))],
             {"is_causal": True}, id="bool-mask-causal"),
        Case([(2, 2, 2, 4), (2, 2, 3, 4), (2, 2, 3, 4), finite_mask((2, 2, 5)),
              (2, 2, 2, 4), (2, 2, 2, 4)], {"softcap": 2.0}, id="past-softcap-mask3d"),
        Case([(1, 2, 2, 3), (1, 1, 2, 3), (1, 1, 2, 3), None, (1, 1, 3, 3), (1, 1, 3, 3)],
             {"is_causal": True, "qk_matmul_output_mode": 3}, id="past-causal-qk-softmax"),
        Case([(2, 2, 3, 4), (2, 2, 4, 4), (2, 2, 4, 4), finite_mask((2, 2, 3, 4))],
             {"qk_matmul_output_mode": 2, "softcap": 3.0}, id="qk-with-bias"),
        Case([(2, 2, 3, 4), (2, 2, 4, 4), (2, 2, 4, 4)],
             {"qk_matmul_output_mode": 1, "softcap": 1.5}, id="qk-softcapped"),
        Case([(2, 2, 2, 4), (2, 2, 5, 4), (2, 2, 5, 4), None, None, None, lengths([4, 3])],
             {"is_causal": True}, id="nonpad-causal"),
        Case([(1, 2, 4, 4), (1, 2, 4, 4), (1, 2, 4, 4)],
             {"left_window_size": 1, "right_window_size": 1, "softmax_precision": "float64"},
             id="window"),
    ],
    "rotary_embedding": [
        Case([(2, 2, 3, 4), (2, 3, 2), (2, 3, 2)], id="4d-no-positions"),
        Case([(2, 3, 8), (5, 2), (5, 2), integers((2, 3), 5)],
             {"num_heads": 2, "interleaved": True}, id="3d-interleaved-positions"),
        Case([(1, 2, 3, 6), (4, 2), (4, 2), lambda rng: np.array([[0, 2, 2]])],
             {"rotary_embedding_dim": 4}, id="partial-repeated-positions"),
        Case([(1, 2, 3, 6), (1, 3, 1), (1, 3, 1)],
             {"rotary_embedding_dim": 2, "interleaved": True}, id="partial-interleaved"),
    ],
}

CASES["swiglu"] = [Case([(3, 4), (3, 4)]), Case([(2, 3, 2), (2, 3, 2)], {"alpha": 1.702},
                                                id="alpha")]


def decays(shape):
    """Log-decays in [-1, 0): the state shrinks, as a trained gate keeps it."""
    return lambda rng: rng.uniform(-1.0, -0.05, shape)


def betas(shape):
    return lambda rng: rng.uniform(0.1, 1.0, shape)


CASES["linear_attention"] = [
    Case([(2, 3, 4), (2, 3, 4), (2, 3, 6)], {"q_num_heads": 2, "kv_num_heads": 2,
                                             "update_rule": "linear"}, id="linear"),
    Case([(2, 3, 8), (2, 3, 4), (2, 3, 4), (2, 2, 2, 2), decays((2, 3, 2))],
         {"q_num_heads": 4, "kv_num_heads": 2, "update_rule": "gated", "scale": 0.5},
         id="gated-gqa-past"),
    Case([(1, 4, 4), (1, 4, 4), (1, 4, 2), None, None, betas((1, 4, 2))],
         {"q_num_heads": 2, "kv_num_heads": 2, "update_rule": "delta"}, id="delta"),
    Case([(2, 3, 4), (2, 3, 4), (2, 3, 4), (2, 2, 2, 2), decays((2, 3, 4)), betas((2, 3, 1))],
         {"q_num_heads": 2, "kv_num_heads": 2}, id="gated-delta-per-key-decay-shared-beta"),
]
