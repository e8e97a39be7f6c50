"""Pooling (flowgrad.ops.pool)."""
from __future__ import annotations

from ..translations import Translations, node_exporter
from ._common import present
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
