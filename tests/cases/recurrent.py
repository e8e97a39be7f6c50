"""Gradient cases for lstm, gru and rnn: backward through time over a grid of attributes.

Every case has a padded example (``sequence_lens``) or an initial state or both, so the masks
and the state gradients are checked along with directions, layouts, clip, peepholes,
``input_forget``, ``linear_before_reset`` and the alternative activations (with alpha/beta).
Sizes are tiny (T=3, N=2, I=3, H=2): finite differences cost two forwards per element.
"""
import numpy as np

from flowgrad.testing import Case

T, N, I, H = 3, 2, 3, 2
LENS = np.array([3, 2], dtype=np.int32)       # the second example is one step short


def _inputs(gates: int, direction: str = "forward", layout: int = 0, lens: bool = True,
            h0: bool = True, lstm: bool = False, peepholes: bool = False) -> list:
    D = 2 if direction == "bidirectional" else 1
    state = (D, N, H) if layout == 0 else (N, D, H)
    ins = [(T, N, I) if layout == 0 else (N, T, I), (D, gates * H, I), (D, gates * H, H),
           (D, 2 * gates * H), LENS if lens else None, state if h0 else None]
    if lstm:
        ins += [state if h0 else None, (D, 3 * H) if peepholes else None]
    return ins


def _case(gates, attrs, lstm=False, **kw):
    attrs = dict(attrs)
    label = "-".join(f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}"
                     for k, v in attrs.items()) or "defaults"
    label += "".join(f"-{k}={v}" for k, v in kw.items())
    return Case(_inputs(gates, attrs.get("direction", "forward"), attrs.get("layout", 0),
                        lstm=lstm, **kw), attrs, id=label)


CASES = {
    "rnn": [
        _case(1, {}),
        _case(1, {"direction": "reverse", "layout": 1}),
        _case(1, {"direction": "bidirectional", "activations": ["Relu", "Affine"],
                  "activation_alpha": [0.7], "activation_beta": [0.2]}, h0=False),
        _case(1, {"activations": ["LeakyRelu"], "activation_alpha": [0.2], "clip": 1.5},
              lens=False),
    ],
    "gru": [
        _case(3, {}),
        _case(3, {"linear_before_reset": True, "direction": "reverse"}),
        _case(3, {"direction": "bidirectional", "layout": 1, "linear_before_reset": True,
                  "clip": 1.0}),
        _case(3, {"activations": ["HardSigmoid", "Softsign"], "activation_alpha": [0.3],
                  "activation_beta": [0.4]}, h0=False),
    ],
    "lstm": [
        _case(4, {}, lstm=True),
        _case(4, {"direction": "reverse"}, lstm=True, peepholes=True),
        _case(4, {"direction": "bidirectional", "layout": 1}, lstm=True, peepholes=True),
        _case(4, {"input_forget": True, "clip": 1.2}, lstm=True, peepholes=True, lens=False),
        _case(4, {"activations": ["Sigmoid", "Elu", "ScaledTanh"],
                  "activation_alpha": [0.8, 1.2], "activation_beta": [0.6]}, lstm=True,
              h0=False),
        _case(4, {"activations": ["Softplus", "Tanh", "ThresholdedRelu"],
                  "activation_alpha": [0.1]}, lstm=True),
    ],
}
