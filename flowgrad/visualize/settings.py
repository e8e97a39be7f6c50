"""The YAML ``visualize:`` section: a graph's defaults for ``flowgrad visualize``.

    visualize:
      each: logits                 # one image per unit of axis 1 of this value ...
      objectives: ["logits[3]"]    # ... or explicit objective specs (one image each)
      steps: 300
      lr: 0.05
      param: fourier               # fourier | pixels
      transforms: none             # default | none | "pad=2,jitter=1,scale=0.9:1.1,rotate=10"
      penalties: {l2: 30, tv: 30}
      range: [0, 1]                # valid input range (sigmoid squashing into it)

Command-line flags override these.  Errors point at the line and column of the bad value.
"""
from __future__ import annotations

from typing import Any

from ..errors import DiagnosticList, GraphError, did_you_mean, unknown_key
from ..graph import Graph
from .penalties import PENALTIES

KEYS = ("each", "objectives", "steps", "lr", "param", "transforms", "penalties", "range",
        "optimizer", "doc")


def from_graph(graph: Graph) -> dict[str, Any]:
    """The checked ``visualize:`` section (empty if absent)."""
    section = graph.meta.get("visualize")
    if section is None:
        return {}
    errors = DiagnosticList()
    loc = getattr(section, "loc", None)
    if not isinstance(section, dict):
        errors.add("'visualize' must be a mapping", loc)
        errors.raise_if_any(GraphError)
    where = getattr(section, "value_locs", {})
    out: dict[str, Any] = {}
    for key, value in section.items():
        vloc = where.get(key, loc)
        if key not in KEYS:
            errors.add(unknown_key(key, "'visualize'", KEYS),
                       getattr(section, "key_locs", {}).get(key))
        elif key in ("steps",) and (isinstance(value, bool) or not isinstance(value, int)
                                    or value < 1):
            errors.add(f"'steps' must be a positive integer, got {value!r}", vloc)
        elif key == "lr" and (isinstance(value, bool) or not isinstance(value, (int, float))):
            errors.add(f"'lr' must be a number, got {value!r}", vloc)
        elif key == "objectives" and not (isinstance(value, list)
                                          and all(isinstance(v, str) for v in value)):
            errors.add("'objectives' must be a list of objective specs", vloc)
        elif key == "penalties":
            if not isinstance(value, dict):
                errors.add("'penalties' must be a mapping {name: weight}", vloc)
            else:
                for name, weight in value.items():
                    if name not in PENALTIES:
                        errors.add(f"unknown penalty '{name}'{did_you_mean(name, PENALTIES)} "
                                   f"(penalties: {', '.join(PENALTIES)})",
                                   getattr(value, "key_locs", {}).get(name, vloc))
                    elif isinstance(weight, bool) or not isinstance(weight, (int, float)):
                        errors.add(f"penalty weight must be a number, got {weight!r}",
                                   getattr(value, "value_locs", {}).get(name, vloc))
        elif key == "range" and not (isinstance(value, list) and len(value) == 2 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
            errors.add("'range' must be [low, high]", vloc)
        elif key == "each":
            try:
                graph.resolve(value)
            except (KeyError, TypeError) as e:
                errors.add(f"'each': {e.args[0] if e.args else e}", vloc)
        out[key] = value
    errors.raise_if_any(GraphError)
    return out
