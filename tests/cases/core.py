"""Cases for dense, matmul and the merge ops."""
from flowgrad.testing import Case

CASES = {
    "dense": [Case([(4, 3), (3, 5), (5,)], id="bias"),
              Case([(4, 3), (3, 5), None], id="no-bias"),
              Case([(2, 4, 3), (3, 5), (5,)], id="3d-x")],
    "matmul": [Case([(4, 3), (3, 5)], id="2d"),
               Case([(2, 4, 3), (3, 5)], id="batched-broadcast"),
               Case([(2, 1, 4, 3), (3, 3, 5)], id="broadcast-both"),
               Case([(3,), (3, 5)], id="vector-left"),
               Case([(4, 3), (3,)], id="vector-right")],
    "branch": [Case([(3, 4)], {"n": 2}), Case([(2, 3)], {"n": 3})],
    "concat": [Case([(2, 3), (2, 4)], {"axis": 1}),
               Case([(2, 3), (1, 3), (4, 3)], {"axis": 0}),
               Case([(2, 3, 2), (2, 3, 1)], {"axis": -1})],
    "sum": [Case([(2, 3), (2, 3)]), Case([(2, 3), (3,), (1, 3)], id="broadcast"),
            Case([(2, 3)], id="single")],
}
