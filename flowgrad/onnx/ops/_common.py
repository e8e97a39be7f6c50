"""Small helpers shared by the family modules: checked conversions of load-time values."""
from __future__ import annotations

from typing import Callable

import numpy as np

from ..builder import ImportProblem


def ints(array, what: str) -> list[int]:
    """An ONNX int tensor or list (shape, axes, pads...) as a flat list of Python ints; an
    ImportProblem naming ``what`` if it holds anything but integers."""
    flat = np.asarray(array).reshape(-1)
    if flat.dtype.kind not in "iub":
        if flat.dtype.kind != "f" or not np.all(np.isfinite(flat)) \
                or not np.all(flat == np.round(flat)):
            raise ImportProblem(f"{what} must be integers, not {flat.dtype} values "
                                f"{flat[:6].tolist()}; store them as int64")
    return [int(v) for v in flat]


def floats(array, what: str) -> list[float]:
    """A float tensor or list (scales, roi) as a flat list of Python floats."""
    flat = np.asarray(array).reshape(-1)
    if flat.dtype.kind not in "iubf":
        raise ImportProblem(f"{what} must be numbers, not {flat.dtype} values")
    return [float(v) for v in flat]


def axis(value: int, ndim: int, what: str = "axis") -> int:
    """``value`` as an axis of an ``ndim``-d input, in ``[0, ndim)``; an ImportProblem when it
    is out of range (ONNX allows ``-ndim <= axis < ndim``)."""
    if not -ndim <= value < ndim:
        raise ImportProblem(f"{what} {value} is out of range for a {ndim}-d input (valid: "
                            f"{-ndim} to {ndim - 1})" if ndim else
                            f"{what} {value} cannot apply to a 0-d (scalar) input")
    return value % ndim


def unchanged(b, x) -> list:
    """The result of a node that leaves ``x`` as it is (Identity, a Cast to ``x``'s own type):
    ``x`` itself when an op computes it, the node's name becoming an alias of it; an
    ``identity`` node for a graph input and for a sequence.

    Why: each step costs the run loop 1-2 us whatever its op does, and exported models are
    full of such nodes: silero VAD (10 Identity and same-type Casts in its If branch, two
    Identity outputs) runs 39 steps instead of 56, 617 -> 604 us a run (in-process A/B, 1
    thread, medians of 3000 runs)."""
    if x.is_const or (x.node is not None and b.graph.is_op(x.node)
                      and x.spec.dtype != object):
        return [x]
    return b.final("identity", [x])


def present(a, names) -> dict:
    """The ONNX attributes ``names`` that the node sets (flowgrad's op names them alike)."""
    return {k: a[k] for k in names if k in a}


def axes_input(onnx_type: str, extra: Callable = lambda op: {}):
    """An exporter for an op whose ``axes`` attribute ONNX takes as its second input."""
    def exporter(c) -> None:
        ins = [c.ins[0]] + ([c.const(c.op.axes)] if c.op.axes is not None else [])
        c.node(onnx_type, ins, c.outs, **extra(c.op))
    return exporter
