"""Cases for the losses: both reductions, integer and soft targets, logits and probabilities."""
import numpy as np

from flowgrad.testing import Case, integers


def _probs(shape, low=0.05, high=0.95):
    return lambda rng: rng.uniform(low, high, size=shape)


def _ignoring(shape, classes, ignore):
    """Class indices in [0, classes) with a third of the elements set to ``ignore``."""
    def make(rng):
        t = rng.integers(0, classes, size=shape)
        t[rng.uniform(size=shape) < 0.33] = ignore
        return t.astype(np.int64)
    return make


CASES = {
    "softmax_cross_entropy": [
        Case([(4, 5), integers((4,), 5)], id="int-labels"),
        Case([(4, 5), lambda rng: rng.dirichlet(np.ones(5), size=4)], id="soft-targets"),
        Case([(3, 4), integers((3,), 4)], {"reduction": "sum"}, id="sum")],
    "mse": [Case([(4, 3), (4, 3)], id="mean"),
            Case([(4, 3), (4, 3)], {"reduction": "half_sum"}, id="half_sum"),
            Case([(4, 3), (3,)], id="broadcast-target"),
            Case([(4, 1), (4, 3)], {"reduction": "half_sum"}, id="broadcast-y")],
    "binary_cross_entropy": [
        Case([_probs((4, 3)), _probs((4, 3), 0.0, 1.0)], id="probs-soft"),
        Case([_probs((4, 3)), integers((4, 3), 2)], {"reduction": "sum"}, id="probs-hard-sum"),
        Case([(4, 3), _probs((4, 3), 0.0, 1.0)], {"from_logits": True}, id="logits"),
        Case([lambda rng: rng.uniform(-30, 30, size=(6,)), _probs((6,), 0.0, 1.0)],
             {"from_logits": True, "reduction": "sum"}, id="logits-wide"),
        Case([_probs((4, 3)), _probs((3,), 0.0, 1.0)], id="broadcast-target")],
    "nll_loss": [
        Case([(4, 5), integers((4,), 5), None], id="mean"),
        Case([(3, 4, 2, 2), _ignoring((3, 2, 2), 4, -1), _probs((4,), 0.5, 2.0)],
             {"ignore_index": -1}, id="weighted-ignore-mean"),
        Case([(3, 4, 5), _ignoring((3, 5), 4, 2), _probs((4,), 0.5, 2.0)],
             {"ignore_index": 2, "reduction": "sum"}, id="ignore-in-range-sum"),
        Case([(2, 3, 4), integers((2, 4), 3), _probs((3,), 0.5, 2.0)], {"reduction": "none"},
             id="none")],
}
