"""Whole-graph gradient check: the plan's backward against central differences.

Used by ``flowgrad check``: every float input and trainable param of the graph is perturbed
(a random sample of at most ``max_elements`` entries per leaf, so large models stay quick), in
float64, and the directional derivative of ``sum_k <c_k, output_k>`` (random cotangents ``c_k``;
1 for scalar outputs) is compared with what backward returns.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .graph import Graph
from .plan import compile


@dataclass
class LeafCheck:
    name: str
    checked: int
    max_abs_error: float
    max_rel_error: float
    ok: bool


def random_feeds(graph: Graph, batch: int = 2, seed: int = 0,
                 dtype: type = np.float64,
                 shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, np.ndarray]:
    """A batch for every input, unknown dims set to ``batch`` (or the input's whole shape
    taken from ``shapes``): standard normal floats (of ``dtype``), zero integers and False
    booleans (zero is a valid label, index and count)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for name in graph.inputs:
        spec = graph.spec_of(name)
        shape = (shapes or {}).get(name) or tuple(batch if d is None else d for d in spec.shape)
        feeds[name] = (rng.standard_normal(shape).astype(dtype) if spec.dtype.kind == "f"
                       else np.zeros(shape, spec.dtype))
    return feeds


def check_graph_gradients(graph: Graph, feeds: dict[str, np.ndarray] | None = None,
                          max_elements: int = 16, eps: float = 1e-6, rtol: float = 1e-4,
                          atol: float = 1e-6, seed: int = 0) -> list[LeafCheck]:
    net = compile(graph, dtype=np.float64, seed=seed)
    feeds = random_feeds(graph, seed=seed) if feeds is None else feeds
    feeds = {k: np.asarray(v, np.float64) if np.asarray(v).dtype.kind == "f" else v
             for k, v in feeds.items()}
    outs = net.forward(feeds)
    rng = np.random.default_rng(seed + 1)
    cotangents = {k: (np.ones_like(v) if np.ndim(v) == 0 else rng.standard_normal(np.shape(v)))
                  for k, v in outs.items() if np.asarray(v).dtype.kind == "f"}
    float_inputs = [n for n in graph.inputs if graph.spec_of(n).dtype.kind == "f"]
    grads = net.backward(cotangents, wrt=float_inputs)

    def objective() -> float:
        values = net.forward(feeds, grad=False)
        return sum(float(np.sum(values[k] * c)) for k, c in cotangents.items())

    results = []
    leaves = [(n, feeds) for n in float_inputs] + [(n, net.params) for n in net.trainable]
    for name, store in leaves:
        array = store[name]
        analytic = grads.get(name, np.zeros_like(array))
        count = min(max_elements, array.size)
        picks = rng.choice(array.size, size=count, replace=False) if count else []
        worst_abs = worst_rel = 0.0
        ok = True
        flat = array.reshape(-1)
        for index in picks:
            original = flat[index]
            flat[index] = original + eps
            plus = objective()
            flat[index] = original - eps
            minus = objective()
            flat[index] = original
            numeric = (plus - minus) / (2 * eps)
            got = float(analytic.reshape(-1)[index])
            err = abs(got - numeric)
            worst_abs = max(worst_abs, err)
            worst_rel = max(worst_rel, err / max(abs(numeric), 1e-12))
            ok &= err <= atol + rtol * abs(numeric)
        results.append(LeafCheck(name, count, worst_abs, worst_rel, bool(ok)))
    return results
