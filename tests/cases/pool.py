"""Gradient cases for the pooling ops (inputs spread out so no window has a tie)."""
import numpy as np

from flowgrad.testing import Case, away_from


def distinct(shape):
    """Values with gaps of 0.1 between any two, so max-pool's arg-max is stable under FD."""
    return lambda rng: rng.permutation(np.prod(shape)).reshape(shape) * 0.1 - 1.0


_WINDOWS = [
    ((2, 2, 6, 7), {"kernel_shape": [2, 2], "strides": [2, 2]}, "2x2"),
    ((1, 2, 7, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1],
                    "ceil_mode": 1}, "ceil-pads"),
    ((1, 2, 7, 8), {"kernel_shape": [3, 2], "strides": [2, 3], "pads": [1, 0, 0, 1]},
     "asym-pads"),
    ((1, 2, 7, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_LOWER"},
     "same-lower"),
    ((1, 2, 9, 8), {"kernel_shape": [2, 2], "dilations": [2, 2], "strides": [1, 2],
                    "pads": [1, 1, 0, 0]}, "dilated"),
    ((2, 2, 9), {"kernel_shape": [3], "strides": [2], "pads": [1, 2], "ceil_mode": 1}, "1d"),
]

CASES = {
    "max_pool": [Case([distinct(s)], a, id=i) for s, a, i in _WINDOWS]
    + [Case([distinct(s)], {**a, "indices": True}, id=i + "-indices") for s, a, i in _WINDOWS]
    + [Case([distinct((1, 2, 7, 8))], {"kernel_shape": [3, 2], "strides": [2, 1],
                                       "indices": True, "storage_order": 1},
            id="storage-order")],
    "avg_pool": [Case([s], a, id=i) for s, a, i in _WINDOWS]
    + [Case([s], {**a, "count_include_pad": 1}, id=i + "-count-pad")
       for s, a, i in _WINDOWS[1:4]],
    "global_avg_pool": [Case([(2, 3, 4, 5)]), Case([(2, 3, 4)], id="1d")],
    "global_max_pool": [Case([distinct((2, 3, 4, 5))]), Case([distinct((2, 3, 4))], id="1d")],
}


def away_from_zero(shape):
    """Normal values kept 0.05 from 0, where |x|^p has a kink for p = 1."""
    return away_from(shape, (0.0,))


def unpool_indices(pooled, unpooled, seed=1):
    """Distinct flat indices into the (N, C, *unpooled) tensor, one per pooled value."""
    def make(rng):
        size = int(np.prod(unpooled))
        return np.random.default_rng(seed).choice(size, int(np.prod(pooled)),
                                                  replace=False).reshape(pooled)
    return make


CASES.update({
    "lp_pool": [Case([away_from_zero(s)], {**a, "p": p}, id=f"{i}-p{p}")
                for (s, a, i), p in zip(_WINDOWS, (2, 3, 1, 2, 3, 2))],
    "global_lp_pool": [Case([(2, 3, 4, 5)]), Case([away_from_zero((2, 3, 4))], {"p": 1},
                                                  id="1d-p1"),
                       Case([(2, 2, 3)], {"p": 3}, id="p3")],
    "max_unpool": [
        Case([(1, 2, 2, 3), unpool_indices((1, 2, 2, 3), (1, 2, 4, 6))],
             {"kernel_shape": [2, 2], "strides": [2, 2]}, id="2x2"),
        Case([(2, 1, 3), unpool_indices((2, 1, 3), (2, 1, 6))],
             {"kernel_shape": [3], "strides": [2], "pads": [1, 0], "output_shape": [2, 1, 8]},
             id="1d-output-shape"),
        Case([(1, 1, 2, 2), lambda rng: np.array([[[[0, 3], [3, 5]]]])],
             {"kernel_shape": [2, 2], "strides": [1, 1]}, id="repeated-index"),
    ],
})
