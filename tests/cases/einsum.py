"""Cases for flowgrad/ops/einsum.py."""
from flowgrad.testing import Case

CASES = {
    "einsum": [Case([(3, 4), (4, 5)], {"equation": "ij,jk->ik"}, id="matmul"),
               Case([(3, 4), (4, 5)], {"equation": "ij,jk"}, id="implicit"),
               Case([(2, 3, 3)], {"equation": "...ii->...i"}, id="batch-diagonal"),
               Case([(3, 4)], {"equation": "ij->i"}, id="sum"),
               Case([(3, 3)], {"equation": "ii"}, id="trace"),
               Case([(2, 1, 3, 4), (5, 4, 2)], {"equation": "...ij,...jk->...ik"},
                    id="ellipsis-broadcast"),
               Case([(2, 3), (3, 4), (4, 2)], {"equation": "ij,jk,kl->il"}, id="three"),
               Case([(3,), (3,)], {"equation": "i,i"}, id="inner")],
}
