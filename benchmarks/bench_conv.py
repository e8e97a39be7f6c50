"""Convolution benchmarks, every ratio measured against its peer in the same process.

    .venv/bin/python benchmarks/bench_conv.py [--threads N] [--repeat 20] [--keep-freed-memory]

1. LeNet (graphs/lenet.yaml) training step, batch 64, float32, plain SGD: flowgrad vs PyTorch
   CPU with identical weights (target <= 0.8x).
2. LeNet inference, batch 64: flowgrad vs onnxruntime running the same network, built with
   onnx.helper from the same weights (target <= 1.3x); PyTorch alongside for reference.
3. Peak memory of LeNet training (batch 64, SGD), each contender in a fresh subprocess that
   loads only its own runtime: how far the process's resident set (RSS) rises above its state
   just before the first step, over 20 steps, the first included, and the process's whole peak
   RSS (imports included) (:func:`memory_child`).  Not tracemalloc: it sees numpy's allocations
   only, not PyTorch's.
4. One ResNet-50-sized convolution forward (batch 8, 56x56, 64->64, 3x3, pad 1) as a one-node
   flowgrad graph: achieved GFLOP/s next to this machine's float32 matrix-multiply rate (2048^2
   matmul) in the same run, and against PyTorch's conv2d.

Every contender runs with the same thread count: ``--threads N`` (default 1, 0 = all cores), set
before numpy, torch and onnxruntime load; the header prints what each runtime reports.
Contenders are timed in alternation within each round (see ``_timing.interleaved``).  PyTorch
and onnxruntime come with the ``bench`` extra; rows whose peer is missing are skipped.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _timing import (emit_ratio, emit_value, import_onnxruntime, import_torch,  # noqa: E402
                     interleaved, ort_options, report, set_threads, thread_header)

THREADS = set_threads()

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import traceback  # noqa: E402

import numpy as np  # noqa: E402

if "--memory-child" not in sys.argv or "flowgrad" in sys.argv:   # (not in PyTorch's child)
    from flowgrad.loaders.yaml_loader import load_yaml
    from flowgrad.plan import Plan

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH = 64
LR = 0.01
MEMORY_STEPS = 20

if "--memory-child" in sys.argv:     # a fresh process measuring one contender's memory:
    torch = import_torch(THREADS) if "pytorch" in sys.argv else None  # load only its runtime
    onnxruntime = None
else:
    torch = import_torch(THREADS)
    onnxruntime = import_onnxruntime()


def lenet_plan() -> "Plan":
    return Plan(load_yaml(os.path.join(ROOT, "graphs", "lenet.yaml")))


def lenet_batch(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.random((BATCH, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, BATCH).astype(np.int64)
    return x, y


def flowgrad_step(plan: "Plan", x, y):
    trainable = plan.trainable

    def step():
        plan.forward({"x": x, "label": y}, outputs=("loss",))
        grads = plan.backward({"loss": 1.0})
        for name in trainable:
            plan.params[name] -= LR * grads[name]
    return step


def torch_lenet(params: dict):
    nn = torch.nn
    model = nn.Sequential(
        nn.Conv2d(1, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(1568, 128), nn.ReLU(), nn.Linear(128, 10))
    with torch.no_grad():
        for module, (w, b) in zip([model[0], model[3], model[7], model[9]],
                                  [("K1", "c1"), ("K2", "c2"), ("W3", "b3"), ("W4", "b4")]):
            weight = params[w] if module.weight.ndim == 4 else params[w].T
            module.weight.copy_(torch.from_numpy(np.array(weight)))     # (writable copies:
            module.bias.copy_(torch.from_numpy(np.array(params[b])))    # a frozen plan's are not)
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


def lenet_onnx(params: dict) -> bytes:
    from onnx import TensorProto, helper, numpy_helper
    inits = [numpy_helper.from_array(np.ascontiguousarray(v), k) for k, v in params.items()]
    inits.append(numpy_helper.from_array(np.array([-1, 1568], np.int64), "flat_shape"))
    nodes = [
        helper.make_node("Conv", ["x", "K1", "c1"], ["conv1"], pads=[2, 2, 2, 2]),
        helper.make_node("Relu", ["conv1"], ["h1"]),
        helper.make_node("MaxPool", ["h1"], ["pool1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["pool1", "K2", "c2"], ["conv2"], pads=[2, 2, 2, 2]),
        helper.make_node("Relu", ["conv2"], ["h2"]),
        helper.make_node("MaxPool", ["h2"], ["pool2"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Reshape", ["pool2", "flat_shape"], ["flat"]),
        helper.make_node("Gemm", ["flat", "W3", "b3"], ["fc3"]),
        helper.make_node("Relu", ["fc3"], ["h3"]),
        helper.make_node("Gemm", ["h3", "W4", "b4"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "lenet", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def ort_session(model: bytes):
    return onnxruntime.InferenceSession(model, ort_options(THREADS),
                                        providers=["CPUExecutionProvider"])


def bench_training(repeat: int) -> None:
    x, y = lenet_batch()
    plan = lenet_plan()
    fns = {"flowgrad lenet train step": flowgrad_step(plan, x, y)}
    if torch is not None:
        fns["pytorch lenet train step"] = torch_step(torch_lenet(lenet_plan().params), x, y)
    print(f"LeNet training step, batch {BATCH}, float32, SGD ({THREADS} threads):")
    report(interleaved(fns, repeat), "pytorch lenet train step" if torch is not None else None,
           targets={"flowgrad lenet train step": "<= 0.8"})


def bench_inference(repeat: int) -> None:
    rng = np.random.default_rng(1)
    x = rng.random((BATCH, 1, 28, 28), dtype=np.float32)
    plan = lenet_plan().freeze()            # inference, as an onnxruntime session is frozen
    ours = plan.forward({"x": x}, outputs=("logits",), grad=False)["logits"]
    fns = {"flowgrad lenet inference":
           lambda: plan.forward({"x": x}, outputs=("logits",), grad=False)}
    if onnxruntime is not None:
        session = ort_session(lenet_onnx(plan.params))
        theirs = session.run(None, {"x": x})[0]
        assert np.allclose(ours, theirs, rtol=1e-3, atol=1e-4), "outputs differ from onnxruntime"
        fns["onnxruntime lenet inference"] = lambda: session.run(None, {"x": x})
    if torch is not None:
        model = torch_lenet(plan.params).eval()
        xt = torch.from_numpy(x)

        def infer():
            with torch.no_grad():
                model(xt)
        fns["pytorch lenet inference"] = infer
    print(f"LeNet inference, batch {BATCH} ({THREADS} threads):")
    report(interleaved(fns, repeat), "onnxruntime lenet inference" if onnxruntime else None,
           targets={"flowgrad lenet inference": "<= 1.3"})


# -- peak memory of training -------------------------------------------------------------------

def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory_child(contender: str, weights: str) -> None:
    """Run in a fresh process: build LeNet and a batch for ``contender``, then report (as one
    JSON line) how far the peak RSS rises above the RSS just before the first training step,
    over MEMORY_STEPS steps (first one included, so the gradients, optimizer buffers and
    any workspace a runtime keeps count), and over steps 2..n alone (the per-step transient).
    RSS counts every page the process touches — numpy's and torch's heaps, BLAS/oneDNN
    workspaces, thread stacks, code paged in on the first call — so both contenders are measured
    the same way; the imports and the weights/data are in the baseline, not the figure."""
    x, y = lenet_batch()
    if contender == "flowgrad":
        plan = lenet_plan()
        plan.load_state_dict(np.load(weights))
        step = flowgrad_step(plan, x, y)
    else:
        step = torch_step(torch_lenet(dict(np.load(weights))), x, y)
    import gc
    gc.collect()
    setup_peak = _status_kb("VmHWM")
    resettable = _reset_peak()
    ready = _status_kb("VmRSS")
    modules = set(sys.modules)
    step()
    loaded = sorted(m for m in set(sys.modules) - modules if "." not in m and m[0] != "_")
    first_peak = _status_kb("VmHWM")
    after_first = _status_kb("VmRSS")
    _reset_peak()
    for _ in range(MEMORY_STEPS - 1):
        step()
    warm_peak = _status_kb("VmHWM")
    print(json.dumps({
        "contender": contender, "resettable": resettable, "setup_peak_kb": setup_peak,
        "ready_kb": ready, "train_peak_kb": max(first_peak, warm_peak),
        "process_peak_kb": max(setup_peak, first_peak, warm_peak),
        "warm_rest_kb": after_first, "warm_peak_kb": warm_peak, "first_step_imports": loaded}))


def bench_memory() -> None:
    import tempfile
    contenders = ["flowgrad"] + (["pytorch"] if torch is not None else [])
    results = {}
    tmp = tempfile.TemporaryDirectory()
    weights = os.path.join(tmp.name, "lenet.npz")
    np.savez(weights, **lenet_plan().params)
    for contender in contenders:
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--threads",
                               str(THREADS), "--memory-child", contender, weights],
                              capture_output=True, text=True, env=os.environ.copy())
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            raise RuntimeError(f"the {contender} memory subprocess failed")
        results[contender] = json.loads(proc.stdout.strip().splitlines()[-1])
    mb = 1 / 1024
    print(f"LeNet training peak memory, batch {BATCH}, SGD, {MEMORY_STEPS} steps, a fresh process "
          f"each loading only its own runtime ({THREADS} threads): peak RSS rise above the "
          "ready state (imports, model, batch loaded), and the whole process's peak RSS")
    if not all(r["resettable"] for r in results.values()):
        print("  (peak RSS mark not resettable here: the rise is measured from the setup peak)")
    train, warm = {}, {}
    for c, r in results.items():
        base = r["ready_kb"] if r["resettable"] else max(r["ready_kb"], r["setup_peak_kb"])
        train[c] = (r["train_peak_kb"] - base) * mb
        warm[c] = (r["warm_peak_kb"] - r["warm_rest_kb"]) * mb
        print(f"  {c:<10} training rise {train[c]:7.1f} MB   per-step transient (steps 2..) "
              f"{warm[c]:7.1f} MB   ready {r['ready_kb'] * mb:6.0f} MB   process peak "
              f"{r['process_peak_kb'] * mb:6.0f} MB")
        if r["first_step_imports"]:
            print(f"  {'':<10} (modules the first step imported, their memory in the rise: "
                  f"{', '.join(r['first_step_imports'])})")
        emit_value(f"{c} lenet training peak RSS rise", train[c], "MB")
        emit_value(f"{c} lenet warm step transient RSS", warm[c], "MB")
        emit_value(f"{c} lenet training process peak RSS", r["process_peak_kb"] * mb, "MB")
    tmp.cleanup()
    if "pytorch" in train and train["pytorch"] > 0:
        emit_ratio("flowgrad lenet training peak RSS rise", train["flowgrad"] / train["pytorch"],
                   "pytorch lenet training peak RSS rise", "no regression")
        emit_ratio("flowgrad lenet training process peak RSS",
                   results["flowgrad"]["process_peak_kb"] / results["pytorch"]["process_peak_kb"],
                   "pytorch lenet training process peak RSS", "no regression")


# -- one ResNet-50-sized convolution ------------------------------------------------------------

CONV_YAML = """\
flowgrad: 1
name: conv
inputs:
  x: {shape: [64, 56, 56]}
params:
  W: {shape: [64, 64, 3, 3], init: {kind: zeros}}
  b: {shape: [64], init: {kind: zeros}}
nodes:
  y: {op: conv, in: {x: x, W: W, b: b}, pads: [1, 1, 1, 1]}
outputs: [y]
"""


def bench_resnet_conv(repeat: int) -> None:
    rng = np.random.default_rng(2)
    n, c, hw, o = 8, 64, 56, 64
    x = rng.standard_normal((n, c, hw, hw), dtype=np.float32)
    W = rng.standard_normal((o, c, 3, 3), dtype=np.float32)
    b = rng.standard_normal(o, dtype=np.float32)
    flops = 2 * n * o * c * 9 * hw * hw
    plan = Plan(load_yaml("conv.yaml", text=CONV_YAML))
    plan.load_state_dict({"W": W, "b": b})
    size = 2048
    A = rng.standard_normal((size, size), dtype=np.float32)
    B = rng.standard_normal((size, size), dtype=np.float32)
    fns = {"float32 matmul 2048^2": lambda: A @ B,
           "flowgrad conv forward": lambda: plan.forward({"x": x}, grad=False)}
    flops_of = {"float32 matmul 2048^2": 2 * size ** 3, "flowgrad conv forward": flops}
    if torch is not None:
        xt, wt, bt = map(torch.from_numpy, (x, W, b))

        def tconv():
            with torch.no_grad():
                torch.nn.functional.conv2d(xt, wt, bt, padding=1)
        fns["pytorch conv forward"] = tconv
        flops_of["pytorch conv forward"] = flops
        ours = plan.forward({"x": x}, grad=False)["y"]
        with torch.no_grad():
            theirs = torch.nn.functional.conv2d(xt, wt, bt, padding=1).numpy()
        assert np.allclose(ours, theirs, rtol=1e-3, atol=1e-2), "conv differs from PyTorch"
    samples = interleaved(fns, repeat)
    print(f"ResNet-50-sized conv forward: batch {n}, {hw}x{hw}, {c}->{o}, 3x3, pad 1 "
          f"({flops / 1e9:.2f} GFLOP, {THREADS} threads):")
    for name, times in samples.items():
        t = statistics.median(times)
        print(f"  {name:<34} {t * 1e3:9.2f} ms  {flops_of[name] / t / 1e9:7.1f} GFLOP/s")
    # per round: (flops / t_conv) / (flops_mm / t_mm)
    rate = statistics.median(flops / flops_of["float32 matmul 2048^2"] * m / f for f, m in
                             zip(samples["flowgrad conv forward"],
                                 samples["float32 matmul 2048^2"]))
    print(f"  flowgrad conv rate / matmul rate: {rate:.2f} (per-round median)")
    emit_ratio("flowgrad conv forward GFLOP/s over matmul GFLOP/s", rate,
               "float32 matmul 2048^2", ">= 0.5")
    if torch is not None:
        r = statistics.median(f / t for f, t in zip(samples["flowgrad conv forward"],
                                                     samples["pytorch conv forward"]))
        print(f"  flowgrad conv time / pytorch conv time: {r:.2f} (per-round median)")
        emit_ratio("flowgrad resnet conv forward", r, "pytorch conv forward")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="timed samples per row")
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="rerun with glibc malloc told to keep freed memory (no mmap / trim "
                             "of large blocks), removing the page-fault cost of fresh arrays "
                             "for flowgrad and its peers alike")
    parser.add_argument("--memory-child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--only", nargs="+", choices=("training", "inference", "memory", "conv"),
                        help="run only these sections")
    args = parser.parse_args()
    if args.memory_child:
        memory_child(*args.memory_child)
        return 0
    if args.keep_freed_memory and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(1 << 30),
                   MALLOC_TRIM_THRESHOLD_=str(1 << 30))
        os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), "--threads",
                                   str(THREADS)] + sys.argv[1:], env)
    print("bench_conv: " + thread_header(THREADS))
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        print("(glibc malloc keeps freed memory: MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_)")
    sections = {"training": lambda: bench_training(args.repeat),
                "inference": lambda: bench_inference(args.repeat),
                "memory": bench_memory,
                "conv": lambda: bench_resnet_conv(args.repeat)}
    failed = []
    for name, run in sections.items():
        if args.only and name not in args.only:
            continue
        try:
            run()
        except Exception:                   # report, and go on with the other sections
            failed.append(name)
            print(f"FAILED: section {name}", flush=True)
            traceback.print_exc()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
