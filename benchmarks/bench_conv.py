"""Issue 3's convolution benchmarks, every ratio measured in the same run.

    .venv/bin/python benchmarks/bench_conv.py [--repeat 20]

1. LeNet (graphs/lenet.yaml) training step, batch 64, float32, plain SGD: flowgrad vs PyTorch
   CPU with identical weights and the same thread count (2).
2. LeNet inference, batch 64: flowgrad vs onnxruntime running the same network (built with
   onnx.helper from the same weights).
3. One ResNet-50-sized convolution forward (batch 8, 56×56, 64→64, 3×3, pad 1): achieved GFLOP/s
   next to this machine's float32 matrix-multiply GFLOP/s (2048² matmul) in the same run.

Contenders are timed in alternation within each round (see :func:`interleaved`), so that on a
shared machine they see the same load and their ratio stays meaningful.  PyTorch and onnxruntime
come with the ``bench`` extra; rows whose peer is missing are skipped.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

import numpy as np

from flowgrad.loaders.yaml_loader import load_yaml
from flowgrad.scheduler import Plan

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import interleaved, report  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THREADS = 2
BATCH = 64
LR = 0.01

try:
    import torch
    torch.set_num_threads(THREADS)
except ImportError:
    torch = None
try:
    import onnxruntime
except ImportError:
    onnxruntime = None


def lenet_plan() -> Plan:
    return Plan(load_yaml(os.path.join(ROOT, "graphs", "lenet.yaml")))


def flowgrad_step(plan: Plan, x, y):
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
            module.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight)))
            module.bias.copy_(torch.from_numpy(params[b]))
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
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def bench_training(repeat: int) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((BATCH, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, BATCH).astype(np.int64)
    plan = lenet_plan()
    fns = {"flowgrad lenet train step": flowgrad_step(plan, x, y)}
    if torch is not None:
        fns["pytorch lenet train step"] = torch_step(torch_lenet(lenet_plan().params), x, y)
    print(f"LeNet training step, batch {BATCH}, float32, SGD ({THREADS} threads):")
    report(interleaved(fns, repeat), "pytorch lenet train step" if torch is not None else None)


def bench_inference(repeat: int) -> None:
    rng = np.random.default_rng(1)
    x = rng.random((BATCH, 1, 28, 28), dtype=np.float32)
    plan = lenet_plan()
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
    report(interleaved(fns, repeat), "onnxruntime lenet inference" if onnxruntime else None)


def bench_resnet_conv(repeat: int) -> None:
    from flowgrad.op import Context
    from flowgrad.ops.conv import Conv
    rng = np.random.default_rng(2)
    n, c, hw, o = 8, 64, 56, 64
    x = rng.standard_normal((n, c, hw, hw), dtype=np.float32)
    W = rng.standard_normal((o, c, 3, 3), dtype=np.float32)
    b = rng.standard_normal(o, dtype=np.float32)
    flops = 2 * n * o * c * 9 * hw * hw
    op = Conv(pads=[1, 1, 1, 1])
    size = 2048
    A = rng.standard_normal((size, size), dtype=np.float32)
    B = rng.standard_normal((size, size), dtype=np.float32)
    fns = {"float32 matmul 2048^2": lambda: A @ B,
           "flowgrad conv forward": lambda: op.forward(Context(grad_enabled=False), x, W, b)}
    flops_of = {"float32 matmul 2048^2": 2 * size ** 3, "flowgrad conv forward": flops}
    if torch is not None:
        xt, wt, bt = map(torch.from_numpy, (x, W, b))

        def tconv():
            with torch.no_grad():
                torch.nn.functional.conv2d(xt, wt, bt, padding=1)
        fns["pytorch conv forward"] = tconv
        flops_of["pytorch conv forward"] = flops
    medians = {name: statistics.median(t) for name, t in interleaved(fns, repeat).items()}
    rates = {name: flops_of[name] / t / 1e9 for name, t in medians.items()}
    print(f"ResNet-50-sized conv forward: batch {n}, {hw}x{hw}, {c}->{o}, 3x3, pad 1 "
          f"({flops / 1e9:.2f} GFLOP):")
    for name, t in medians.items():
        print(f"  {name:<34} {t * 1e3:9.2f} ms  {rates[name]:7.1f} GFLOP/s")
    ratio = rates["flowgrad conv forward"] / rates["float32 matmul 2048^2"]
    print(f"  flowgrad conv rate / matmul rate: {ratio:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="timed samples per row")
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="rerun with glibc malloc told to keep freed memory (no mmap / trim "
                             "of large blocks), removing the page-fault cost of fresh arrays "
                             "for flowgrad and its peers alike")
    args = parser.parse_args()
    if args.keep_freed_memory and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(1 << 30),
                   MALLOC_TRIM_THRESHOLD_=str(1 << 30))
        os.execve(sys.executable, [sys.executable] + sys.argv, env)
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        print("(glibc malloc keeps freed memory: MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_)")
    bench_training(args.repeat)
    bench_inference(args.repeat)
    bench_resnet_conv(args.repeat)


if __name__ == "__main__":
    main()
