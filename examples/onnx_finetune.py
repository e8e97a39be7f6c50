"""Import an ONNX model, fine-tune it with flowgrad, export it back to ONNX.

    .venv/bin/python examples/onnx_finetune.py [--out runs/onnx_finetune] [--epochs 8]

1. Writes a small "pretrained" CNN for 8x8 digits as an ONNX file, the way exporters do it
   (Conv, BatchNormalization, MaxPool, a Shape -> Gather -> Concat -> Reshape chain that keeps
   the batch dynamic, Gemm with transB) — weights come from a fixed random seed, so it starts
   near chance, like a model trained on another task.
2. Imports it with ``flowgrad.load``: every float initializer is a trainable param, the batch
   norm statistics are state.  A cross-entropy loss is attached to the imported logits.
3. Fine-tunes on the embedded digits data with Adam (all imported params train; the batch norm
   running statistics update in train mode).
4. Exports the fine-tuned graph (logits only) to ONNX, checks it with ``onnx.checker``, runs
   it in onnxruntime (if installed) and compares with flowgrad.  Also writes the editable YAML
   + .npz form (``flowgrad convert``'s output) and reloads it.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flowgrad  # noqa: E402
from flowgrad.datasets import load_digits  # noqa: E402
from flowgrad.onnx.export import save_onnx  # noqa: E402
from flowgrad.onnx.to_yaml import write_yaml  # noqa: E402
from flowgrad.op import Spec  # noqa: E402
from flowgrad.optim import make_optimizer  # noqa: E402
from flowgrad.ops.losses import SoftmaxCrossEntropy  # noqa: E402


def pretrained_model() -> onnx.ModelProto:
    rng = np.random.default_rng(42)

    def weight(name, shape, scale):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32),
                                       name)
    inits = [
        weight("conv1.weight", (8, 1, 3, 3), 0.4), weight("conv1.bias", (8,), 0.1),
        weight("bn1.weight", (8,), 0.1), weight("bn1.bias", (8,), 0.1),
        numpy_helper.from_array(np.zeros(8, np.float32), "bn1.running_mean"),
        numpy_helper.from_array(np.ones(8, np.float32), "bn1.running_var"),
        weight("fc.weight", (10, 8 * 4 * 4), 0.1), weight("fc.bias", (10,), 0.1),
        numpy_helper.from_array(np.array([0], np.int64), "zero"),
        numpy_helper.from_array(np.array([-1], np.int64), "minus_one"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "conv1.weight", "conv1.bias"], ["/conv1/Conv_output_0"],
                         name="/conv1/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["/conv1/Conv_output_0", "bn1.weight",
                                                "bn1.bias", "bn1.running_mean",
                                                "bn1.running_var"],
                         ["/bn1/BatchNormalization_output_0"], name="/bn1/BatchNormalization"),
        helper.make_node("Relu", ["/bn1/BatchNormalization_output_0"], ["/relu/Relu_output_0"],
                         name="/relu/Relu"),
        helper.make_node("MaxPool", ["/relu/Relu_output_0"], ["/pool/MaxPool_output_0"],
                         name="/pool/MaxPool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Shape", ["/pool/MaxPool_output_0"], ["/Shape_output_0"], name="/Shape"),
        helper.make_node("Gather", ["/Shape_output_0", "zero"], ["/Gather_output_0"],
                         name="/Gather", axis=0),
        helper.make_node("Concat", ["/Gather_output_0", "minus_one"], ["/Concat_output_0"],
                         name="/Concat", axis=0),
        helper.make_node("Reshape", ["/pool/MaxPool_output_0", "/Concat_output_0"],
                         ["/Reshape_output_0"], name="/Reshape"),
        helper.make_node("Gemm", ["/Reshape_output_0", "fc.weight", "fc.bias"], ["logits"],
                         name="/fc/Gemm", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "digits_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="onnx_finetune example")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def with_loss(graph: flowgrad.Graph) -> flowgrad.Graph:
    """The imported graph plus a 'label' input and a 'loss' node on its logits."""
    g = graph.copy()
    g.add_input("label", Spec((None,), np.int64))
    g.add_op("loss", SoftmaxCrossEntropy())
    src, port = g.resolve(graph.outputs[0])
    g.connect(src, port, "loss", 0)
    g.connect("label", 0, "loss", 1)
    g.outputs.append("loss")
    return flowgrad.prepare(g)


def accuracy(plan, x, y, inp, logits) -> float:
    plan.eval()
    out = plan.forward({inp: x}, outputs=[logits], grad=False)[logits]
    return float((out.argmax(1) == y).mean())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/onnx_finetune")
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)

    src = os.path.join(args.out, "pretrained.onnx")
    onnx.save(pretrained_model(), src)
    graph = flowgrad.load(src)
    print(f"imported {src}: {graph}")
    print("  trainable params:", ", ".join(n for n in graph.params
                                          if graph.node(n)["trainable"]))
    print("  state:", ", ".join(n for n in graph.params if not graph.node(n)["trainable"]))

    x, y = load_digits()
    x = x.reshape(-1, 1, 8, 8)
    order = np.random.default_rng(0).permutation(len(x))
    train, test = order[:1400], order[1400:]
    (inp,) = graph.inputs
    logits = graph.outputs[0]

    plan = flowgrad.compile(with_loss(graph))
    print(f"test accuracy before fine-tuning: {accuracy(plan, x[test], y[test], inp, logits):.3f}")
    opt = make_optimizer("adam", {n: plan.params[n] for n in plan.trainable}, lr=0.01)
    rng = np.random.default_rng(1)
    for epoch in range(args.epochs):
        plan.train()
        losses = []
        for start in range(0, len(train), 32):
            idx = train[start:start + 32]
            out = plan.forward({inp: x[idx], "label": y[idx]}, outputs=["loss"])
            opt.step(plan.backward({"loss": 1.0}))
            losses.append(float(out["loss"]))
        rng.shuffle(train)
        print(f"epoch {epoch + 1}: loss {np.mean(losses):.4f}  test accuracy "
              f"{accuracy(plan, x[test], y[test], inp, logits):.3f}")

    tuned = plan.export_graph()
    dst = os.path.join(args.out, "finetuned.onnx")
    proto = save_onnx(tuned, dst, outputs=[logits])
    onnx.checker.check_model(proto, full_check=True)
    print(f"exported {dst} ({len(proto.graph.node)} nodes; onnx.checker passed)")
    plan.eval()
    ours = plan.forward({inp: x[test]}, outputs=[logits], grad=False)[logits]
    back = flowgrad.load(dst)
    again = flowgrad.compile(back).forward({back.inputs[0]: x[test]}, grad=False)
    print("flowgrad on the re-imported export: max |diff|",
          float(np.max(np.abs(again[back.outputs[0]] - ours))))
    try:
        import onnxruntime as ort
        session = ort.InferenceSession(proto.SerializeToString(),
                                       providers=["CPUExecutionProvider"])
        theirs = session.run(None, {session.get_inputs()[0].name: x[test]})[0]
        print("onnxruntime on the export: max |diff|", float(np.max(np.abs(theirs - ours))),
              " accuracy", float((theirs.argmax(1) == y[test]).mean()))
    except ImportError:
        print("(onnxruntime not installed: skipped running the export there)")
    yaml_path = os.path.join(args.out, "finetuned.yaml")
    write_yaml(back, yaml_path)
    as_yaml = flowgrad.load(yaml_path)
    again = flowgrad.compile(as_yaml).forward({as_yaml.inputs[0]: x[test]}, grad=False)
    print(f"wrote {yaml_path} (+ .npz); reloaded: max |diff|",
          float(np.max(np.abs(again[as_yaml.outputs[0]] - ours))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
