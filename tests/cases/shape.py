"""Cases for the shape family (backward is the inverse layout change).

Reshape's run-time ``shape`` input has no case here: these checks declare every input's leading
axis unknown, which for a shape vector hides the output rank; tests/test_ops_core.py covers it.
"""
from flowgrad.testing import Case

CASES = {
    "transpose": [Case([(2, 3, 4)], id="reverse"),
                  Case([(2, 3, 4)], {"perm": [0, 2, 1]}, id="perm021"),
                  Case([(2, 3, 4, 5)], {"perm": [0, -1, 1, 2]}, id="negative")],
    "reshape": [Case([(2, 3, 4), None], {"shape": [0, -1]}, id="keep-batch"),
                Case([(2, 12), None], {"shape": [0, 3, 4]}, id="split"),
                Case([(2, 3, 4), None], {"shape": [-1, 2, 2, 3]}, id="infer-batch")],
    "flatten": [Case([(2, 3, 4)]), Case([(2, 3, 4)], {"axis": 2}, id="axis2"),
                Case([(2, 3, 4)], {"axis": 0}, id="axis0")],
    "squeeze": [Case([(2, 1, 3, 1)], {"axes": [1, -1]}),
                Case([(2, 1, 3)], {"axes": [1]}, id="one")],
    "unsqueeze": [Case([(2, 3)], {"axes": [1]}),
                  Case([(2, 3)], {"axes": [0, -1]}, id="two")],
}
