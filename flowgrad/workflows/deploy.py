"""From training to use: a graph with the params of a ``flowgrad train`` checkpoint.

``flowgrad run``, ``export`` and ``convert`` take ``--checkpoint CKPT``; each loads the graph,
compiles it, loads the checkpoint's params into the plan (:func:`flowgrad.checkpoint.load_params`
checks they fit: names, shapes, finite values) and then runs the plan, or exports
:meth:`Plan.export_graph` — the graph with the trained values as its params.
"""
from __future__ import annotations

from typing import Any

from ..checkpoint import load_params
from ..graph import Graph
from ..loaders import load
from ..plan import Plan, compile


def trained_plan(graph: Graph | str, checkpoint: str | None = None, *, dtype: str = "float32",
                 registry: Any = None) -> Plan:
    """The compiled ``graph`` (or the graph at a path), with ``checkpoint``'s params loaded
    when one is given."""
    if not isinstance(graph, Graph):
        graph = load(graph, registry=registry)
    plan = compile(graph, dtype=dtype)
    if checkpoint:
        load_params(plan, checkpoint)
    return plan


def trained_graph(graph: Graph | str, checkpoint: str | None = None, *,
                  registry: Any = None) -> Graph:
    """``graph`` with ``checkpoint``'s params as its values (the graph itself without one):
    what ``export`` and ``convert`` write."""
    if not isinstance(graph, Graph):
        graph = load(graph, registry=registry)
    if not checkpoint:
        return graph
    return trained_plan(graph, checkpoint, registry=registry).export_graph()
