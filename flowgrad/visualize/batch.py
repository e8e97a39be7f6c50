"""Batch-level terms written inside the images' objectives.

An objective such as ``"channel(h1, 3) + 0.1 * diversity(h1)"`` mixes a per-image part (image
``i`` alone decides it) with a term whose value depends on the other images too
(``per_image = False``: ``diversity``, ``channel_interpolate``, ``alignment``).  The per-image
parts go to :class:`~.objectives.PerImage` as before; each batch term is evaluated once over
the images whose expressions contain it — *the same term with the same weight* — in batch
order, and each of those images receives its share of the value and of the gradient.  So
``visualize(plan, ["channel(h1, 3) - 0.1 * diversity(h1)"] * 4)`` pushes four images apart,
and ``diversity(h1)`` written for images 0–3 and again for images 4–7 with another weight makes
two groups.  A term whose images all have the same weight is exactly lucid's batch objective.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .objectives import Combination, Objective


class BatchTerms:
    """Split ``objectives`` (one per image) into :attr:`per_image` objectives and groups of
    batch terms ``(weight, term, rows)``; ``extra`` is a batch term over every image (the
    ``diversity=(node, weight)`` option)."""

    def __init__(self, objectives: Sequence[Objective], extra: Objective | None = None):
        self.per_image: list[Objective] = []
        found: dict[tuple, tuple[float, Objective, list[int]]] = {}
        for i, obj in enumerate(objectives):
            terms = obj.terms if isinstance(obj, Combination) else [(1.0, obj)]
            kept = [(w, t) for w, t in terms if t.per_image]
            if len(kept) == len(terms):
                self.per_image.append(obj)
            else:
                self.per_image.append(kept[0][1] if len(kept) == 1 and kept[0][0] == 1.0
                                      else Combination(kept))
            mine: dict[tuple, tuple[float, Objective]] = {}     # a term written twice adds up
            for w, t in terms:
                if not t.per_image:
                    key = (type(t), t.describe())
                    mine[key] = (mine.get(key, (0.0, t))[0] + float(w), t)
            for (kind, text), (w, t) in mine.items():
                found.setdefault((kind, text, w), (w, t, []))[2].append(i)
        n = len(objectives)
        self.groups = [(w, t, np.array(rows, dtype=np.intp)) for w, t, rows in found.values()]
        if extra is not None:
            terms = extra.terms if isinstance(extra, Combination) else [(1.0, extra)]
            self.groups += [(float(w), t, np.arange(n)) for w, t in terms]
        self.refs = tuple(dict.fromkeys(r for _, t, _ in self.groups for r in t.refs))
        self.n = n

    def __call__(self, acts: Mapping[str, np.ndarray], values: np.ndarray,
                 seeds: dict[str, np.ndarray]) -> None:
        """Add every group's values and gradients into ``values`` and ``seeds`` in place."""
        for weight, term, rows in self.groups:
            whole = len(rows) == self.n
            sub = {r: acts[r] if whole else acts[r][rows] for r in term.refs}
            v, grads = term(sub)
            values[rows] += weight * v
            for r, g in grads.items():
                if whole:
                    seeds[r] += weight * g
                else:
                    seeds[r][rows] += weight * g
