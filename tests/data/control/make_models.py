"""Regenerate the PyTorch control-flow fixture of tests/test_control_flow.py.

    .venv/bin/pip install torch==2.13.0      # the bench extra; not needed to run the tests
    .venv/bin/python tests/data/control/make_models.py

``torch_control.onnx`` is a ``torch.jit.script``-ed module exported with
``torch.onnx.export(dynamo=False)`` (the TorchScript exporter: scripted Python control flow
becomes ONNX Loop and If nodes).  Its ``forward`` has a ``for`` loop over the time axis (a Loop
whose trip count is the input's length, computed from its shape), a data-dependent ``if`` (an
If whose branches read the model's weights from the main graph) and a ``while`` loop whose
condition depends on the data.  ``torch_stack.onnx`` collects a loop's states in a Python
list and stacks it (``outs.append(h)`` then ``torch.stack``), which the exporter writes as a
Loop carrying a sequence (SequenceEmpty, SequenceInsert) and a ConcatFromSequence.  The tests
compare flowgrad with onnxruntime on them at test time (onnxruntime is in the dev extra; torch
is not), so only the models are stored.
"""
from __future__ import annotations

import os
import warnings

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS, BATCH, FEATURES, CLASSES = 5, 2, 4, 3


class Controlled(torch.nn.Module):
    """A small recurrent net with every kind of scripted control flow."""

    def __init__(self):
        super().__init__()
        self.cell = torch.nn.Linear(FEATURES, FEATURES)
        self.out = torch.nn.Linear(FEATURES, CLASSES)

    def forward(self, x):
        h = torch.zeros_like(x[0])
        for t in range(x.size(0)):                     # Loop: trip count from x's shape
            h = torch.tanh(self.cell(x[t]) + h)
        if bool(h.sum() > 0):                          # If: depends on the data
            y = self.out(h)
        else:
            y = self.out(h * 2.0) - 1.0
        k = 0
        while bool(y.abs().max() > 0.5) and k < 4:      # Loop: condition from the data
            y = y * 0.75
            k += 1
        return y


class Stacked(torch.nn.Module):
    """A recurrence whose states are appended to a list and stacked."""

    def __init__(self):
        super().__init__()
        self.cell = torch.nn.Linear(FEATURES, FEATURES)

    def forward(self, x):
        h = torch.zeros_like(x[0])
        outs = []
        for t in range(x.size(0)):
            h = torch.tanh(self.cell(x[t]) + h)
            outs.append(h)
        return torch.stack(outs, dim=1)


def main() -> None:
    for name, module, axes in (
            ("torch_control.onnx", Controlled, {"x": {0: "steps", 1: "batch"},
                                                "y": {0: "batch"}}),
            ("torch_stack.onnx", Stacked, {"x": {0: "steps", 1: "batch"}})):
        torch.manual_seed(0)
        model = torch.jit.script(module())
        x = torch.randn(STEPS, BATCH, FEATURES)
        path = os.path.join(HERE, name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x,), path, dynamo=False, opset_version=17,
                              input_names=["x"], output_names=["y"], dynamic_axes=axes)
        print("wrote", path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
