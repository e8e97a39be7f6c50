"""The lecture notes' worked examples (graphs/), reproduced number for number."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import flowgrad
from flowgrad.gradcheck import check_graph_gradients

from .conftest import GRAPHS


def net_of(name, dtype="float64"):
    return flowgrad.compile(flowgrad.load(GRAPHS / name), dtype=dtype)


def test_xor_threshold_network():
    net = net_of("xor.yaml")
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    assert net.forward({"x": x})["y"].ravel().tolist() == [0, 1, 1, 0]


def test_ffnn_worked_example_forward():
    net = net_of("ffnn_seed.yaml")
    out = net.forward({"x": np.array([[1.0, 1.0, 1.0]]), "label": np.array([2])})
    assert out["o"].ravel().tolist() == [-4, 8, 4]
    assert np.round(out["p"].ravel(), 2).tolist() == [0.00, 0.98, 0.02]
    # -log(e^4 / (e^-4 + e^8 + e^4)) = 4.018 (the notes print e^8 in the numerator: 0.018)
    assert out["loss"] == pytest.approx(-np.log(np.exp(4) / (np.exp(-4) + np.exp(8) + np.exp(4))))
    assert round(float(out["loss"]), 3) == 4.018


def test_ffnn_worked_example_backward():
    net = net_of("ffnn_seed.yaml")
    out = net.forward({"x": np.array([[3.0, 1.0, 2.0]]), "label": np.array([0])})
    assert out["o"][0, 0] == -3
    grads = net.backward({"o": np.array([[1.0, 0.0, 0.0]])})    # d o1 / d everything
    assert grads["W1"][1, 1] == -6                               # W1[2,2] 1-based


def test_logistic_regression_gradients_match_the_closed_form():
    net = net_of("logistic_reg.yaml")
    w, b, lam = 0.5, -0.25, 0.1
    x, t = np.array([1.5, -0.7, 2.0]), np.array([1.0, 0.0, 1.0])
    out = net.forward({"x": x, "t": t})
    z = w * x + b
    s = 1 / (1 + np.exp(-z))
    assert out["L_reg"] == pytest.approx(0.5 * np.sum((s - t) ** 2) + lam * 0.5 * w ** 2)
    grads = net.backward({"L_reg": 1.0})
    delta = (s - t) * s * (1 - s)
    assert grads["w"] == pytest.approx(np.sum(delta * x) + lam * w, rel=1e-12)
    assert grads["b"] == pytest.approx(np.sum(delta), rel=1e-12)


def test_parity_of_all_256_inputs():
    net = net_of("parity.yaml")
    bits = np.array(list(itertools.product([0, 1], repeat=8)), dtype=float)
    y = net.forward({"x": bits})["p7"].ravel()
    assert np.array_equal(y, bits.sum(axis=1) % 2)
    graph = flowgrad.load(GRAPHS / "parity.yaml")
    threshold_units = sum(1 for n in graph.ops if graph.node(n)["op"].type == "step")
    assert threshold_units == 14  # two per stage, 7 stages: linear in the number of bits
    assert all(f"{p}#branch" in graph.dag for p in ("B", "c", "V", "d"))  # tied across stages


def test_branch_merge_gradients_and_tied_weight_sum():
    graph = flowgrad.load(GRAPHS / "branch_merge.yaml")
    assert graph.node("V#branch")["op"].n == 2 and graph.node("h#branch")["op"].n == 2
    rng = np.random.default_rng(0)
    feeds = {"x": rng.normal(size=(6, 4)), "t": rng.normal(size=(6, 3))}
    assert all(c.ok for c in check_graph_gradients(graph, feeds))
    net = flowgrad.compile(graph, dtype="float64")
    net.forward(feeds)
    tied = net.backward({"loss": 1.0})["V"]
    # untie: the second use of V reads a copy V2; the tied gradient is the sum of both uses
    text = (GRAPHS / "branch_merge.yaml").read_text()
    text = text.replace("za:   {op: dense, in: {x: h, W: V}}", "za:   {op: dense, in: {x: h, W: V2}}")
    text = text.replace("  U:", "  V2: {shape: [5, 5], init: {kind: glorot_uniform, seed: 0}}\n  U:")
    untied_graph = flowgrad.loaders.yaml_loader.load_yaml("untied.yaml", text=text)
    untied = flowgrad.compile(untied_graph, dtype="float64")
    untied.load_state_dict({**net.state_dict(), "V2": net.params["V"]})
    untied.forward(feeds)
    g = untied.backward({"loss": 1.0})
    assert np.allclose(tied, g["V"] + g["V2"], rtol=1e-12, atol=1e-14)
    assert not np.allclose(g["V"], 0) and not np.allclose(g["V2"], 0)


def test_matrix_calculus_closed_forms():
    net = net_of("matrix_calculus.yaml")
    x = np.array([[0.3, -1.2, 0.8]])
    net.forward({"x": x})
    grads = net.backward({"L": 1.0, "L1": 0.0, "L2": 0.0})
    W, A, B = net.params["W"], net.params["A"], net.params["B"]
    xc = x.T
    assert np.allclose(grads["W"], 2 * (W @ xc - xc) @ xc.T)

    alpha, beta_inv, gamma = 0.7, 0.5, 1.5
    C = alpha * A @ A.T + beta_inv * np.eye(3)
    Ci = np.linalg.inv(C)
    net.forward({"x": x})
    g1 = net.backward({"L1": 1.0})
    assert np.allclose(g1["A"], -gamma * alpha * Ci @ A)
    net.forward({"x": x})
    g2 = net.backward({"L2": 1.0})
    assert np.allclose(g2["A"], alpha * Ci @ B @ B.T @ Ci @ A)
    assert np.allclose(g2["B"], -Ci @ B)


@pytest.mark.parametrize("name", ["ffnn_seed.yaml", "logistic_reg.yaml", "branch_merge.yaml",
                                  "matrix_calculus.yaml"])
def test_whole_graph_gradients_match_finite_differences(name):
    checks = check_graph_gradients(flowgrad.load(GRAPHS / name))
    assert checks and all(c.ok for c in checks), checks
