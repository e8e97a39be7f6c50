"""The backend seam's ``prepared``: what an op derives from a plan's constant is computed once
per plan; from anything that can change (a param, an activation) at every call."""
from __future__ import annotations

import numpy as np

import flowgrad
from flowgrad.backend import DEFAULT
from flowgrad.graph import Graph
from flowgrad.op import Op, Spec


class ScaledBy(Op):
    """``y = x * (2 * w)``, with ``2 * w`` asked of ``ctx.backend.prepared``; counts the
    derivations it makes."""

    type = "scaled_by_test"
    inputs = ("x", "w")
    made: list[str] = []

    def infer(self, x, w):
        return (Spec(x.shape, x.dtype),)

    def forward(self, ctx, x, w):
        def double(v):
            ScaledBy.made.append("double")
            return 2 * v
        return (x * ctx.backend.prepared(w, double, "double"),)


def _plan():
    g = Graph("prepared")
    g.add_input("x", Spec((None, 3), np.float32))
    g.add_const("c", np.array([1, 2, 3], np.float32))
    g.add_param("p", np.array([1, 1, 1], np.float32))
    g.add_op("by_const", ScaledBy())
    g.add_op("by_param", ScaledBy())
    for node, leaf in (("by_const", "c"), ("by_param", "p")):
        g.connect("x", 0, node, 0)
        g.connect(leaf, 0, node, 1)
    g.outputs = ["by_const", "by_param"]
    return flowgrad.compile(g)


def test_a_constant_is_derived_once_and_a_param_at_every_call():
    plan = _plan()
    x = np.ones((2, 3), np.float32)
    ScaledBy.made.clear()
    for _ in range(3):
        out = plan.forward({"x": x}, grad=False)
    assert len(ScaledBy.made) == 1 + 3              # the constant once, the param each run
    np.testing.assert_array_equal(out["by_const"], [[2, 4, 6]] * 2)
    plan.params["p"][...] = 5                       # a param changed in place is seen
    out = plan.forward({"x": x}, grad=False)
    np.testing.assert_array_equal(out["by_param"], [[10, 10, 10]] * 2)


def test_what_is_derived_from_a_constant_is_a_constant_too():
    plan = _plan()
    (const,) = [v for v in plan._store.constants()]
    calls = []

    def halves(v):
        calls.append("split")
        return v[:1].copy(), v[1:].copy()

    first, second = plan.backend.prepared(const, halves, "halves")
    assert plan.backend.prepared(const, halves, "halves")[0] is first
    tripled = [plan.backend.prepared(second, lambda v: 3 * v, "x3") for _ in range(2)]
    assert tripled[0] is tripled[1] and calls == ["split"]
    np.testing.assert_array_equal(tripled[0], [6, 9])
    # different keys are different derivations
    assert plan.backend.prepared(const, lambda v: -v, "negated")[0] == -1


def test_outside_a_plan_nothing_is_kept():
    w = np.arange(3.0)
    a = DEFAULT.prepared(w, lambda v: v + 1, "plus one")
    w += 10
    np.testing.assert_array_equal(DEFAULT.prepared(w, lambda v: v + 1, "plus one"), w + 1)
    assert a[0] == 1
