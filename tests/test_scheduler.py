"""The plan: ordering, partial forward, two-pass backward, freeing, batching, errors,
preparing a hand-built graph once."""
from __future__ import annotations

import numpy as np
import pytest

import flowgrad
from flowgrad import FlowgradError, Graph, GraphError, Op, OpError, Spec, hookimpl
from flowgrad.ops.activations import Relu, Sigmoid
from flowgrad.ops.dense import Dense
from flowgrad.ops.losses import SoftmaxCrossEntropy
from flowgrad.ops.merge import Concat

CALLS: list[tuple[str, str]] = []


class Probe(Op):
    """Identity that records each forward/backward call (to see what the plan runs)."""

    type = "probe"

    def infer(self, x):
        return (x,)

    def forward(self, ctx, x):
        CALLS.append(("forward", id(self)))
        return (x,)

    def backward(self, ctx, gy):
        CALLS.append(("backward", id(self)))
        return (gy,)


class BadArity(Op):
    type = "bad_arity"

    def infer(self, x):
        return (x,)

    def forward(self, ctx, x):
        return x  # not a tuple: a plugin bug the plan must name

    def backward(self, ctx, gy):
        return (gy,)


def mlp(probe_names=("p1", "p2")) -> Graph:
    """x -> dense(W1) -> probe p1 -> relu -> dense(W2) -> probe p2 -> CE loss; also x -> p0."""
    rng = np.random.default_rng(0)
    g = Graph("mlp")
    g.add_input("x", Spec((None, 4), np.float32))
    g.add_input("y", Spec((None,), np.int64))
    g.add_param("W1", rng.normal(size=(4, 8)).astype(np.float32))
    g.add_param("W2", rng.normal(size=(8, 3)).astype(np.float32))
    g.add_op("fc1", Dense()); g.connect("x", 0, "fc1", 0); g.connect("W1", 0, "fc1", 1)
    g.add_op("p1", Probe()); g.connect("fc1", 0, "p1", 0)
    g.add_op("h", Relu()); g.connect("p1", 0, "h", 0)
    g.add_op("fc2", Dense()); g.connect("h", 0, "fc2", 0); g.connect("W2", 0, "fc2", 1)
    g.add_op("p2", Probe()); g.connect("fc2", 0, "p2", 0)
    g.add_op("loss", SoftmaxCrossEntropy()); g.connect("p2", 0, "loss", 0)
    g.connect("y", 0, "loss", 1)
    g.add_op("side", Probe()); g.connect("x", 0, "side", 0)
    g.outputs = ["p2", "loss"]
    return g


def feeds(n=5, seed=1):
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=(n, 4)), "y": rng.integers(0, 3, size=n)}


def probe_calls(net, name, phase):
    return sum(1 for p, i in CALLS if p == phase and i == id(net.graph.op_of(name)))


def test_forward_computes_only_what_the_outputs_need():
    net = flowgrad.compile(mlp())
    CALLS.clear()
    out = net.forward(feeds(), outputs=["p1"])
    assert list(out) == ["p1"]
    assert probe_calls(net, "p1", "forward") == 1
    assert probe_calls(net, "p2", "forward") == 0 and probe_calls(net, "side", "forward") == 0


def test_backward_runs_only_between_grad_leaves_and_seeds():
    net = flowgrad.compile(mlp())
    net.forward(feeds(), outputs=["loss", "side"])
    CALLS.clear()
    grads = net.backward({"loss": 1.0})
    assert set(grads) == {"W1", "W2"}
    # side is not upstream of the loss; nothing upstream of fc1 needs a gradient except W1
    assert probe_calls(net, "side", "backward") == 0
    assert probe_calls(net, "p1", "backward") == 1 and probe_calls(net, "p2", "backward") == 1


def test_frozen_params_and_inputs_prune_backward():
    g = mlp()
    g.set_trainable("W1", False)
    net = flowgrad.compile(g)
    net.forward(feeds(), outputs=["loss"])
    CALLS.clear()
    grads = net.backward({"loss": 1.0})
    assert set(grads) == {"W2"}
    assert probe_calls(net, "p1", "backward") == 0  # nothing below fc2's W2 needs a gradient
    net.forward(feeds(), outputs=["loss"])
    grads = net.backward({"loss": 1.0}, wrt=["x"])
    assert set(grads) == {"W2", "x"} and grads["x"].shape == (5, 4)


def test_gradients_match_finite_differences_and_are_deterministic():
    net = flowgrad.compile(mlp(), dtype="float64")
    f = feeds()
    net.forward(f, outputs=["loss"])
    grads = net.backward({"loss": 1.0}, wrt=["x"])
    net.forward(f, outputs=["loss"])
    again = net.backward({"loss": 1.0}, wrt=["x"])
    for k in grads:
        assert np.array_equal(grads[k], again[k])
    eps = 1e-6
    W = net.params["W1"]
    for idx in [(0, 0), (2, 5), (3, 7)]:
        W[idx] += eps
        plus = net.forward(f, outputs=["loss"], grad=False)["loss"]
        W[idx] -= 2 * eps
        minus = net.forward(f, outputs=["loss"], grad=False)["loss"]
        W[idx] += eps
        assert grads["W1"][idx] == pytest.approx((plus - minus) / (2 * eps), rel=1e-6, abs=1e-9)


def test_any_batch_size_without_recompiling_and_float32_by_default():
    net = flowgrad.compile(mlp())
    for n in (1, 7, 64):
        out = net.forward(feeds(n), outputs=["p2"])
        assert out["p2"].shape == (n, 3) and out["p2"].dtype == np.float32
    assert len(net._forward_programs) == 1


def test_float64_on_request():
    net = flowgrad.compile(mlp(), dtype="float64")
    assert net.forward(feeds(), outputs=["p2"])["p2"].dtype == np.float64
    assert net.params["W1"].dtype == np.float64


def test_activations_are_freed_after_their_last_reader():
    net = flowgrad.compile(mlp())
    net.forward(feeds(), outputs=["loss"])
    program = net._forward_programs[(("loss",), False)]   # (outputs, fused)
    freed = {s for *_, free, _ in program.run for s in free}
    slot = net.layout.slot
    assert slot[("fc1", 0)] in freed and slot[("p1", 0)] in freed
    assert slot[("loss", 0)] not in freed  # requested outputs are kept


def test_seeding_an_output_that_is_also_consumed_adds_both_gradients():
    net = flowgrad.compile(mlp(), dtype="float64")
    f = feeds()
    net.forward(f, outputs=["p2", "loss"])
    both = net.backward({"p2": 1.0, "loss": 1.0})
    net.forward(f, outputs=["p2", "loss"])
    only_p2 = net.backward({"p2": 1.0})
    net.forward(f, outputs=["p2", "loss"])
    only_loss = net.backward({"loss": 1.0})
    assert np.allclose(both["W2"], only_p2["W2"] + only_loss["W2"])


def test_user_errors_are_clear():
    net = flowgrad.compile(mlp())
    with pytest.raises(FlowgradError, match="needs a forward"):
        net.backward({"loss": 1.0})
    with pytest.raises(FlowgradError, match="unknown input 'xx'; did you mean 'x'"):
        net.forward({"xx": np.zeros((2, 4))})
    with pytest.raises(FlowgradError, match=r"input 'x' expects shape \(N, 4\)"):
        net.forward({"x": np.zeros((2, 5)), "y": np.zeros(2, np.int64)})
    with pytest.raises(FlowgradError, match="missing input 'y'"):
        net.forward({"x": np.zeros((2, 4))}, outputs=["loss"])
    net.forward(feeds(), outputs=["p2"])
    with pytest.raises(FlowgradError, match="cannot seed 'loss'"):
        net.backward({"loss": 1.0})
    net.forward(feeds(), outputs=["loss"])
    with pytest.raises(FlowgradError, match="cannot differentiate with respect to 'y'"):
        net.backward({"loss": 1.0}, wrt=["y"])
    with pytest.raises(FlowgradError, match="cannot compute output: unknown value 'nope'"):
        net.forward(feeds(), outputs=["nope"])


def test_a_failing_op_is_reported_with_node_type_and_shapes():
    g = mlp()
    net = flowgrad.compile(g)
    with pytest.raises(OpError, match=r"forward of 'loss' \(softmax_cross_entropy\) failed with "
                                      r"inputs \(2, 3\), \(2,\): IndexError"):
        net.forward({"x": np.zeros((2, 4)), "y": np.array([0, 7])}, outputs=["loss"])


def test_a_plugin_contract_violation_names_the_node():
    class Plugin:
        @hookimpl
        def flowgrad_register_ops(self, ops):
            ops.add(BadArity)

    registry = flowgrad.make_registry(plugins=[Plugin()])
    g = Graph("bad")
    g.add_input("x", Spec((None, 2), np.float32))
    g.add_op("oops", registry.get("bad_arity")())
    g.connect("x", 0, "oops", 0)
    g.outputs = ["oops"]
    with pytest.raises(OpError, match=r"forward of 'oops' \(bad_arity\) failed.*must return a tuple"):
        flowgrad.compile(g).forward({"x": np.zeros((1, 2))})


def test_compile_order_is_deterministic():
    orders = {tuple(flowgrad.compile(mlp()).order) for _ in range(3)}
    assert len(orders) == 1


def test_forward_only_op_on_the_gradient_path_is_named():
    class Sign(Op):
        type = "sign_test"
        differentiable = False

        def infer(self, x):
            return (x,)

        def forward(self, ctx, x):
            return (np.sign(x),)

    g = Graph("fo")
    g.add_input("x", Spec((None, 2), np.float32))
    g.add_param("w", np.ones(2, np.float32))
    g.add_op("s", Sign()); g.connect("x", 0, "s", 0)
    g.add_op("c", Concat(axis=1), num_inputs=2)
    g.connect("s", 0, "c", 0); g.connect("w", 0, "c", 1)  # shape mismatch avoided below
    g.outputs = ["s"]
    net = flowgrad.compile(prepare_ok(g))
    net.forward({"x": np.ones((1, 2))}, outputs=["s"])
    with pytest.raises(GraphError, match="'s' \\(sign_test\\) is forward-only"):
        net.backward({"s": 1.0}, wrt=["x"])


def prepare_ok(g):
    g.dag.remove_node("c")
    return g


def test_gradient_of_an_unreached_input_is_zeros_of_its_shape():
    g = mlp()
    net = flowgrad.compile(g)
    f = feeds()
    net.forward(f, outputs=["loss", "side"])
    grads = net.backward({"loss": 1.0}, wrt=["x"])
    assert grads["x"].shape == (5, 4)
    net.forward(f, outputs=["p1"])
    grads = net.backward({"p1": 1.0}, wrt=["x"])
    assert grads["x"].shape == (5, 4)
    g2 = mlp()
    g2.add_input("unused", Spec((None, 2), np.float32))
    net = flowgrad.compile(g2)
    net.forward({**f, "unused": np.ones((5, 2))}, outputs=["loss"])
    grads = net.backward({"loss": 1.0}, wrt=["unused"])
    assert grads["unused"].shape == (5, 2) and not grads["unused"].any()


def test_compile_prepares_a_hand_built_graph_once():
    g = mlp()
    assert not g.prepared
    net = flowgrad.compile(g)
    assert net.graph.prepared and net.graph is not g
    assert flowgrad.prepare(net.graph) is net.graph      # a prepared graph is left as it is
    assert flowgrad.compile(net.graph).graph is net.graph


def test_a_plan_needs_a_prepared_graph():
    with pytest.raises(FlowgradError, match="not prepared"):
        flowgrad.Plan(mlp())


def test_extending_a_prepared_graph_makes_it_unprepared():
    g = flowgrad.prepare(mlp())
    extended = g.copy()
    assert extended.prepared
    extended.add_op("again", Relu())
    extended.connect("p2", 0, "again", 0)
    assert not extended.prepared and g.prepared
    assert "p2#branch" in flowgrad.compile(extended).graph.dag   # p2 now has two readers


def test_no_pass_runs_on_a_prepared_graph(monkeypatch):
    from flowgrad import passes
    g = flowgrad.prepare(mlp())
    for name in ("validate", "insert_branches", "infer_shapes"):
        monkeypatch.setattr(passes, name, lambda graph, name=name: pytest.fail(name + " ran"))
    flowgrad.compile(g).forward(feeds(), outputs=["loss"])
