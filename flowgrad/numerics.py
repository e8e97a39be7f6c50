"""Non-finite values: cheap detection every step, an expensive diagnosis only when one appears.

Training checks the loss and the gradients (one reduction per gradient array, which the
optimizer reads anyway) and nothing else, so a healthy run pays nothing per node.  When a
value is NaN or infinite, :func:`diagnose` re-runs the failing batch asking for *every* node's
output, walks them in schedule order and names the first node whose output is non-finite while
its inputs were finite — the place a user must look (a log of zero, an exploding exp, ...).
"""
from __future__ import annotations

from typing import Any, Mapping

import networkx as nx
import numpy as np

from .errors import NumericsError
from .plan import Plan


def all_finite(value: Any) -> bool:
    """True if every element is finite (a sum is non-finite whenever an element is; only an
    overflowing sum of finite values needs the element-wise recheck)."""
    value = np.asarray(value)
    if value.dtype.kind not in "fc":
        return True
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(value.sum()):
            return True
    return bool(np.isfinite(value).all())


def check_step(plan: Plan, feeds: Mapping[str, Any], losses: Mapping[str, Any],
               grads: Mapping[str, np.ndarray], where: str = "") -> None:
    """Raise :class:`NumericsError` (via :func:`diagnose`) if a loss or gradient is non-finite."""
    bad_loss = [k for k, v in losses.items() if not all_finite(v)]
    bad_grad = [k for k, v in grads.items() if not all_finite(v)]
    if bad_loss or bad_grad:
        raise diagnose(plan, feeds, bad_loss, bad_grad, where)


def diagnose(plan: Plan, feeds: Mapping[str, Any], bad_losses=(), bad_grads=(),
             where: str = "") -> NumericsError:
    """Build the error naming the first node that produced a non-finite value."""
    what = ", ".join([f"loss '{k}'" for k in bad_losses] + [f"gradient of '{k}'"
                                                             for k in bad_grads])
    prefix = f"{where}: " if where else ""
    bad_params = [k for k, v in plan.params.items() if not all_finite(v)]
    if bad_params:
        return NumericsError(f"{prefix}non-finite {what}: param '{bad_params[0]}' already holds "
                             "NaN or infinity (a previous update diverged; lower the learning "
                             "rate or clip gradients)", node=bad_params[0])
    bad_feeds = [k for k, v in feeds.items() if not all_finite(v)]
    if bad_feeds:
        return NumericsError(f"{prefix}non-finite {what}: input '{bad_feeds[0]}' holds NaN or "
                             "infinity; clean the data", node=bad_feeds[0])
    node = first_nonfinite_node(plan, feeds)
    if node is not None:
        return NumericsError(f"{prefix}non-finite {what}: node '{node}' "
                             f"({plan.graph.op_of(node).type}) is "
                             "the first to produce NaN or infinity from finite inputs (if values grew "
                             "during training, lower the learning rate or clip gradients)",
                             node=node, loc=plan.graph.location(node))
    consumers = sorted({dst for k in bad_grads if k in plan.graph.dag
                        for _, dst in plan.graph.dag.out_edges(k)})
    detail = (f"; the forward pass is finite, so the backward of "
              f"{', '.join(repr(c) for c in consumers) or 'an op'} overflowed") if bad_grads else ""
    return NumericsError(f"{prefix}non-finite {what}{detail}; lower the learning rate or clip "
                         "gradients", node=consumers[0] if consumers else None)


def first_nonfinite_node(plan: Plan, feeds: Mapping[str, Any]) -> str | None:
    """Re-run forward keeping every op's outputs; the first op (schedule order) producing a
    non-finite output.  Runs in the plan's current mode, so dropout or batch statistics match
    the failing step's kind."""

    graph = plan.graph
    inputs = set(graph.inputs)
    runnable = [n for n in graph.topological_order() if graph.is_op(n)
                and (nx.ancestors(graph.dag, n) & inputs) <= set(feeds)]
    refs = [graph.value_name(n, p) for n in runnable for p in range(graph.num_outputs(n))]
    try:
        values = plan.forward(feeds, outputs=refs, grad=False)
    except Exception:  # an op that cannot run on these values: fall back to a coarser report
        return None
    for ref in refs:
        if not all_finite(values[ref]):
            return graph.resolve(ref)[0]
    return None
