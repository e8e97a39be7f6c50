"""Cases for linear algebra, on well-conditioned matrices (3·I plus a small perturbation)."""
import numpy as np

from flowgrad.testing import Case


def _well_conditioned(shape, sign=1.0):
    def make(rng):
        n = shape[-1]
        return sign * 3.0 * np.eye(n) + 0.3 * rng.standard_normal(shape)
    return make


def _rank_deficient(shape, drop):
    """Singular matrices of rank n - ``drop``: det is 0 there but its gradient (the cofactor
    matrix) is not, for rank n - 1."""
    def make(rng):
        n = shape[-1]
        left = rng.standard_normal(shape[:-1] + (n - drop,))
        right = rng.standard_normal(shape[:-2] + (n - drop, n))
        return left @ right
    return make


CASES = {
    "inverse": [Case([_well_conditioned((3, 3))], id="single"),
                Case([_well_conditioned((2, 4, 4))], id="batched"),
                Case([_well_conditioned((2, 2, 3, 3))], id="batched2")],
    "logdet": [Case([_well_conditioned((3, 3))], id="single"),
               Case([_well_conditioned((2, 4, 4))], id="batched"),
               Case([_well_conditioned((3, 3), sign=-1.0)], id="negative-det")],
    "det": [Case([_well_conditioned((3, 3))], id="single"),
            Case([_well_conditioned((2, 4, 4), sign=-1.0)], id="batched"),
            Case([(1, 1)], id="1x1"),
            Case([_rank_deficient((2, 3, 3), 1)], id="rank-n-1"),
            Case([_rank_deficient((3, 3), 2)], id="rank-n-2")],
    "trace": [Case([(3, 3)], id="single"), Case([(2, 4, 4)], id="batched"),
              Case([(2, 3, 5)], id="rectangular")],
}
