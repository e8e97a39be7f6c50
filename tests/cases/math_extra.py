"""Cases for flowgrad/ops/math_extra.py."""
import numpy as np

from flowgrad.testing import Case, integers, positive


def _between_integers(shape, offset=0.0):
    """Values at least 0.1 from every integer (+ offset): where floor/ceil/round are flat."""
    return lambda rng: rng.integers(-3, 3, size=shape) + offset + rng.uniform(0.1, 0.9, shape)


def _mod_dividend(b, fmod):
    """a = b·(k + f) with f in [0.2, 0.8]: away from the jumps of mod (and of fmod)."""
    b = np.asarray(b)

    def make(rng):
        k = rng.integers(-3, 3, size=(4,) + b.shape)
        return b * (k + rng.uniform(0.2, 0.8, size=k.shape))
    return make


B = np.array([1.5, -2.0, 3.0])

CASES = {
    "floor": [Case([_between_integers((3, 4))])],
    "ceil": [Case([_between_integers((3, 4))])],
    "round": [Case([_between_integers((3, 4), offset=0.5)])],
    "sign": [Case([_between_integers((3, 4), offset=0.5)])],
    "sin": [Case([(3, 4)])],
    "cos": [Case([(3, 4)])],
    "mod": [Case([_mod_dividend(B, False), B], id="mod"),
            Case([_mod_dividend(B, True), B], {"fmod": True}, id="fmod")],
    "max": [Case([(3, 4), (4,), (1, 4)], id="three-broadcast"), Case([(3,)], id="single")],
    "min": [Case([(3, 4), (3, 1)], id="broadcast"), Case([(2, 3), (2, 3), (2, 3)], id="three")],
    "mean": [Case([(3, 4), (4,)], id="broadcast"), Case([(2, 3)], id="single")],
    "tan": [Case([lambda rng: rng.uniform(-1.2, 1.2, (3, 4))])],
    "asin": [Case([lambda rng: rng.uniform(-0.9, 0.9, (3, 4))])],
    "acos": [Case([lambda rng: rng.uniform(-0.9, 0.9, (3, 4))])],
    "atan": [Case([(3, 4)])],
    "asinh": [Case([(3, 4)])],
    "acosh": [Case([positive((3, 4), 1.1, 4.0)])],
    "atanh": [Case([lambda rng: rng.uniform(-0.9, 0.9, (3, 4))])],
    # forward-only: these check the config, shape rule and dtypes
    "is_nan": [Case([np.array([[1.0, np.nan], [np.inf, -2.0]])])],
    "is_inf": [Case([np.array([1.0, np.inf, -np.inf, np.nan])], id="both"),
               Case([np.array([1.0, np.inf, -np.inf])], {"detect_negative": False}, id="pos")],
    "bitwise_and": [Case([integers((3, 4), 100), integers((4,), 100)], id="broadcast")],
    "bitwise_or": [Case([integers((3, 4), 100), integers((3, 4), 100)])],
    "bitwise_xor": [Case([integers((2, 3), 100), integers((1, 3), 100)])],
    "bitwise_not": [Case([integers((2, 3), 100, -100)])],
    "bit_shift": [Case([integers((2, 3), 100), integers((2, 3), 9)], {"direction": "LEFT"},
                       id="left"),
                  Case([integers((2, 3), 100, -100), integers((3,), 70, -3)],
                       {"direction": "RIGHT"}, id="right-out-of-range")],
    "bit_cast": [Case([np.array([[1.0, -2.5]], np.float32)], {"to": "int32"})],
    "tfidf_vectorizer": [Case([integers((2, 9), 5)], {
        "mode": "TFIDF", "min_gram_length": 1, "max_gram_length": 2, "max_skip_count": 1,
        "ngram_counts": [0, 3], "ngram_indexes": [0, 1, 2, 3, 4], "pool": [1, 2, 3, 1, 2, 4, 4],
        "weights": [1.0, 0.5, 2.0, 1.5, 3.0]})],
}
