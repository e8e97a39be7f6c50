"""ResNet-14 (graphs/resnet14.yaml, CIFAR-sized) against PyTorch and onnxruntime.

    .venv/bin/python benchmarks/bench_resnet14.py [--threads N] [--repeat 15] [--only training]

1. Training step, batch 32, float32: forward, backward and a plain SGD update, batch norm in
   training mode, flowgrad vs an idiomatic PyTorch model (``torch.nn`` modules, NCHW) holding
   the same weights.  Before timing, the loss and every gradient are compared (the largest
   differences are printed).  Target: <= 1.0x PyTorch.
2. Inference, batch 32, evaluation mode: flowgrad vs onnxruntime running the graph exported by
   ``flowgrad.onnx.export_onnx`` (same weights, default optimizations, so batch norm is folded
   into the convolutions), PyTorch alongside for reference.  Outputs are compared first.

Every contender runs with the same thread count (``--threads N``, default 1; set before numpy,
torch and onnxruntime load), timed in alternation round by round (``_timing.interleaved``).  Each
row prints its median and range over the rounds, and each ratio the median and range of the
per-round ratios.  ``--clock cpu`` times the calling thread's CPU time instead of the wall clock
(only with ``--threads 1``, where every contender computes in the calling thread): on a machine
that other processes load, a contender waiting for a core is then not charged for the wait.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _timing import (emit_ratio, import_onnxruntime, import_torch, interleaved,  # noqa: E402
                     ort_options, set_threads, thread_header)

THREADS = set_threads()

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

import _timing  # noqa: E402

import numpy as np  # noqa: E402

from flowgrad.loaders.yaml_loader import load_yaml  # noqa: E402
from flowgrad.plan import Plan  # noqa: E402

torch = import_torch(THREADS)
onnxruntime = import_onnxruntime()

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH = 32
LR = 0.01
STAGES = [(16, 1), (32, 2), (64, 2)]      # (channels, stride of the first block)


def resnet14_plan() -> Plan:
    return Plan(load_yaml(os.path.join(ROOT, "graphs", "resnet14.yaml")))


def batch(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((BATCH, 3, 32, 32), dtype=np.float32)
    y = rng.integers(0, 10, BATCH).astype(np.int64)
    return x, y


def flowgrad_step(plan: Plan, x, y):
    trainable = plan.trainable

    def step():
        plan.forward({"x": x, "label": y}, outputs=("loss",))
        grads = plan.backward({"loss": 1.0})
        for name in trainable:
            plan.params[name] -= LR * grads[name]
    return step


# -- the PyTorch model ---------------------------------------------------------------------------

def torch_resnet14():
    nn = torch.nn

    class BasicBlock(nn.Module):
        def __init__(self, cin, c, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, c, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(c)
            self.conv2 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(c)
            self.shortcut = nn.Identity()
            if stride != 1 or cin != c:
                self.shortcut = nn.Sequential(nn.Conv2d(cin, c, 1, stride, bias=False),
                                              nn.BatchNorm2d(c))

        def forward(self, x):
            out = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))

    class ResNet14(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv0 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
            self.bn0 = nn.BatchNorm2d(16)
            blocks, cin = [], 16
            for c, stride in STAGES:
                blocks += [BasicBlock(cin, c, stride), BasicBlock(c, c, 1)]
                cin = c
            self.blocks = nn.Sequential(*blocks)
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            x = torch.relu(self.bn0(self.conv0(x)))
            x = self.blocks(x)
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

    return ResNet14()


def param_map(model) -> dict:
    """flowgrad param name -> (torch tensor, transpose?)."""
    out = {"conv0_W": (model.conv0.weight, False), "fc_W": (model.fc.weight, True),
           "fc_b": (model.fc.bias, False)}

    def bn(prefix, module):
        out.update({f"{prefix}_g": (module.weight, False), f"{prefix}_b": (module.bias, False),
                    f"{prefix}_m": (module.running_mean, False),
                    f"{prefix}_v": (module.running_var, False)})
    bn("bn0", model.bn0)
    for s in range(3):
        for b in range(2):
            block, p = model.blocks[2 * s + b], f"s{s + 1}b{b + 1}"
            out[f"{p}_c1_W"] = (block.conv1.weight, False)
            out[f"{p}_c2_W"] = (block.conv2.weight, False)
            bn(f"{p}_bn1", block.bn1)
            bn(f"{p}_bn2", block.bn2)
            if isinstance(block.shortcut, torch.nn.Sequential):
                out[f"{p}_sc_W"] = (block.shortcut[0].weight, False)
                bn(f"{p}_scbn", block.shortcut[1])
    return out


def torch_model(params: dict):
    model = torch_resnet14()
    mapping = param_map(model)
    assert set(mapping) == set(params), set(mapping) ^ set(params)
    with torch.no_grad():
        for name, (tensor, transpose) in mapping.items():
            value = params[name].T if transpose else params[name]
            tensor.copy_(torch.from_numpy(np.ascontiguousarray(value)))
    return model


def torch_step(model, x, y):
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(model(xt), yt).backward()
        opt.step()
    return step


def check_training(plan: Plan, model, x, y) -> None:
    """The loss and every gradient of one step, flowgrad against PyTorch (before any update)."""
    loss = float(plan.forward({"x": x, "label": y}, outputs=("loss",))["loss"])
    grads = plan.backward({"loss": 1.0})
    model.zero_grad(set_to_none=True)
    out = torch.nn.CrossEntropyLoss()(model(torch.from_numpy(x)), torch.from_numpy(y))
    out.backward()
    theirs = float(out.detach())
    worst, where, largest = 0.0, "", 0.0
    for name, (tensor, transpose) in param_map(model).items():
        if name not in grads:
            continue
        g = tensor.grad.numpy()
        g = g.T if transpose else g
        largest = max(largest, float(np.abs(grads[name] - g).max()))
        diff = float(np.abs(grads[name] - g).max() / max(1e-12, float(np.abs(g).max())))
        if diff > worst:
            worst, where = diff, name
    print(f"  check: loss {loss:.6f} vs PyTorch {theirs:.6f} (diff {abs(loss - theirs):.1e}); "
          f"gradients: largest difference {largest:.1e}, relative to the gradient's largest "
          f"entry at most {worst:.1e} ({where}: a sum over the batch with cancellation)")
    assert abs(loss - theirs) < 1e-4 and worst < 1e-2, "flowgrad and PyTorch disagree"


# -- reporting ---------------------------------------------------------------------------------

def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:8.2f} ms"


def report_range(samples: dict, baseline: str | None, targets: dict | None = None) -> None:
    """Each contender's median and range; each ratio's per-round median and range (also as a
    RATIO line)."""
    for name, times in samples.items():
        line = (f"  {name:<32} {_ms(statistics.median(times))}  "
                f"[{_ms(min(times)).strip()} .. {_ms(max(times)).strip()}]")
        if baseline and name != baseline and baseline in samples:
            ratios = [a / b for a, b in zip(times, samples[baseline])]
            line += (f"   {statistics.median(ratios):.2f}x {baseline} "
                     f"[{min(ratios):.2f} .. {max(ratios):.2f}]")
        print(line)
    if baseline and baseline in samples:
        for name, times in samples.items():
            if name != baseline:
                ratios = [a / b for a, b in zip(times, samples[baseline])]
                emit_ratio(name, statistics.median(ratios), baseline,
                           (targets or {}).get(name))


# -- sections ----------------------------------------------------------------------------------

def bench_training(repeat: int) -> None:
    x, y = batch()
    plan = resnet14_plan().train()
    print(f"ResNet-14 training step, batch {BATCH}, float32, SGD, batch norm in training mode "
          f"({THREADS} threads):")
    fns = {"flowgrad resnet14 train step": None}
    if torch is not None:
        model = torch_model(plan.params).train()
        check_training(plan, model, x, y)
        fns["pytorch resnet14 train step"] = torch_step(model, x, y)
    fns["flowgrad resnet14 train step"] = flowgrad_step(plan, x, y)
    report_range(interleaved(fns, repeat),
                 "pytorch resnet14 train step" if torch is not None else None,
                 {"flowgrad resnet14 train step": "<= 1.0"})


def bench_inference(repeat: int) -> None:
    from flowgrad.onnx.export import export_onnx
    x, _ = batch(1)
    plan = resnet14_plan()
    rng = np.random.default_rng(2)          # non-trivial running statistics
    for name in plan.params:
        if name.endswith("_m"):
            plan.params[name][...] = rng.standard_normal(plan.params[name].shape) * 0.1
        elif name.endswith("_v"):
            plan.params[name][...] = rng.uniform(0.5, 1.5, plan.params[name].shape)
    plan.eval()
    ours = plan.forward({"x": x}, outputs=("logits",), grad=False)["logits"]
    print(f"ResNet-14 inference, batch {BATCH}, evaluation mode ({THREADS} threads):")
    fns = {"flowgrad resnet14 inference":
           lambda: plan.forward({"x": x}, outputs=("logits",), grad=False)}
    if onnxruntime is not None:
        proto = export_onnx(plan.export_graph(), outputs=["logits"])
        session = onnxruntime.InferenceSession(proto.SerializeToString(), ort_options(THREADS),
                                               providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x}
        theirs = session.run(None, feed)[0]
        print(f"  check: largest logit difference to onnxruntime "
              f"{float(np.abs(ours - theirs).max()):.1e}")
        assert np.allclose(ours, theirs, rtol=1e-3, atol=1e-3), "outputs differ from onnxruntime"
        fns["onnxruntime resnet14 inference"] = lambda: session.run(None, feed)
    if torch is not None:
        model = torch_model(plan.params).eval()
        xt = torch.from_numpy(x)

        def infer():
            with torch.no_grad():
                model(xt)
        fns["pytorch resnet14 inference"] = infer
    report_range(interleaved(fns, repeat),
                 "onnxruntime resnet14 inference" if onnxruntime is not None else None,
                 {"flowgrad resnet14 inference": "<= 1.3"})


class _ThreadClock:
    """Stands in for the ``time`` module inside ``_timing`` under ``--clock cpu``."""

    perf_counter = staticmethod(time.thread_time)
    sleep = staticmethod(time.sleep)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15, help="timed samples per row")
    parser.add_argument("--only", nargs="+", choices=("training", "inference"),
                        help="run only these sections")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: the calling thread's CPU time (needs --threads 1)")
    args = parser.parse_args()
    print("bench_resnet14: " + thread_header(THREADS))
    if args.clock == "cpu":
        if THREADS != 1:
            parser.error("--clock cpu needs --threads 1")
        _timing.time = _ThreadClock
        print("clock: CPU time of the calling thread")
    failed = []
    for name, run in (("training", bench_training), ("inference", bench_inference)):
        if args.only and name not in args.only:
            continue
        try:
            run(args.repeat)
        except Exception:                   # report, and go on with the other section
            failed.append(name)
            print(f"FAILED: section {name}", flush=True)
            traceback.print_exc()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
