"""Summing per-worker contributions through Dask, as a binary tree.

Each leaf is a worker's contribution (its shard's gradients already weighted by the shard's
share of the batch); each inner node is a task that adds two of them, placed by the scheduler
where one of its inputs already lives.  Data thus moves worker to worker, ``log2 N`` levels
deep, and never through the driver's memory; the order of the additions is fixed —
``((c0 + c1) + (c2 + c3))`` — so the result does not depend on timing.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def add(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two contributions as one: ``sums`` added key by key, ``parts`` (per-shard outputs and
    timings, kept in shard order) concatenated."""
    sums = dict(a["sums"])
    for name, value in b["sums"].items():
        sums[name] = sums[name] + value if name in sums else value
    return {"sums": sums, "parts": a["parts"] + b["parts"]}


def tree_sum(client, leaves: list) -> Any:
    """The future of the sum of ``leaves`` (futures of contributions), level by level."""
    level = list(leaves)
    while len(level) > 1:
        nxt = [client.submit(add, level[i], level[i + 1], pure=False)
               for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def nbytes(contribution: dict[str, Any]) -> int:
    """The bytes of a contribution's summed arrays: what one tree edge carries."""
    return int(sum(np.asarray(v).nbytes for v in contribution["sums"].values()))
