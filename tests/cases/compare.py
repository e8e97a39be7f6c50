"""Cases for flowgrad/ops/compare.py (forward-only: config and shape inference are checked)."""
import numpy as np

from flowgrad.testing import Case, integers


def _bool(shape):
    return lambda rng: rng.random(shape) < 0.5


CASES = {
    **{t: [Case([(3, 4), (4,)], id="broadcast"),
           Case([integers((2, 3), 3), integers((2, 3), 3)], id="int")]
       for t in ("equal", "less", "less_or_equal", "greater", "greater_or_equal")},
    **{t: [Case([_bool((3, 4)), _bool((1, 4))])] for t in ("and", "or", "xor")},
    "not": [Case([_bool((3, 4))])],
}
