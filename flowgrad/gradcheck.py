"""Whole-graph gradient check: the plan's backward against central differences.

Used by ``flowgrad check``: every float input and trainable param of the graph is perturbed
(a random sample of at most ``max_elements`` entries per leaf, so large models stay quick), in
float64, and the directional derivative of ``sum_k <c_k, output_k>`` (random cotangents ``c_k``;
1 for scalar outputs) is compared with what backward returns.

Backward's own rounding is measured, not assumed: backward is linear in the cotangents, so
scaling them by ``1 + 1e-12 r`` (random ``r``) may move an exact gradient by about 1e-12 of
itself — anything more is rounding noise (cancellations such as ``sum_i W g_i`` with equal
weights and a softmax's zero-sum cotangent, amplified through large activations).  When some
entry is outside the tolerance, four times the largest such move over two perturbed runs is
allowed on top of it, per entry.  A correct, well-conditioned gradient moves by ~1e-12, so this
loosens nothing there; a wrong backward is wrong by the same amount whatever the cotangent's
rounding, so it is still caught.  This is what keeps models with constant-filled weights (onnx's
"light" VGG-19, ResNet-50, Inception v1, whose true gradients are 0 and whose float64 backward
returns noise up to ~1e2) from failing.
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
    #: the largest rounding noise measured in backward's value of a checked entry (see above)
    noise: float = 0.0
    #: passed only because the difference is within that noise
    roundoff_limited: bool = False


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

    measured = []          # per leaf: (name, [(flat index, backward's value, numeric)])
    leaves = [(n, feeds) for n in float_inputs] + [(n, net.params) for n in net.trainable]
    for name, store in leaves:
        array = store[name]
        analytic = grads.get(name, np.zeros_like(array)).reshape(-1)
        count = min(max_elements, array.size)
        picks = rng.choice(array.size, size=count, replace=False) if count else []
        flat = array.reshape(-1)
        entries = []
        for index in picks:
            original = flat[index]
            flat[index] = original + eps
            plus = objective()
            flat[index] = original - eps
            minus = objective()
            flat[index] = original
            entries.append((index, float(analytic[index]), (plus - minus) / (2 * eps)))
        measured.append((name, entries))

    def within(got: float, numeric: float, slack: float = 0.0) -> bool:
        return abs(got - numeric) <= atol + rtol * abs(numeric) + slack

    noise: dict[str, np.ndarray] = {}
    if not all(within(got, num) for _, entries in measured for _, got, num in entries):
        noise = _backward_noise(net, feeds, cotangents, float_inputs, grads, seed)
    results = []
    for name, entries in measured:
        errors = [abs(got - num) for _, got, num in entries]
        slack = ([4 * float(noise[name].reshape(-1)[i]) for i, _, _ in entries]
                 if name in noise else [0.0] * len(entries))
        strict = all(within(got, num) for _, got, num in entries)
        ok = all(within(got, num, s) for (_, got, num), s in zip(entries, slack))
        results.append(LeafCheck(
            name, len(entries), max(errors, default=0.0),
            max((e / max(abs(num), 1e-12) for e, (_, _, num) in zip(errors, entries)),
                default=0.0),
            ok, max(slack, default=0.0) / 4, ok and not strict))
    return results


def _backward_noise(net, feeds, cotangents, wrt, grads, seed: int) -> dict[str, np.ndarray]:
    """Per entry, the largest |change| of backward's result over two runs with the cotangents
    scaled by ``1 + 1e-12 r``, less 100 times the change an exact gradient could make.
    Measured only when some entry is outside the tolerance."""
    rng = np.random.default_rng(seed + 2)
    noise: dict[str, np.ndarray] = {}
    for _ in range(2):
        net.forward(feeds)
        scaled = {k: c * (1 + 1e-12 * rng.standard_normal(np.shape(c)))
                  for k, c in cotangents.items()}
        for name, again in net.backward(scaled, wrt=wrt).items():
            if name in grads:
                moved = np.abs(np.asarray(again) - grads[name]) - 1e-10 * np.abs(grads[name])
                noise[name] = np.maximum(noise.get(name, 0.0), np.maximum(moved, 0.0))
    return noise
