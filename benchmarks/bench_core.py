"""Issue 2's core benchmarks: training steps against hand-written numpy and PyTorch, compile time.

    .venv/bin/python benchmarks/bench_core.py          # everything
    .venv/bin/python benchmarks/bench_core.py chain    # only the long-chain load/compile rows

Every ratio compares timings taken in the same run.  PyTorch is optional (`pip install
'.[bench]'`); without it those rows are skipped.
"""
from __future__ import annotations

import statistics
import sys
import time

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _timing import (emit_value, import_torch, interleaved, ratio, report,  # noqa: E402
                     set_threads, thread_header)

THREADS = set_threads()         # before numpy: every contender gets the same thread count

import numpy as np  # noqa: E402

import flowgrad  # noqa: E402
from flowgrad.loaders.yaml_loader import load_yaml  # noqa: E402

torch = import_torch(THREADS)   # None without the bench extra: those rows are skipped

LR = 0.01


def mlp_yaml(sizes: list[int], act: str, loss: str) -> str:
    lines = ["flowgrad: 1", "name: bench", "inputs:", f"  x: {{shape: [{sizes[0]}]}}"]
    lines.append("  t: {shape: [], dtype: int64}" if loss == "ce" else f"  t: {{shape: [{sizes[-1]}]}}")
    lines.append("params:")
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        lines.append(f"  W{i}: {{shape: [{a}, {b}], init: {{kind: glorot_uniform}}}}")
        lines.append(f"  b{i}: {{shape: [{b}], init: {{kind: zeros}}}}")
    lines.append("nodes:")
    prev = "x"
    for i in range(len(sizes) - 1):
        lines.append(f"  fc{i}: {{op: dense, in: {{x: {prev}, W: W{i}, b: b{i}}}}}")
        prev = f"fc{i}"
        if i < len(sizes) - 2 or act == "sigmoid":
            lines.append(f"  a{i}: {{op: {act}, in: {prev}}}")
            prev = f"a{i}"
    if loss == "ce":
        lines.append(f"  loss: {{op: softmax_cross_entropy, in: {{logits: {prev}, labels: t}}}}")
    else:
        lines.append(f"  loss: {{op: mse, in: {{y: {prev}, target: t}}, reduction: mean}}")
    lines.append("outputs: [loss]")
    return "\n".join(lines) + "\n"


def flowgrad_step(sizes, act, loss, x, t):
    net = flowgrad.compile(load_yaml("bench.yaml", text=mlp_yaml(sizes, act, loss)))
    feeds = {"x": x, "t": t}
    params = net.params

    def step():
        net.forward(feeds)
        for name, g in net.backward({"loss": 1.0}).items():
            params[name] -= LR * g
    return step, net


def numpy_mlp_ce_step(params, x, t):
    """A hand-written numpy training step of the ReLU MLP with softmax cross-entropy."""
    Ws, bs = params
    n = len(x)

    def step():
        acts = [x]
        for i, (W, b) in enumerate(zip(Ws, bs)):
            z = acts[-1] @ W + b
            acts.append(np.maximum(z, 0) if i < len(Ws) - 1 else z)
        logits = acts[-1]
        shifted = logits - logits.max(axis=1, keepdims=True)
        p = np.exp(shifted)
        p /= p.sum(axis=1, keepdims=True)
        g = p
        g[np.arange(n), t] -= 1
        g /= n
        for i in range(len(Ws) - 1, -1, -1):
            gW = acts[i].T @ g
            gb = g.sum(axis=0)
            if i:
                g = (g @ Ws[i].T) * (acts[i] > 0)
            Ws[i] -= LR * gW
            bs[i] -= LR * gb
    return step


def numpy_xor_step(params, x, t):
    """A hand-written numpy training step of the 2-2-1 sigmoid net with mean squared error."""
    W0, b0, W1, b1 = params

    def step():
        h = 1 / (1 + np.exp(-(x @ W0 + b0)))
        y = 1 / (1 + np.exp(-(h @ W1 + b1)))
        gy = 2 * (y - t) / y.size * y * (1 - y)
        gW1, gb1 = h.T @ gy, gy.sum(0)
        gh = (gy @ W1.T) * h * (1 - h)
        gW0, gb0 = x.T @ gh, gh.sum(0)
        for p, g in ((W0, gW0), (b0, gb0), (W1, gW1), (b1, gb1)):
            p -= LR * g
    return step


def torch_step(sizes, act, loss, x, t):
    layers = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2 or act == "sigmoid":
            layers.append(torch.nn.ReLU() if act == "relu" else torch.nn.Sigmoid())
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    xt = torch.from_numpy(x)
    tt = torch.from_numpy(t)
    criterion = torch.nn.CrossEntropyLoss() if loss == "ce" else torch.nn.MSELoss()

    def step():
        opt.zero_grad(set_to_none=True)
        criterion(model(xt), tt).backward()
        opt.step()
    return step


def bench_mlp():
    sizes = [784, 512, 512, 10]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 784)).astype(np.float32)
    t = rng.integers(0, 10, size=256)
    fg, net = flowgrad_step(sizes, "relu", "ce", x, t)
    Ws = [net.params[f"W{i}"].copy() for i in range(3)]
    bs = [net.params[f"b{i}"].copy() for i in range(3)]
    fns = {"flowgrad": fg, "numpy (hand-written)": numpy_mlp_ce_step((Ws, bs), x, t)}
    if torch is not None:
        fns["pytorch"] = torch_step(sizes, "relu", "ce", x, t)
    samples = interleaved(fns, repeat=60)
    print("MLP 784-512-512-10 ReLU, batch 256, float32, softmax CE, SGD step:")
    _report_both(samples, "MLP step")
    return samples


def _report_both(samples: dict[str, list[float]], title: str) -> None:
    """Ratios against the hand-written numpy step and, when it ran, against PyTorch."""
    report({k: v for k, v in samples.items() if k != "pytorch"}, "numpy (hand-written)",
           title=title)
    if "pytorch" in samples:
        report({k: samples[k] for k in ("flowgrad", "pytorch")}, "pytorch", title=title)


def bench_xor():
    sizes = [2, 2, 1]
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    t = np.array([[0], [1], [1], [0]], np.float32)
    fg, net = flowgrad_step(sizes, "sigmoid", "mse", x, t)
    params = [net.params[k].copy() for k in ("W0", "b0", "W1", "b1")]
    fns = {"flowgrad": fg, "numpy (hand-written)": numpy_xor_step(params, x, t)}
    if torch is not None:
        fns["pytorch"] = torch_step(sizes, "sigmoid", "mse", x, t)
    samples = interleaved(fns, repeat=50, inner=200)
    print("XOR 2-2-1 sigmoid, batch 4, MSE, SGD step:")
    _report_both(samples, "XOR step")
    nodes = len(net.graph.ops)
    per_node = statistics.median(samples["flowgrad"]) / nodes / 2
    print(f"  ({nodes} op nodes: {per_node * 1e6:.1f} us per node per pass, update included)")
    return samples


def bench_compile(n: int = 1000):
    lines = ["flowgrad: 1", "inputs: {x: {shape: [8]}}", "nodes:", "  n0: {op: relu, in: x}"]
    lines += [f"  n{i}: {{op: tanh, in: n{i - 1}}}" for i in range(1, n)]
    text = "\n".join(lines) + "\n"
    start = time.perf_counter()
    graph = load_yaml("chain.yaml", text=text)
    loaded = time.perf_counter()
    net = flowgrad.compile(graph)
    net.forward({"x": np.zeros((2, 8), np.float32)})
    done = time.perf_counter()
    print(f"{n}-node chain: load (parse + validate + branches + shapes) "
          f"{(loaded - start) * 1e3:.0f} ms, compile + first forward {(done - loaded) * 1e3:.0f} ms,"
          f" total {(done - start) * 1e3:.0f} ms")
    return done - start


def param_chain_yaml(n: int, width: int = 8) -> str:
    """n nodes in a line, alternately ``dense`` (its own W) and ``add`` (its own bias), then a
    mean: every node has a trainable param, so backward reaches all of them."""
    lines = ["flowgrad: 1", "name: chain", f"inputs: {{x: {{shape: [{width}]}}}}", "params:"]
    for i in range(n):
        if i % 2 == 0:
            lines.append(f"  W{i}: {{shape: [{width}, {width}], init: {{kind: glorot_uniform}}}}")
        else:
            lines.append(f"  b{i}: {{shape: [{width}], init: {{kind: zeros}}}}")
    lines.append("nodes:")
    prev = "x"
    for i in range(n):
        if i % 2 == 0:
            lines.append(f"  n{i}: {{op: dense, in: {{x: {prev}, W: W{i}}}}}")
        else:
            lines.append(f"  n{i}: {{op: add, in: [{prev}, b{i}]}}")
        prev = f"n{i}"
    lines += [f"  loss: {{op: reduce_mean, in: {prev}}}", "outputs: [loss]"]
    return "\n".join(lines) + "\n"


def bench_param_chain(sizes=(1_000, 10_000)):
    """Load, compile and the first forward + backward of a chain with a param at every node,
    timed apart."""
    totals = {}
    for n in sizes:
        text = param_chain_yaml(n)
        t0 = time.perf_counter()
        graph = load_yaml("chain.yaml", text=text)
        t1 = time.perf_counter()
        net = flowgrad.compile(graph)
        t2 = time.perf_counter()
        net.forward({"x": np.ones((2, 8), np.float32)})
        grads = net.backward({"loss": 1.0})
        t3 = time.perf_counter()
        assert len(grads) == n, f"{len(grads)} gradients for {n} params"
        totals[n] = t3 - t0
        print(f"{n}-node chain, a param per node: load {t1 - t0:.2f} s, compile {t2 - t1:.2f} s, "
              f"first forward + backward {t3 - t2:.2f} s, total {t3 - t0:.2f} s")
        for what, seconds in (("load", t1 - t0), ("compile", t2 - t1),
                              ("first forward + backward", t3 - t2)):
            emit_value(f"{n}-node param chain: {what}", seconds, "s")
        emit_value(f"{n}-node param chain: load to first backward", t3 - t0, "s",
                   "<= 10" if n == 10_000 else None)
    return totals


def main():
    print(thread_header(THREADS))
    if sys.argv[1:] == ["chain"]:                # only the chain rows
        from flowgrad.plugins import default_registry
        start = time.perf_counter()
        default_registry()                       # built once per process, by the first load
        print(f"op registry: {(time.perf_counter() - start) * 1e3:.0f} ms (once per process)")
        bench_compile()
        bench_param_chain()
        return
    mlp = bench_mlp()
    xor = bench_xor()
    total = bench_compile()
    chains = bench_param_chain()
    print("\nsummary (targets from issue 2; ratios are medians of per-round ratios):")
    print(f"  MLP: {ratio(mlp, 'flowgrad', 'numpy (hand-written)'):.2f}x numpy (target <= 1.10)"
          + (f", {ratio(mlp, 'flowgrad', 'pytorch'):.2f}x pytorch (target <= 1.0)"
             if 'pytorch' in mlp else ""))
    if "pytorch" in xor:
        print(f"  XOR: {ratio(xor, 'flowgrad', 'pytorch'):.2f}x pytorch (target <= 0.5)")
    print(f"  1000-node chain: {total:.2f} s (target < 0.5 s)")
    print(f"  10000-node chain with a param per node, load to first backward: "
          f"{chains[10_000]:.2f} s (target <= 10 s)")


if __name__ == "__main__":
    main()
