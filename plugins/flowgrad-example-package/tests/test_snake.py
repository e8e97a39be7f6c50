"""A plugin author's own tests: the same checks flowgrad runs on its built-in ops."""
import numpy as np
import pytest

from flowgrad.testing import Case, check_op, positive
from flowgrad_example import Snake


@pytest.mark.parametrize("alpha_shape", [(1,), (4,)])
def test_snake_passes_the_authoring_kit(alpha_shape):
    rng = np.random.default_rng(0)
    check_op(Snake(), [rng.standard_normal((3, 4)), rng.uniform(0.5, 2.0, alpha_shape)])


def test_snake_as_a_case():
    Case([(2, 3, 4), positive((4,))]).run(Snake)


def test_snake_is_found_through_its_entry_point():
    import flowgrad
    registry = flowgrad.make_registry()
    assert registry.get("snake") is Snake
    assert registry.provider("op", "snake").kind == "entry point"
