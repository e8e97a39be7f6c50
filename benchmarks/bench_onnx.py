"""ONNX benchmarks: inference time vs onnxruntime, and import + compile time.

    .venv/bin/python benchmarks/bench_onnx.py [--threads N] [--repeat 10]

* light ResNet-50 (from onnx's test data) at batch 1 and batch 8: flowgrad's forward (no
  backward state kept) vs an onnxruntime CPU session, run alternately; medians and the
  median of the per-round ratios.
  Its constant weights are replaced by random ones (outputs are then worth comparing).
  The light model fixes batch 1 (input dim and a Reshape to [1, 2048]); for batch 8 both
  runtimes get the same edited copy with a symbolic batch and a Reshape to [-1, 2048].
* DenseNet-121 (about 1,700 ONNX nodes): ``flowgrad.load`` + ``flowgrad.compile``, median.
Outputs are compared (max abs difference) so a fast wrong answer cannot pass unnoticed.

The models come with the onnx package (``onnx/backend/test/data/light``, read through
``flowgrad.onnx.conformance.DATA_DIR``); nothing is downloaded.  Both runtimes get the same
thread count: ``--threads N`` (default 1, 0 = all cores), set before numpy and onnxruntime load;
the header prints what each reports.  Without onnxruntime the ResNet-50 rows are skipped.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _timing import (emit_ratio, emit_value, import_onnxruntime, interleaved,  # noqa: E402
                     median_time, ort_options, set_threads, thread_header)
from _timing import ratio as per_round_ratio  # noqa: E402

THREADS = set_threads()

import argparse  # noqa: E402
import statistics  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import numpy_helper  # noqa: E402

import flowgrad  # noqa: E402
from flowgrad.onnx.conformance import DATA_DIR  # noqa: E402

ort = import_onnxruntime()


def light(name: str) -> onnx.ModelProto:
    return onnx.load(os.path.join(DATA_DIR, "light", f"light_{name}.onnx"))


def with_random_weights(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """The light models build every weight with ConstantOfShape(0.02), so their outputs are
    uniform and comparing them proves little: replace those by random initializers — He-normal
    weights (2-d and up), and 1-d vectors in [0.5, 1.5] (batch-norm scales and variances stay
    positive).  Same compute, same shapes."""
    rng = np.random.default_rng(seed)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {i.name: numpy_helper.to_array(i) for i in out.graph.initializer}
    keep = []
    for node in out.graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in inits:
            shape = tuple(int(d) for d in inits[node.input[0]])
            if len(shape) >= 2:
                fan_in = int(np.prod(shape[1:]))
                value = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
            else:
                value = rng.uniform(0.5, 1.5, shape)
            value = value.astype(np.float32)
            out.graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
        else:
            keep.append(node)
    del out.graph.node[:]
    out.graph.node.extend(keep)
    # the softmax saturates to one-hot: also output the logits, to compare them
    softmax = [n for n in out.graph.node if n.op_type == "Softmax"]
    if softmax:
        out.graph.output.append(onnx.helper.make_tensor_value_info(
            softmax[-1].input[0], onnx.TensorProto.FLOAT, None))
    return out


def with_symbolic_batch(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose inputs/outputs have batch dim 'N' and whose Reshapes keep the batch."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {i.name: i for i in out.graph.initializer}
    for vi in list(out.graph.input) + list(out.graph.output):
        if vi.name not in inits and vi.type.tensor_type.shape.dim:
            vi.type.tensor_type.shape.dim[0].dim_param = "N"
    for node in out.graph.node:
        if node.op_type == "Reshape" and node.input[1] in inits:
            shape = numpy_helper.to_array(inits[node.input[1]]).copy()
            if shape[0] == 1:
                shape[0] = -1
                inits[node.input[1]].CopyFrom(numpy_helper.from_array(shape, node.input[1]))
    return out


def bench_resnet(batch: int, repeat: int) -> None:
    if ort is None:
        return
    model = with_random_weights(light("resnet50"))
    if batch != 1:
        model = with_symbolic_batch(model)
    graph = flowgrad.load(model)
    plan = flowgrad.compile(graph).freeze()     # inference, as an onnxruntime session is frozen
    (inp,) = graph.inputs
    x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32)
    # (ort_options also quiets the warnings about the light models' unused initializers)
    session = ort.InferenceSession(model.SerializeToString(), ort_options(THREADS),
                                   providers=["CPUExecutionProvider"])
    ort_input = session.get_inputs()[0].name
    ours = plan.forward({inp: x}, grad=False)[graph.outputs[-1]]
    theirs = session.run(None, {ort_input: x})[-1]
    samples = interleaved({"flowgrad": lambda: plan.forward({inp: x}, grad=False),
                           "onnxruntime": lambda: session.run(None, {ort_input: x})}, repeat)
    t_fg, t_ort = (statistics.median(samples[k]) for k in ("flowgrad", "onnxruntime"))
    ratio = per_round_ratio(samples, "flowgrad", "onnxruntime")
    print(f"resnet50 batch {batch}: flowgrad {t_fg * 1e3:8.1f} ms   onnxruntime "
          f"{t_ort * 1e3:8.1f} ms   ratio {ratio:5.2f}x   (logits: max |diff| "
          f"{float(np.max(np.abs(ours - theirs))):.2g} of max |logit| "
          f"{float(np.max(np.abs(theirs))):.3g})")
    emit_ratio(f"flowgrad resnet50 inference batch {batch}", ratio, "onnxruntime", "<= 1.3")


def bench_import(name: str, repeat: int) -> None:
    path = os.path.join(DATA_DIR, "light", f"light_{name}.onnx")
    nodes = len(onnx.load(path).graph.node)

    def load_and_compile():
        flowgrad.compile(flowgrad.load(path))
    t = median_time(load_and_compile, repeat, warmup=1)
    print(f"{name}: import + compile {t:.2f} s ({nodes} ONNX nodes)")
    emit_value(f"{name} import + compile", t, "s", "< 2")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    if not os.path.isdir(os.path.join(DATA_DIR, "light")):
        sys.exit(f"bench_onnx: the light models of onnx's test data are not in {DATA_DIR}")
    print("bench_onnx: " + thread_header(THREADS))
    flowgrad.default_registry()                     # build the op registry outside the timings
    bench_import("densenet121", max(3, args.repeat // 3))
    for batch in (1, 8):
        bench_resnet(batch, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
