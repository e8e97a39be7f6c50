"""einsum's forward by matrix product (flowgrad/ops/einsum.py ``_product_plan``) against
``np.einsum``, over equations that are products, broadcast, transpose, or are not products."""
from __future__ import annotations

import numpy as np
import pytest

from flowgrad.op import Context
from flowgrad.ops.einsum import Einsum, _product_plan

RNG = np.random.default_rng(0)

CASES = [
    ("btgi,gih->btgh", (1, 6, 32, 96), (32, 96, 16)),     # DeepFilterNet's grouped linear
    ("btgi,gih->btgh", (2, 3, 4, 5), (4, 5, 6)),
    ("ij,jk->ik", (3, 4), (4, 5)),
    ("ij,jk", (3, 4), (4, 5)),                            # implicit output
    ("ij,kj->ki", (3, 4), (5, 4)),                         # transposed operand and output
    ("bij,bjk->bik", (2, 3, 4), (2, 4, 5)),
    ("bij,bjk->kbi", (2, 3, 4), (2, 4, 5)),
    ("i,i", (7,), (7,)),                                  # inner product: a 0-d output
    ("i,j->ij", (3,), (4,)),                              # outer product: nothing summed
    ("ij,ij->ij", (3, 4), (3, 4)),                         # elementwise: all batch
    ("ij,j->i", (3, 4), (4,)),                             # matrix-vector
    ("abcd,cdef->abef", (2, 3, 4, 5), (4, 5, 2, 3)),       # two letters summed at once
    ("...ij,...jk->...ik", (2, 1, 3, 4), (5, 4, 2)),       # ellipsis broadcast (size 1)
    ("...ij,...jk->...ik", (2, 5, 3, 4), (5, 4, 2)),
    ("nchw,oc->nohw", (1, 3, 2, 2), (4, 3)),
    ("ij,jk->ik", (0, 4), (4, 5)),                         # an empty operand
    (",ij->ij", (), (3, 4)),                               # a scalar operand
    ("ij,->ji", (3, 4), ()),
    # not products: np.einsum runs them
    ("ij,jk->i", (3, 4), (4, 5)),                          # k summed in one operand only
    ("ii,ij->ij", (3, 3), (3, 4)),                         # a diagonal
    ("ij,jk->ik", (3, 1), (4, 5)),                         # j sized two ways (broadcast)
]


@pytest.mark.parametrize("equation,sa,sb", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward_matches_numpy_einsum(equation, sa, sb, dtype):
    a = RNG.standard_normal(sa).astype(dtype)
    b = RNG.standard_normal(sb).astype(dtype)
    try:
        want = np.einsum(equation, a, b)
    except ValueError:                    # numpy refuses it: so does the op's infer
        return
    op = Einsum(equation=equation)
    (got,) = op.forward(Context(False, False, None, None), a, b)
    assert got.shape == want.shape and got.dtype == want.dtype
    assert got.flags.c_contiguous
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * max(1.0, np.abs(want).max(
        initial=0.0)) * max(sa, default=1))


@pytest.mark.parametrize("equation,sa,sb", [c for c in CASES if c[0] in (
    "ij,jk->i", "ii,ij->ij")])
def test_what_is_not_a_product_has_no_plan(equation, sa, sb):
    assert _product_plan(equation, [sa, sb]) is None


def test_plans_are_kept_per_shape():
    op = Einsum(equation="btgi,gih->btgh")
    ctx = Context(False, False, None, None)
    w = RNG.standard_normal((4, 5, 6)).astype(np.float32)
    for t in (3, 7, 3):
        op.forward(ctx, RNG.standard_normal((1, t, 4, 5)).astype(np.float32), w)
    assert sorted(k[0][1] for k in op._plans) == [3, 7]
