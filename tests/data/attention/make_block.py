"""Write the fixture of tests/test_attention.py: a pre-norm transformer block exported by
PyTorch's ONNX exporter as opset-23 ``Attention`` and ``RMSNormalization`` nodes.

    PYTHONPATH=<onnxscript and onnx_ir> python tests/data/attention/make_block.py

Needs torch (2.13 was used) and onnxscript (0.7.2, with onnx_ir 1.0.0), which CI does not
have: the outputs are committed.  Writes ``block.onnx`` (the model, weights inside) and
``block_torch.npz``: the input ``x``, a cotangent ``w``, PyTorch's output ``y`` and, from
autograd, the gradient of ``sum(y * w)`` w.r.t. ``x`` and every parameter that the exported
model keeps under its PyTorch name (``grad/<name>``).
"""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))


class Block(nn.Module):
    """RMSNorm -> causal grouped-query self-attention -> residual -> RMSNorm -> GELU MLP ->
    residual, the shape of a LLaMA-style decoder layer (4 query heads sharing 2 key/value
    heads)."""

    def __init__(self, d: int = 16, heads: int = 4, kv_heads: int = 2):
        super().__init__()
        self.heads, self.kv_heads, self.head = heads, kv_heads, d // heads
        self.norm1 = nn.RMSNorm(d, eps=1e-6)
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * kv_heads * self.head)
        self.out = nn.Linear(d, d)
        self.norm2 = nn.RMSNorm(d, eps=1e-6)
        self.up = nn.Linear(d, 2 * d)
        self.down = nn.Linear(2 * d, d)

    def forward(self, x):
        b, t, d = x.shape
        h = self.norm1(x)
        q = self.q(h).reshape(b, t, self.heads, self.head).transpose(1, 2)
        k, v = self.kv(h).reshape(b, t, 2 * self.kv_heads, self.head).transpose(1, 2).chunk(2, 1)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        x = x + self.out(a.transpose(1, 2).reshape(b, t, d))
        return x + self.down(F.gelu(self.up(self.norm2(x))))


def main() -> None:
    torch.manual_seed(0)
    block = Block().eval()
    with torch.no_grad():                 # distinct norm scales (ones would be deduplicated)
        block.norm1.weight.uniform_(0.5, 1.5)
        block.norm2.weight.uniform_(0.5, 1.5)
    x = torch.randn(2, 5, 16)
    program = torch.onnx.export(block, (x,), dynamo=True, opset_version=23,
                                input_names=["x"], output_names=["y"])
    path = os.path.join(HERE, "block.onnx")
    program.save(path)
    import onnx
    kept = {i.name for i in onnx.load(path).graph.initializer}
    xg = x.clone().requires_grad_(True)
    y = block(xg)
    w = torch.randn_like(y)
    (y * w).sum().backward()
    arrays = {"x": x.numpy(), "w": w.numpy(), "y": y.detach().numpy(),
              "grad/x": xg.grad.numpy()}
    for name, p in block.named_parameters():
        if name in kept:
            arrays[f"grad/{name}"] = p.grad.numpy()
    np.savez(os.path.join(HERE, "block_torch.npz"), **arrays)
    print("wrote", path, "with", sorted(k for k in arrays if k.startswith("grad/")))


if __name__ == "__main__":
    main()
