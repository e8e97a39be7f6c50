"""Cases for flowgrad/ops/indexing.py: gather, slice, split, where, topk, argmax, one_hot..."""
import numpy as np

from flowgrad.testing import Case, integers

I64 = np.int64


def _bool(shape):
    return lambda rng: rng.random(shape) < 0.5


CASES = {
    "gather": [Case([(5, 3), integers((4,), 5)], {"axis": 0}, id="axis0-repeats"),
               Case([(2, 5, 3), np.array([[0, -1], [4, 0]], I64)], {"axis": 1}, id="2d-neg"),
               Case([(3, 4), np.array(2, I64)], {"axis": -1}, id="scalar-index")],
    "gather_elements": [Case([(3, 4), integers((3, 6), 4)], {"axis": 1}, id="axis1"),
                        Case([(3, 4), np.array([[0, -1, 2, 0]], I64)], {"axis": 0}, id="neg")],
    "slice": [Case([(6, 5), None, None, None, None], {"starts": [1, -4], "ends": [5, 100], "axes": [0, 1]}, id="attrs"),
              Case([(6, 5), None, None, None, None], {"starts": [-1], "ends": [-100], "axes": [1], "steps": [-2]},
                   id="neg-step"),
              Case([(4, 6, 3), np.array([0, 1], I64), np.array([3, 6], I64), None,
                    np.array([2, 2], I64)], id="ports"),
              Case([(4, 6, 3), np.array([2], I64), np.array([0], I64),
                    np.array([-2], I64), np.array([-1], I64)], id="ports-axes")],
    "split": [Case([(6, 4), None], {"axis": 0, "parts": 3}, id="equal"),
              Case([(7, 3), None], {"axis": 0, "parts": 3}, id="uneven"),
              Case([(2, 5), None], {"axis": 1, "split": [2, 0, 3]}, id="sizes-zero"),
              Case([(2, 5), np.array([1, 4], I64)], {"axis": -1, "parts": 2}, id="port")],
    "where": [Case([_bool((3, 4)), (3, 4), (3, 4)], id="same"),
              Case([_bool((2, 1, 4)), (3, 1), (2, 3, 4)], id="broadcast")],
    "topk": [Case([(4, 6), None], {"k": 3}, id="largest"),
             Case([(5, 3), None], {"k": 2, "axis": 0, "largest": False}, id="smallest-axis0"),
             Case([(3, 5), np.array([4], I64)], id="k-port")],
    "argmax": [Case([(4, 5)], {"axis": 1}), Case([(4, 5)], {"keepdims": False}, id="no-keep")],
    "argmin": [Case([(4, 5)], {"axis": -1, "select_last_index": True}, id="last")],
    "one_hot": [Case([np.array([[1, -1], [0, 7]], I64), np.array(4, I64), (2,)], id="values"),
                Case([integers((3,), 3), np.array([3], I64), (2,)], {"axis": 0}, id="axis0")],
}
