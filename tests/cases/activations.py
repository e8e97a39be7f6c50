"""Cases for the activations: kinks avoided with ``away_from``, several attribute values."""
import numpy as np

from flowgrad.testing import Case, away_from


def _wide(shape, scale=4.0):
    """Values spread over [-scale, scale] (exercises both regimes of saturating functions)."""
    return lambda rng: rng.uniform(-scale, scale, size=shape)


CASES = {
    "relu": [Case([away_from((3, 4))])],
    "leaky_relu": [Case([away_from((3, 4))]),
                   Case([away_from((3, 4))], {"alpha": 0.3}, id="alpha0.3")],
    "elu": [Case([away_from((3, 4))]),
            Case([away_from((3, 4))], {"alpha": 0.5}, id="alpha0.5")],
    "selu": [Case([away_from((3, 4))]),
             Case([away_from((3, 4))], {"alpha": 2.0, "gamma": 1.5}, id="custom")],
    "sigmoid": [Case([(3, 4)]), Case([_wide((10,), 8.0)], id="wide")],
    "tanh": [Case([(3, 4)])],
    "softplus": [Case([(3, 4)]), Case([_wide((10,), 20.0)], id="wide")],
    "softsign": [Case([(3, 4)])],
    "step": [Case([away_from((3, 4))])],
    "gelu": [Case([_wide((3, 5))]),
             Case([_wide((3, 5))], {"approximate": "tanh"}, id="tanh")],
    "erf": [Case([_wide((4, 5), 3.5)], id="both-branches"),
            Case([np.array([-6.0, -3.0, -2.9, -1e-3, 0.0, 1e-3, 2.9, 3.0, 6.0])], id="edges")],
    "clip": [Case([away_from((3, 4), (-0.5, 0.5))], {"min": -0.5, "max": 0.5}),
             Case([away_from((3, 4))], {"min": 0.0}, id="lower-only"),
             Case([away_from((3, 4), (1.0,))], {"max": 1.0}, id="upper-only")],
    "hard_sigmoid": [Case([away_from((3, 4), (-2.5, 2.5))]),
                     Case([away_from((3, 4), (-1.0, 1.0))], {"alpha": 0.5, "beta": 0.5},
                          id="alpha0.5")],
    "hard_swish": [Case([lambda rng: away_from((4, 5), (-3.0, 3.0))(rng) * 3])],
    "prelu": [Case([away_from((4, 3)), (3,)], id="per-channel"),
              Case([away_from((2, 3, 4)), (3, 1)], id="channel-first"),
              Case([away_from((3, 4)), ()], id="shared")],
    "softmax": [Case([(3, 5)]), Case([(2, 3, 4)], {"axis": 1}, id="axis1")],
    "log_softmax": [Case([(3, 5)]), Case([(2, 3, 4)], {"axis": 0}, id="axis0")],
}
