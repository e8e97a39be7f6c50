"""Input optimization (feature visualization) against a hand-written PyTorch loop.

    .venv/bin/python benchmarks/bench_visualize.py [--threads N] [--repeat 20]

For the digits CNN (graphs/digits_cnn.yaml, its one conv layer) and LeNet (graphs/lenet.yaml,
its middle conv layer ``conv2``): 8 images, image ``i`` maximising the spatial mean of channel
``i`` of that layer.  Both sides optimize plain pixels (no squashing, transforms or penalties)
with Adam, lr 0.05, from the same starting images, through the same weights:

1. the step: a 64-step ``visualize`` call against 64 steps of the PyTorch loop, per step;
2. the 1-step call: ``visualize(..., steps=1)`` — parse the objectives, set up, one step,
   return the images — against one step of the running PyTorch loop (target: no more than it);
   the PyTorch loop's own set-up plus one step alongside;
3. the first call on a new plan, which builds and compiles the plan's frozen twin (once per
   plan; later calls reuse it).

Contenders are timed in alternation (``_timing.interleaved``) with the same thread count.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _timing import (emit_ratio, emit_value, import_torch, interleaved, ratio,  # noqa: E402
                     set_threads, thread_header)

THREADS = set_threads()

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import flowgrad  # noqa: E402
from flowgrad.visualize import visualize  # noqa: E402

torch = import_torch(THREADS)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGES = 8
STEPS = 64
LR = 0.05
SETTINGS = dict(param="pixels", range_mode="none", optimizer="adam", lr=LR)

#: graph, layer, and the PyTorch layers up to it (conv: (weight, bias, pad))
NETS = {
    "digits CNN": ("digits_cnn.yaml", "conv1", [("conv", "K1", "c1", 1)]),
    "LeNet": ("lenet.yaml", "conv2", [("conv", "K1", "c1", 2), ("relu",), ("pool",),
                                      ("conv", "K2", "c2", 2)]),
}


def torch_model(plan, layers):
    """The network up to the visualized layer, with the plan's weights (copied)."""
    modules = []
    for layer in layers:
        if layer[0] == "conv":
            w = torch.from_numpy(plan.params[layer[1]].copy())
            conv = torch.nn.Conv2d(w.shape[1], w.shape[0], w.shape[2:], padding=layer[3])
            with torch.no_grad():
                conv.weight.copy_(w)
                conv.bias.copy_(torch.from_numpy(plan.params[layer[2]].copy()))
            modules.append(conv)
        elif layer[0] == "relu":
            modules.append(torch.nn.ReLU())
        else:
            modules.append(torch.nn.MaxPool2d(2))
    model = torch.nn.Sequential(*modules)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def torch_loop(model, start):
    """The hand-written loop: pixels as the leaf, Adam, image i climbs channel i's mean."""
    rows = torch.arange(IMAGES)

    def run(steps):
        x = torch.tensor(start, requires_grad=True)
        opt = torch.optim.Adam([x], lr=LR)
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            y = model(x)
            (-y[rows, rows].mean(dim=(1, 2)).sum()).backward()
            opt.step()
        return x.detach().numpy()

    x = torch.tensor(start, requires_grad=True)
    opt = torch.optim.Adam([x], lr=LR)

    def step():                 # one more step of a loop that is already running
        opt.zero_grad(set_to_none=True)
        y = model(x)
        (-y[rows, rows].mean(dim=(1, 2)).sum()).backward()
        opt.step()

    return run, step


def bench(name, repeat):
    graph_file, layer, layers = NETS[name]
    graph = flowgrad.load(os.path.join(ROOT, "graphs", graph_file))
    plan = flowgrad.compile(graph)
    objectives = [f"channel({layer}, {c})" for c in range(IMAGES)]
    shape = graph.node("x")["spec"].shape[1:]
    start = np.random.default_rng(0).normal(0.0, 0.01, (IMAGES,) + shape).astype(np.float32)

    def flowgrad_run(steps):
        return visualize(plan, objectives, steps=steps, init=start, **SETTINGS).images

    first = []
    for _ in range(3):              # a new plan each time: its first call compiles
        fresh = flowgrad.compile(graph)
        t = time.perf_counter()
        visualize(fresh, objectives, steps=1, init=start, **SETTINGS)
        first.append(time.perf_counter() - t)
    print(f"\n{name}: {IMAGES} images, channels 0-{IMAGES - 1} of '{layer}', pixels + Adam")
    print(f"  first call on a new plan (compiles once)   {statistics.median(first) * 1e3:7.2f} ms"
          f" (range {min(first) * 1e3:.2f}-{max(first) * 1e3:.2f})")
    emit_value(f"{name}: first visualize call on a new plan", statistics.median(first), "s")

    fns = {"flowgrad visualize": lambda: flowgrad_run(STEPS)}
    if torch is not None:
        model = torch_model(plan, layers)
        run, step = torch_loop(model, start)
        ours, theirs = flowgrad_run(5), run(5)
        print(f"  after 5 steps the images differ by at most {np.abs(ours - theirs).max():.1e}"
              f" (pixels move by {np.abs(theirs - start).max():.2f})")
        fns["pytorch loop"] = lambda: run(STEPS)
    samples = interleaved(fns, repeat=repeat)
    per_step = {k: [t / STEPS for t in v] for k, v in samples.items()}
    print(f"  per step, over a {STEPS}-step call:")
    show(per_step, "pytorch loop", f"{name}: visualize step", "<= 1.0")

    fns = {"flowgrad visualize(steps=1)": lambda: flowgrad_run(1),
           "flowgrad visualize(steps=2)": lambda: flowgrad_run(2)}
    if torch is not None:
        fns["pytorch: one more step"] = step
        fns["pytorch: set up + 1 step"] = lambda: run(1)
    samples = interleaved(fns, repeat=repeat * 3, inner=5)
    print("  a 1-step call:")
    show(samples, "pytorch: one more step", f"{name}: 1-step visualize call", "<= 1.0")
    # what a call costs besides its step: 2 x (1-step call) - (2-step call), from the fastest
    # sample of each (a difference of medians drowns in a shared machine's load)
    overhead = 2 * min(samples["flowgrad visualize(steps=1)"]) \
        - min(samples["flowgrad visualize(steps=2)"])
    print(f"    call overhead besides the step: {overhead * 1e6:.0f} us "
          "(2 x fastest 1-step call - fastest 2-step call)")
    emit_value(f"{name}: visualize call overhead", overhead, "s")


def show(samples, baseline, title, target):
    """Medians with ranges; the ratio to ``baseline`` per round (also a RATIO: line)."""
    for name, times in samples.items():
        line = (f"    {name:<30} {statistics.median(times) * 1e6:9.1f} us"
                f"  (range {min(times) * 1e6:.1f}-{max(times) * 1e6:.1f})")
        if baseline in samples and name != baseline:
            line += f"   {ratio(samples, name, baseline):.2f}x {baseline}"
        print(line)
    if baseline in samples:
        first = next(iter(samples))
        emit_ratio(title, ratio(samples, first, baseline), baseline, target)
    print(f"    ({len(next(iter(samples.values())))} rounds; ratios are medians of per-round "
          "ratios)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="rounds per comparison")
    args = parser.parse_args()
    print(thread_header(THREADS))
    for name in NETS:
        bench(name, args.repeat)


if __name__ == "__main__":
    main()
