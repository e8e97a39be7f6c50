"""Cases for linear algebra, on well-conditioned matrices (3·I plus a small perturbation)."""
import numpy as np

from flowgrad.testing import Case


def _well_conditioned(shape, sign=1.0):
    def make(rng):
        n = shape[-1]
        return sign * 3.0 * np.eye(n) + 0.3 * rng.standard_normal(shape)
    return make


CASES = {
    "inverse": [Case([_well_conditioned((3, 3))], id="single"),
                Case([_well_conditioned((2, 4, 4))], id="batched"),
                Case([_well_conditioned((2, 2, 3, 3))], id="batched2")],
    "logdet": [Case([_well_conditioned((3, 3))], id="single"),
               Case([_well_conditioned((2, 4, 4))], id="batched"),
               Case([_well_conditioned((3, 3), sign=-1.0)], id="negative-det")],
    "trace": [Case([(3, 3)], id="single"), Case([(2, 4, 4)], id="batched"),
              Case([(2, 3, 5)], id="rectangular")],
}
