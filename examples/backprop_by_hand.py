"""The lecture notes' worked example, step by step with flowgrad's Python API.

    .venv/bin/python examples/backprop_by_hand.py

1. forward: x = (1, 1, 1) through graphs/ffnn_seed.yaml gives logits (-4, 8, 4);
2. backward from one output: seeding o1 with 1 gives d o1 / d W1, the notes' -6;
3. the same machinery, differentiating with respect to the input instead of the weights,
   optimizes the data: gradient descent on x for the cross-entropy of class 2 turns the input
   (1, 1, 1), which the network calls class 1, into one it calls class 2.  (Class 0 is out of
   reach: with these weights o3 - o1 = 2 h2[0] >= 0 for every input.)
"""
from __future__ import annotations

import pathlib

import numpy as np

import flowgrad

STEPS = 40
GRAPH = pathlib.Path(__file__).resolve().parent.parent / "graphs" / "ffnn_seed.yaml"


def main() -> None:
    graph = flowgrad.load(GRAPH)
    print(f"{graph.name}: {len(graph.ops)} ops; the networkx DAG has "
          f"{graph.dag.number_of_nodes()} nodes and {graph.dag.number_of_edges()} edges")
    net = flowgrad.compile(graph, dtype="float64")

    out = net.forward({"x": np.array([[1.0, 1.0, 1.0]]), "label": np.array([2])})
    print(f"x = (1, 1, 1): o = {out['o'][0]}, softmax = {np.round(out['p'][0], 2)}, "
          f"cross-entropy for label 2 = {float(out['loss']):.3f}")

    net.forward({"x": np.array([[3.0, 1.0, 2.0]]), "label": np.array([0])})
    grads = net.backward({"o": np.array([[1.0, 0.0, 0.0]])}, wrt=["x"])
    print(f"x = (3, 1, 2): d o1 / d W1 =\n{grads['W1']}\n  (W1[2,2], 1-based, is "
          f"{grads['W1'][1, 1]:g}); d o1 / d x = {grads['x'][0]}")

    x, label = np.array([[1.0, 1.0, 1.0]]), np.array([2])
    for _ in range(STEPS):                      # backprop to the data: descend on x
        net.forward({"x": x, "label": label})
        x = x - 0.05 * net.backward({"loss": 1.0}, wrt=["x"])["x"]
    out = net.forward({"x": x, "label": label}, grad=False)
    print(f"after {STEPS} descent steps on x: x = {np.round(x[0], 2)}, "
          f"o = {np.round(out['o'][0], 2)}, p = {np.round(out['p'][0], 2)}: "
          f"class {int(out['o'].argmax())}")


if __name__ == "__main__":
    main()
