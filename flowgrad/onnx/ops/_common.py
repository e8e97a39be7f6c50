"""Small helpers shared by the family modules."""
from __future__ import annotations

from typing import Callable

import numpy as np


def ints(array) -> list[int]:
    """An ONNX int tensor or list (shape, axes, pads...) as a flat list of Python ints."""
    return [int(v) for v in np.asarray(array).reshape(-1)]


def present(a: dict, names) -> dict:
    """The ONNX attributes ``names`` that the node sets (flowgrad's op names them alike)."""
    return {k: a[k] for k in names if k in a}


def axes_input(onnx_type: str, extra: Callable = lambda op: {}):
    """An exporter for an op whose ``axes`` attribute ONNX takes as its second input."""
    def exporter(c) -> None:
        ins = [c.ins[0]] + ([c.const(c.op.axes)] if c.op.axes is not None else [])
        c.node(onnx_type, ins, c.outs, **extra(c.op))
    return exporter
