"""Issue 4's transformer benchmark: a pre-LN encoder block, flowgrad against PyTorch and onnxruntime.

    .venv/bin/python benchmarks/bench_transformer.py [--threads N] [--repeat 20]

The block is ``graphs/transformer_block.yaml`` (model width 128, 4 heads, MLP 512 with exact
GELU) on a batch of 16 sequences of 64 tokens, float32:

1. Training step, forward + backward to every parameter's gradient (no optimizer), loss = mean
   squared error to a target: flowgrad vs ``torch.nn.TransformerEncoderLayer(128, 4, 512,
   dropout=0, activation="gelu", batch_first=True, norm_first=True)`` holding the same weights.
   Target: <= 1.0x PyTorch.
2. Inference of the block's output: flowgrad (``grad=False``, the plan frozen, its fused
   program) vs onnxruntime running the ONNX export of the same graph (default graph
   optimizations), target <= 1.5x, and vs the PyTorch module under ``torch.inference_mode``.

Before timing, outputs and gradients are compared with PyTorch's (and onnxruntime's) and the
largest differences printed, so a fast wrong answer cannot pass unnoticed.  The weights are
random, layer-norm scales and biases included, so none of them is trivially 1 or 0.

Contenders run in alternation within each round (:func:`_timing.interleaved`) and every
runtime has the same thread count (``--threads N``, default 1, set before numpy, numba, torch
and onnxruntime load).  Printed: each median, the median of the per-round ratios, and the
``RATIO:`` lines ``run_all.py`` collects.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _timing import (import_onnxruntime, import_torch, interleaved, ort_options,  # noqa: E402
                     report, set_threads, thread_header)

THREADS = set_threads()

import argparse  # noqa: E402
import tempfile  # noqa: E402

import numpy as np  # noqa: E402

import flowgrad  # noqa: E402
from flowgrad.loaders.yaml_loader import load_yaml  # noqa: E402
from flowgrad.plan import Plan  # noqa: E402

torch = import_torch(THREADS)
ort = import_onnxruntime()

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRAPH = os.path.join(ROOT, "graphs", "transformer_block.yaml")
BATCH, T, D, HEADS, HIDDEN = 16, 64, 128, 4, 512


def make_plan(seed: int = 0) -> Plan:
    """The block with random weights: glorot-scaled matrices, and layer-norm scales and all
    biases drawn too (the YAML's ones and zeros would leave half the gradients untested)."""
    plan = Plan(load_yaml(GRAPH))
    rng = np.random.default_rng(seed)
    values = {}
    for name, value in plan.params.items():
        if value.ndim == 2:
            limit = np.sqrt(6.0 / sum(value.shape))
            values[name] = rng.uniform(-limit, limit, value.shape)
        elif name.endswith("_scale"):
            values[name] = rng.uniform(0.5, 1.5, value.shape)
        else:
            values[name] = rng.normal(0.0, 0.1, value.shape)
    plan.load_state_dict(values)
    return plan


def torch_block(params: dict):
    """``nn.TransformerEncoderLayer`` holding the plan's weights (flowgrad's dense W is
    (in, out); torch's Linear weight is (out, in))."""
    layer = torch.nn.TransformerEncoderLayer(D, HEADS, HIDDEN, dropout=0.0, activation="gelu",
                                             batch_first=True, norm_first=True)
    t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in params.items()}
    with torch.no_grad():
        layer.self_attn.in_proj_weight.copy_(t["W_qkv"].T)
        layer.self_attn.in_proj_bias.copy_(t["b_qkv"])
        layer.self_attn.out_proj.weight.copy_(t["W_o"].T)
        layer.self_attn.out_proj.bias.copy_(t["b_o"])
        layer.linear1.weight.copy_(t["W_1"].T)
        layer.linear1.bias.copy_(t["b_1"])
        layer.linear2.weight.copy_(t["W_2"].T)
        layer.linear2.bias.copy_(t["b_2"])
        layer.norm1.weight.copy_(t["ln1_scale"])
        layer.norm1.bias.copy_(t["ln1_bias"])
        layer.norm2.weight.copy_(t["ln2_scale"])
        layer.norm2.bias.copy_(t["ln2_bias"])
    return layer


def torch_grads(layer) -> dict[str, np.ndarray]:
    """The layer's gradients under the flowgrad param names, in flowgrad's layout."""
    g = {name: p.grad.numpy() for name, p in layer.named_parameters()}
    return {"W_qkv": g["self_attn.in_proj_weight"].T, "b_qkv": g["self_attn.in_proj_bias"],
            "W_o": g["self_attn.out_proj.weight"].T, "b_o": g["self_attn.out_proj.bias"],
            "W_1": g["linear1.weight"].T, "b_1": g["linear1.bias"],
            "W_2": g["linear2.weight"].T, "b_2": g["linear2.bias"],
            "ln1_scale": g["norm1.weight"], "ln1_bias": g["norm1.bias"],
            "ln2_scale": g["norm2.weight"], "ln2_bias": g["norm2.bias"]}


def max_rel(a: np.ndarray, b: np.ndarray) -> float:
    """Largest difference relative to the larger array's largest magnitude."""
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def training(plan: Plan, layer, x, target, repeat: int) -> None:
    print(f"\n1. training step (forward + backward), batch {BATCH} x {T} tokens x {D}, "
          f"{HEADS} heads, MLP {HIDDEN}, exact GELU, float32")
    xt, tt = torch.from_numpy(x), torch.from_numpy(target)
    mse = torch.nn.functional.mse_loss

    def flowgrad_step():
        plan.forward({"x": x, "target": target}, outputs=("loss",))
        return plan.backward({"loss": 1.0})

    def torch_step():
        layer.zero_grad(set_to_none=True)
        loss = mse(layer(xt), tt)
        loss.backward()
        return loss

    plan.train()
    layer.train()
    out = plan.forward({"x": x, "target": target}, outputs=("y", "loss"))
    grads = plan.backward({"loss": 1.0})
    layer.zero_grad(set_to_none=True)
    y_t = layer(xt)
    loss_t = mse(y_t, tt)
    loss_t.backward()
    print(f"  agreement with PyTorch: output max abs diff "
          f"{np.max(np.abs(out['y'] - y_t.detach().numpy())):.2e}, loss "
          f"{float(out['loss']):.6f} vs {loss_t.item():.6f}")
    ref = torch_grads(layer)
    worst = max(ref, key=lambda k: max_rel(grads[k], ref[k]))
    print(f"  gradients: max abs diff {max(np.max(np.abs(grads[k] - ref[k])) for k in ref):.2e}"
          f", largest relative to the gradient's scale {max_rel(grads[worst], ref[worst]):.2e} "
          f"({worst})")
    samples = interleaved({"flowgrad": flowgrad_step, "pytorch": torch_step}, repeat=repeat)
    report(samples, "pytorch", title="transformer block training step",
           targets={"flowgrad": "<= 1.0"})


def inference(plan: Plan, layer, x, repeat: int) -> None:
    print(f"\n2. inference (the block's output), batch {BATCH} x {T} tokens, float32")
    plan.freeze()          # (the last use of the plan: inference, as onnxruntime's is frozen)
    layer.eval()
    y = plan.forward({"x": x}, outputs=("y",), grad=False)["y"]
    fns = {"flowgrad": lambda: plan.forward({"x": x}, outputs=("y",), grad=False)}
    if ort is not None:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "transformer_block.onnx")
            flowgrad.save_onnx(plan.export_graph(), path, outputs=["y"])
            session = ort.InferenceSession(path, ort_options(THREADS),
                                           providers=["CPUExecutionProvider"])
        (y_ort,) = session.run(None, {"x": x})
        print(f"  agreement: onnxruntime max abs diff {np.max(np.abs(y - y_ort)):.2e}")
        fns["onnxruntime"] = lambda: session.run(None, {"x": x})
    if torch is not None:
        xt = torch.from_numpy(x)

        def torch_infer():
            with torch.inference_mode():
                return layer(xt)
        print(f"  agreement: pytorch max abs diff "
              f"{np.max(np.abs(y - torch_infer().numpy())):.2e}")
        fns["pytorch inference_mode"] = torch_infer
    samples = interleaved(fns, repeat=repeat)
    if ort is not None:
        report(samples, "onnxruntime", title="transformer block inference",
               targets={"flowgrad": "<= 1.5"})
    if torch is not None:
        report({k: samples[k] for k in ("flowgrad", "pytorch inference_mode")},
               "pytorch inference_mode", title="transformer block inference")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="timed rounds per contender")
    args = parser.parse_args()
    print("bench_transformer: " + thread_header(THREADS))
    rng = np.random.default_rng(1)
    x = rng.standard_normal((BATCH, T, D)).astype(np.float32)
    target = rng.standard_normal((BATCH, T, D)).astype(np.float32)
    plan = make_plan()
    if torch is None:
        print("PyTorch is missing: only flowgrad's own times")
    layer = torch_block(plan.params) if torch is not None else None
    if torch is not None:
        training(plan, layer, x, target, args.repeat)
    inference(plan, layer, x, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
