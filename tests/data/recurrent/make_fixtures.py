"""Regenerate the PyTorch language-model fixtures of tests/test_recurrent.py.

    .venv/bin/pip install torch==2.13.0      # the bench extra; not needed to run the tests
    .venv/bin/python tests/data/recurrent/make_fixtures.py

For each cell (a bidirectional 2-layer LSTM, a 2-layer GRU) it writes ``lm_<cell>.onnx``,
exported with ``torch.onnx.export(dynamo=False)`` and constant folding off (so the
initializers are PyTorch's own parameters, name for name), and ``lm_<cell>.npz``: the inputs,
the output-gradient seed, PyTorch's logits and PyTorch autograd's gradient of every parameter
and of the ``offset`` input, keyed by PyTorch's names.  The tests compare flowgrad with these
numbers without needing torch, so CI checks PyTorch parity on every run.
"""
from __future__ import annotations

import io
import os
import warnings

import numpy as np
import torch

V, E, HID, STEPS, BATCH = 11, 6, 5, 7, 3
HERE = os.path.dirname(os.path.abspath(__file__))
CELLS = {"lstm": ("LSTM", True), "gru": ("GRU", False)}


class LanguageModel(torch.nn.Module):
    """embedding -> 2-layer LSTM or GRU -> linear; ``offset`` (zeros) is added to the
    embeddings so that their gradient can be asked for as an input's."""

    def __init__(self, cell: str, bidirectional: bool):
        super().__init__()
        self.embed = torch.nn.Embedding(V, E)
        self.rnn = getattr(torch.nn, cell)(E, HID, num_layers=2, bidirectional=bidirectional)
        self.out = torch.nn.Linear(HID * (2 if bidirectional else 1), V)

    def forward(self, tokens, offset):
        y, _ = self.rnn(self.embed(tokens) + offset)
        return self.out(y)


def make(key: str) -> None:
    cell, bidirectional = CELLS[key]
    torch.manual_seed(0)
    model = LanguageModel(cell, bidirectional)
    tokens = torch.randint(0, V, (STEPS, BATCH))
    offset = torch.zeros(STEPS, BATCH, E, requires_grad=True)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (tokens, offset), buffer, dynamo=False,
                          do_constant_folding=False, input_names=["tokens", "offset"],
                          output_names=["logits"])
    logits = model(tokens, offset)
    seed = torch.randn(logits.shape, generator=torch.Generator().manual_seed(1))
    logits.backward(seed)
    arrays = {"input:tokens": tokens.numpy(), "input:offset": offset.detach().numpy(),
              "seed": seed.numpy(), "logits": logits.detach().numpy(),
              "grad:offset": offset.grad.numpy()}
    arrays.update({f"grad:{name}": p.grad.numpy() for name, p in model.named_parameters()})
    with open(os.path.join(HERE, f"lm_{key}.onnx"), "wb") as f:
        f.write(buffer.getvalue())
    np.savez(os.path.join(HERE, f"lm_{key}.npz"), **arrays)


if __name__ == "__main__":
    torch.set_num_threads(1)
    for key in CELLS:
        make(key)
        print(f"wrote lm_{key}.onnx and lm_{key}.npz")
