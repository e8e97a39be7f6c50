"""Input optimization (feature visualization) against a hand-written PyTorch loop.

    .venv/bin/python benchmarks/bench_visualize.py [--threads N] [--repeat 20] [--clock cpu]
        [--only LeNet ResNet-14]

For the digits CNN (graphs/digits_cnn.yaml, its one conv layer), LeNet (graphs/lenet.yaml,
its middle conv layer ``conv2``) and ResNet-14 (graphs/resnet14.yaml, ``s2b1_c2``: the second
conv of stage 2's first block, the 7th of its 15 convolutions, 32 channels at 16x16): 8 images,
image ``i`` maximising the spatial mean of channel ``i`` of that layer.  Both sides optimize
plain pixels (no squashing, transforms or penalties) with Adam, lr 0.05, from the same starting
images, through the same weights (ResNet-14's batch norms in evaluation mode on both sides, as
``visualize`` runs the plan's frozen twin in eval mode); the PyTorch model is the network up to
the layer, in ``torch.nn`` modules, as one would write it by hand.  flowgrad runs the plan's
frozen twin (flowgrad/visualize/optimize.py), which folds each evaluation-mode batch norm into
the convolution before it and has the visualized convolution compute only the channels the
objectives read (8 of LeNet's 32, of ResNet-14's 32); the PyTorch loop computes the whole layer
and runs its batch norms, as such a loop does:

1. the step: a 64-step ``visualize`` call (16 steps for ResNet-14, whose step is ~30x
   LeNet's) against as many steps of the PyTorch loop, per step (issue 11's row, target
   <= 0.8x);
2. the 1-step call: ``visualize(..., steps=1)`` — parse the objectives, set up, one step,
   return the images — against one step of the running PyTorch loop (target: no more than it);
   the PyTorch loop's own set-up plus one step alongside;
3. the first call on a new plan, which builds and compiles the plan's frozen twin (once per
   plan; later calls reuse it).

Contenders are timed in alternation (``_timing.interleaved``) with the same thread count.
``--clock cpu`` (with ``--threads 1`` only) times the calling thread's CPU time instead of the
wall clock: on a machine other processes load, a contender waiting for a core is then not
charged for the wait.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _timing import (emit_ratio, emit_value, import_torch, interleaved, ratio,  # noqa: E402
                     set_threads, thread_header)

THREADS = set_threads()

import _timing  # noqa: E402

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import flowgrad  # noqa: E402
from flowgrad.visualize import visualize  # noqa: E402

torch = import_torch(THREADS)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGES = 8
LR = 0.05
#: plain pixels: no 1/f spectrum, no colour decorrelation (the default for 3 channels), no
#: squashing into a range -- what the PyTorch loop optimizes
SETTINGS = dict(param="pixels", decorrelate=False, range_mode="none", optimizer="adam", lr=LR)

#: graph, layer, the PyTorch layers up to it (conv: (weight, bias, pad); "resnet14": the
#: ResNet-14 stem and blocks up to ``s2b1_c2``), steps per timed call
NETS = {
    "digits CNN": ("digits_cnn.yaml", "conv1", [("conv", "K1", "c1", 1)], 64),
    "LeNet": ("lenet.yaml", "conv2", [("conv", "K1", "c1", 2), ("relu",), ("pool",),
                                      ("conv", "K2", "c2", 2)], 64),
    "ResNet-14": ("resnet14.yaml", "s2b1_c2", [("resnet14",)], 16),
}


def _conv(plan, weight, bias=None, stride=1, pad=0):
    """A ``torch.nn.Conv2d`` holding the plan's ``weight`` (and ``bias``), copied."""
    w = plan.params[weight]
    conv = torch.nn.Conv2d(w.shape[1], w.shape[0], w.shape[2:], stride=stride, padding=pad,
                           bias=bias is not None)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(w.copy()))
        if bias is not None:
            conv.bias.copy_(torch.from_numpy(plan.params[bias].copy()))
    return conv


def _batch_norm(plan, prefix):
    """A ``torch.nn.BatchNorm2d`` with the plan's scale, bias and running statistics."""
    bn = torch.nn.BatchNorm2d(plan.params[prefix + "_g"].shape[0])   # eps 1e-5 as flowgrad's
    with torch.no_grad():
        for attr, suffix in (("weight", "_g"), ("bias", "_b"), ("running_mean", "_m"),
                             ("running_var", "_v")):
            getattr(bn, attr).copy_(torch.from_numpy(plan.params[prefix + suffix].copy()))
    return bn


def _resnet14_to_s2b1_c2(plan):
    """ResNet-14 up to stage 2 block 1's second conv, written as one writes a ResNet in
    PyTorch: the stem, stage 1's two basic blocks (identity shortcuts), then the first half
    of stage 2's first block and its second conv (the layer visualized; its batch norm, the
    projection shortcut and everything after do not feed it)."""
    nn = torch.nn

    class BasicBlock(nn.Module):
        def __init__(self, prefix):
            super().__init__()
            self.conv1 = _conv(plan, f"{prefix}_c1_W", pad=1)
            self.bn1 = _batch_norm(plan, f"{prefix}_bn1")
            self.conv2 = _conv(plan, f"{prefix}_c2_W", pad=1)
            self.bn2 = _batch_norm(plan, f"{prefix}_bn2")

        def forward(self, x):
            out = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(out)) + x)

    return nn.Sequential(
        _conv(plan, "conv0_W", pad=1), _batch_norm(plan, "bn0"), nn.ReLU(),
        BasicBlock("s1b1"), BasicBlock("s1b2"),
        _conv(plan, "s2b1_c1_W", stride=2, pad=1), _batch_norm(plan, "s2b1_bn1"), nn.ReLU(),
        _conv(plan, "s2b1_c2_W", pad=1))


def torch_model(plan, layers):
    """The network up to the visualized layer, with the plan's weights (copied), in
    evaluation mode, its params frozen (only the input is optimized)."""
    modules = []
    for layer in layers:
        if layer[0] == "conv":
            modules.append(_conv(plan, layer[1], layer[2], pad=layer[3]))
        elif layer[0] == "relu":
            modules.append(torch.nn.ReLU())
        elif layer[0] == "resnet14":
            modules.append(_resnet14_to_s2b1_c2(plan))
        else:
            modules.append(torch.nn.MaxPool2d(2))
    model = torch.nn.Sequential(*modules) if len(modules) > 1 else modules[0]
    model.eval()
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
    graph_file, layer, layers, steps = NETS[name]
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

    fns = {"flowgrad visualize": lambda: flowgrad_run(steps)}
    if torch is not None:
        model = torch_model(plan, layers)
        run, step = torch_loop(model, start)
        # Adam's first steps move a pixel by about lr whatever the size of its gradient, so a
        # pixel whose gradient is within rounding of zero (a ReLU at its kink; flowgrad's
        # folded batch norms round differently from PyTorch's) may go either way, and the
        # images drift apart from there: the fraction of pixels that differ says more than
        # the largest difference
        for k in (1, 5):
            ours, theirs = flowgrad_run(k), run(k)
            diff = np.abs(ours - theirs)
            print(f"  after {k} step(s) the images differ by at most {diff.max():.1e}; "
                  f"{np.mean(diff > 1e-3):.3%} of the pixels by more than 1e-3 (pixels move "
                  f"by {np.abs(theirs - start).max():.2f})")
        fns["pytorch loop"] = lambda: run(steps)
    samples = interleaved(fns, repeat=repeat)
    per_step = {k: [t / steps for t in v] for k, v in samples.items()}
    print(f"  per step, over a {steps}-step call:")
    show(per_step, "pytorch loop", f"{name}: visualize step", "<= 0.8")

    fns = {"flowgrad visualize(steps=1)": lambda: flowgrad_run(1),
           "flowgrad visualize(steps=2)": lambda: flowgrad_run(2)}
    if torch is not None:
        fns["pytorch: one more step"] = step
        fns["pytorch: set up + 1 step"] = lambda: run(1)
    # a ResNet-14 step takes tens of ms: one call per turn is already far above the clock's
    # resolution, and five would make the section minutes long
    samples = interleaved(fns, repeat=repeat * 3, inner=5 if steps > 16 else 1)
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
    parser.add_argument("--only", nargs="+", choices=list(NETS), help="run only these networks")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: the calling thread's CPU time (needs --threads 1)")
    args = parser.parse_args()
    print(thread_header(THREADS))
    if args.clock == "cpu":
        if THREADS != 1:
            parser.error("--clock cpu needs --threads 1")
        _timing.time = _ThreadClock
        print("clock: CPU time of the calling thread")
    for name in NETS:
        if not args.only or name in args.only:
            bench(name, args.repeat)


class _ThreadClock:
    """Stands in for the ``time`` module inside ``_timing`` under ``--clock cpu``."""

    perf_counter = staticmethod(time.thread_time)
    sleep = staticmethod(time.sleep)


if __name__ == "__main__":
    main()
