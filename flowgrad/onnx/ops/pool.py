"""Pooling (flowgrad.ops.pool)."""
from __future__ import annotations

from ..builder import ImportProblem
from ..translations import Translations, node_exporter
from ._common import ints, present
from .conv import WINDOW

T = Translations("pool")

_MAX_POOL = WINDOW + ("ceil_mode", "storage_order")

T.same("AveragePool", "avg_pool", attrs=WINDOW + ("ceil_mode", "count_include_pad"))
T.same("GlobalAveragePool", "global_avg_pool")
T.same("GlobalMaxPool", "global_max_pool")


@T.imports("MaxPool")
def max_pool(b, a, ins):
    """The optional Indices output costs time: flowgrad tracks it only when the model reads it."""
    attrs = present(a, _MAX_POOL)
    if b.output_used(1):
        attrs["indices"] = True
    return b.final("max_pool", [ins.need(0, "X")], **attrs)


T.exports("max_pool")(node_exporter("MaxPool", _MAX_POOL))


def _lp_exponent(a) -> int:
    """``p``: an int from opset 2 on, a float in LpPool-1 (accepted when whole)."""
    p = a.get("p", 2)
    if isinstance(p, float):
        if not p.is_integer():
            raise ImportProblem(f"Lp pooling with p={p} is not supported; p must be a whole "
                                "number (as ONNX requires from opset 2 on)")
        p = int(p)
    return p


@T.imports("LpPool")
def lp_pool(b, a, ins):
    return b.final("lp_pool", [ins.need(0, "X")], p=_lp_exponent(a),
                   **present(a, WINDOW + ("ceil_mode",)))


T.exports("lp_pool")(node_exporter("LpPool", WINDOW + ("ceil_mode", "p")))


@T.imports("GlobalLpPool")
def global_lp_pool(b, a, ins):
    return b.final("global_lp_pool", [ins.need(0, "X")], p=_lp_exponent(a))


T.exports("global_lp_pool")(node_exporter("GlobalLpPool", ("p",)))


@T.imports("MaxUnpool", since=9, static=(2,))
def max_unpool(b, a, ins):
    """The optional ``output_shape`` input must be known at load time (it fixes the output's
    shape)."""
    shape = b.static(ins.opt(2), "MaxUnpool output_shape")
    attrs = present(a, ("kernel_shape", "strides", "pads"))
    if shape is not None:
        attrs["output_shape"] = ints(shape, "MaxUnpool output_shape")
    return b.final("max_unpool", [ins.need(0, "X"), ins.need(1, "I")], **attrs)


@T.exports("max_unpool")
def _max_unpool(c):
    ins = list(c.ins)
    if c.op.output_shape:
        ins.append(c.const(list(c.op.output_shape)))
    c.node("MaxUnpool", ins, c.outs, kernel_shape=list(c.op.kernel_shape),
           **{k: list(getattr(c.op, k)) for k in ("strides", "pads") if getattr(c.op, k)})
