"""Cases for the reductions: all axes, some axes, negative axes, keepdims."""
from flowgrad.testing import Case, positive


def _distinct(shape):
    """A permutation of well-separated values: max/min have no ties, so they are smooth."""
    def make(rng):
        size = 1
        for d in shape:
            size *= d
        return rng.permutation(size).reshape(shape) * 0.5 + rng.uniform(0, 0.01, size=shape)
    return make


def _with_zeros(rng):
    """Rows with no zero, one zero and two zeros: the product's gradient is exact at zeros
    (the product is linear in each factor), so finite differences check all three cases."""
    x = rng.uniform(0.5, 2.0, size=(3, 4))
    x[1, 2] = 0.0
    x[2, 0] = x[2, 3] = 0.0
    return x


_AXES = [({}, "all"), ({"axes": [1]}, "axis1"), ({"axes": [0, -1], "keepdims": True}, "keep"),
         ({"keepdims": True}, "all-keep")]

CASES = {
    "reduce_sum": [Case([(2, 3, 4)], a, id=i) for a, i in _AXES],
    "reduce_mean": [Case([(2, 3, 4)], a, id=i) for a, i in _AXES],
    "reduce_max": [Case([_distinct((2, 3, 4))], a, id=i) for a, i in _AXES],
    "reduce_min": [Case([_distinct((2, 3, 4))], a, id=i) for a, i in _AXES],
    "reduce_l2": [Case([positive((2, 3, 4))], a, id=i) for a, i in _AXES]
                 + [Case([(3, 5)], {"axes": [1]}, id="signed")],
    "reduce_prod": [Case([(2, 3, 4)], a, id=i) for a, i in _AXES]
                   + [Case([_with_zeros], {"axes": [1]}, id="zeros")],
}
