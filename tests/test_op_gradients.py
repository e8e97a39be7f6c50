"""One finite-difference check, parametrised over every registered op and its cases."""
from __future__ import annotations

import pytest

from flowgrad.plugins import make_registry

from .cases import all_cases

REGISTRY = make_registry()
CASES = all_cases()
PARAMS = [pytest.param(op_type, case, id=f"{op_type}-{case.id or i}")
          for op_type, cases in sorted(CASES.items()) for i, case in enumerate(cases)]


def test_every_registered_op_has_gradient_cases():
    missing = sorted(set(REGISTRY.ops) - set(CASES))
    assert not missing, f"ops without cases in tests/cases/: {missing}"
    stale = sorted(set(CASES) - set(REGISTRY.ops))
    assert not stale, f"cases for ops that are not registered: {stale}"


@pytest.mark.parametrize("op_type,case", PARAMS)
def test_op_backward_matches_finite_differences(op_type, case, fd_errors):
    worst = case.run(REGISTRY.get(op_type))
    fd_errors.append((worst, f"{op_type}-{case.id}"))
