"""Cases for the elementwise family: broadcasting in every direction for binary ops, positive
inputs where the function needs them (log, sqrt, pow's base, division's denominator)."""
from flowgrad.testing import Case, away_from, positive

_BROADCAST = [Case([(3, 4), (3, 4)], id="same"),
              Case([(3, 4), (4,)], id="row"),
              Case([(3, 1), (1, 4)], id="outer"),
              Case([(2, 3, 4), (3, 1)], id="rank3"),
              Case([(), (2, 3)], id="scalar-left")]

CASES = {
    "add": _BROADCAST,
    "sub": _BROADCAST,
    "mul": _BROADCAST,
    "div": [Case([(3, 4), positive((3, 4))], id="same"),
            Case([(3, 4), away_from((4,), margin=0.3)], id="row-signed"),
            Case([(2, 1), positive((1, 5))], id="outer"),
            Case([positive(()), positive((2, 3))], id="scalar-left")],
    "pow": [Case([positive((3, 4)), (3, 4)], id="same"),
            Case([positive((3, 4)), (4,)], id="row-exponent"),
            Case([positive((2, 1, 3)), positive((4, 1))], id="outer"),
            Case([positive((3,)), positive(())], id="scalar-exponent")],
    "neg": [Case([(3, 4)])],
    "identity": [Case([(3, 4)]), Case([(2, 3, 2)], id="rank3")],
    "exp": [Case([(3, 4)])],
    "log": [Case([positive((3, 4))]), Case([positive((5,), 0.01, 100.0)], id="wide")],
    "sqrt": [Case([positive((3, 4))])],
    "abs": [Case([away_from((3, 4))])],
    "reciprocal": [Case([away_from((3, 4), margin=0.3)])],
}
