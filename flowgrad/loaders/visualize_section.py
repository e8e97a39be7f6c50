"""The ``visualize:`` section of a YAML graph, read by the front end into a
:class:`VisualizeConfig`: the graph's defaults for ``flowgrad visualize``.

    visualize:
      each: logits                 # one image per unit of axis 1 of this value ...
      objectives: ["logits[3]"]    # ... or explicit objective specs (one image each)
      steps: 300
      lr: 0.05
      optimizer: adam
      param: fourier               # fourier | pixels | any registered parameterization
      transforms: none             # default | none | "pad=2,jitter=1,scale=0.9:1.1,rotate=10"
      penalties: {l2: 30, tv: 30}
      range: [0, 1]                # valid input range (sigmoid squashing into it)
      start: noise                 # or mean:DATA — start from the mean input of a data set
      thresholds: [16, 64, 256]    # also keep the images after these steps (steps: the last)
      preprocess: imagenet         # the model's input convention (a preset name)
      input_shape: [3, 224, 224]   # one sample's shape, for an input with free dimensions

The defaults are :class:`VisualizeConfig`'s; command-line flags and keyword arguments
override the section (:meth:`VisualizeConfig.replace`).  Mistakes are reported with the rest
of the file's, at the line and column of the bad key or value.
"""
from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import DiagnosticList, FlowgradError, SourceLocation, did_you_mean
from ..graph import Graph
from ..optim import optimizer_kinds
from .section_fields import SectionFields, item_loc
from .value_checks import MAX_SAMPLE_BYTES, is_finite, is_shape, nbytes, size_text

VISUALIZE_KEYS = ("each", "objectives", "steps", "lr", "param", "transforms", "penalties",
                  "range", "optimizer", "start", "thresholds", "preprocess", "input_shape", "doc")


@dataclass
class VisualizeConfig:
    """How to optimize input images; see the module doc for each setting.

    ``transforms`` None means ``default`` for images of 16 pixels or more and ``none`` below
    (a one-pixel jitter is an eighth of an 8×8 digit).  ``start`` ``mean:DATA`` starts every
    image from the mean input of data set ``DATA`` instead of faint noise (``param: pixels``
    or ``fourier``): a neutral digit-shaped blob that the objective then carves, which keeps
    the images of a small classifier looking like its data.
    """

    each: str | None = None
    objectives: list[str] = field(default_factory=list)
    steps: int = 256
    lr: float = 0.05
    optimizer: str = "adam"
    param: str = "fourier"
    transforms: str | None = None
    penalties: dict[str, float] = field(default_factory=dict)
    range: tuple[float, float] = (0.0, 1.0)
    start: str = "noise"
    thresholds: tuple[int, ...] = ()
    preprocess: str | None = None
    input_shape: tuple[int, ...] | None = None

    def replace(self, **changes: Any) -> "VisualizeConfig":
        """A copy with some settings changed; None values are ignored (flags not given).

        New ``thresholds`` without new ``steps`` run to the last threshold.  A bad start,
        thresholds, preprocessing or input shape raises a :class:`FlowgradError` naming it.
        """
        changes = {k: v for k, v in changes.items() if v is not None}
        if "thresholds" in changes:
            changes["thresholds"] = tuple(changes["thresholds"])
            if changes["thresholds"] and "steps" not in changes:
                changes["steps"] = changes["thresholds"][-1]
        if "input_shape" in changes:
            changes["input_shape"] = tuple(changes["input_shape"])
        for key, problem in (("start", start_problem), ("preprocess", preprocess_problem),
                             ("input_shape", input_shape_problem)):
            if key in changes and problem(changes[key]):
                raise FlowgradError(f"{key}: {problem(changes[key])}")
        out = dataclasses.replace(self, **changes)
        problem = thresholds_problem(out.thresholds, out.steps)
        if problem:
            raise FlowgradError(f"thresholds: {problem}")
        return out


def start_problem(start: Any) -> str | None:
    """What is wrong with a ``start`` setting (``noise`` or ``mean:DATA``), or None."""
    if start == "noise" or isinstance(start, str) and start.startswith("mean:") and start[5:]:
        return None
    return f"start must be 'noise' or 'mean:DATA' (the mean input of a data set), got {start!r}"


def thresholds_problem(thresholds: Any, steps: int | None) -> str | None:
    """What is wrong with ``thresholds`` (increasing step counts from 1, none beyond
    ``steps``), or None."""
    items = list(thresholds) if isinstance(thresholds, (list, tuple)) else None
    if items is None or not all(is_finite(t) and isinstance(t, int) for t in items):
        return f"thresholds must be a list of step counts, got {thresholds!r}"
    if items and items[0] < 1:
        return f"thresholds count steps from 1, got {items[0]}"
    if any(b <= a for a, b in zip(items, items[1:])):
        return f"thresholds must increase, got {' '.join(map(str, items))}"
    if items and steps is not None and items[-1] > steps:
        return f"threshold {items[-1]} is beyond the {steps} steps"
    return None


def preprocess_problem(name: Any) -> str | None:
    """What is wrong with a preprocessing preset name, or None."""
    from ..visualize.preprocess import PRESETS
    if isinstance(name, str) and name in PRESETS:
        return None
    guess = did_you_mean(name, PRESETS) if isinstance(name, str) else ""
    return f"unknown preprocessing {name!r}{guess} (presets: {', '.join(PRESETS)})"


def input_shape_problem(shape: Any) -> str | None:
    """What is wrong with an input shape (positive sizes, batch axis excluded), or None."""
    items = list(shape) if isinstance(shape, (list, tuple)) else None
    if not items or not all(is_finite(d) and isinstance(d, int) and d >= 1 for d in items):
        return (f"input shape must be positive sizes such as 3 224 224 (batch axis excluded), "
                f"got {shape!r}")
    if not is_shape(items) or nbytes(tuple(items)) > MAX_SAMPLE_BYTES:
        return (f"input shape {items} is too large: one sample may hold at most "
                f"{size_text(MAX_SAMPLE_BYTES)} as float64")
    return None


def from_graph(graph: Graph) -> VisualizeConfig:
    """The graph's ``visualize:`` section as the front end read it, or the defaults (a copy:
    changing it leaves the graph's untouched)."""
    config = graph.meta.get("visualize")
    return copy.deepcopy(config) if isinstance(config, VisualizeConfig) else VisualizeConfig()


def read_visualize_section(section: Any, graph: Graph, registry: Any, errors: DiagnosticList,
                           reported: Callable[[str], bool], loc: SourceLocation | None
                           ) -> VisualizeConfig:
    """The ``visualize:`` mapping as a :class:`VisualizeConfig`, mistakes added to ``errors``;
    optimizers, parameterizations, objectives and transforms are those of ``registry`` (the
    loader's), and ``graph``, ``reported`` and ``loc`` are as for the ``train:`` section."""
    if section is None:          # `visualize:` and nothing under it: the defaults
        return VisualizeConfig()
    if not isinstance(section, dict):
        errors.add(f"'visualize' must be a mapping, got {section!r}", loc)
        return VisualizeConfig()
    from ..visualize.objectives import objective_factories, parse_objective
    from ..visualize.penalties import PENALTIES
    from ..visualize.transforms import parse_transforms

    f = SectionFields(section, "'visualize'", errors, loc)
    f.only(VISUALIZE_KEYS)
    d, defaults = section, VisualizeConfig()
    values: dict[str, Any] = {
        "steps": f.integer("steps", 1, defaults.steps),
        "lr": f.number("lr", defaults.lr, low=0.0, what="a positive number"),
        "optimizer": f.string("optimizer", defaults.optimizer,
                              choices=sorted(optimizer_kinds(registry))),
        "param": f.string("param", defaults.param,
                          choices=sorted(registry.table("parameterization")))}
    each = f.string("each", None)
    if each is not None:
        try:
            graph.resolve(each)
            values["each"] = each
        except KeyError as e:
            if not reported(each):
                f.error(f"'each': {e.args[0]}", f.value_loc("each"))
    if "objectives" in d:
        specs = d["objectives"]
        if isinstance(specs, list) and all(isinstance(s, str) for s in specs):
            factories = objective_factories(registry)
            for i, spec in enumerate(specs):
                try:
                    parse_objective(spec, factories)
                except FlowgradError as e:
                    f.error(e.diagnostics[0].message,
                            item_loc(specs, i, f.value_loc("objectives")))
            values["objectives"] = list(specs)
        else:
            f.error("'objectives' must be a list of objective specs", f.value_loc("objectives"))
    if "transforms" in d:
        spec = f.string("transforms", None)
        try:
            parse_transforms(spec, 16, registry)
            values["transforms"] = spec
        except FlowgradError as e:
            f.error(f"'transforms': {e.diagnostics[0].message}", f.value_loc("transforms"))
    if f.mapping("penalties", "{l2: 30, tv: 30}") is not None:
        penalties = f.nested("penalties")
        for name, weight in d["penalties"].items():
            if name not in PENALTIES:
                f.error(f"unknown penalty '{name}'{did_you_mean(name, PENALTIES)} "
                        f"(penalties: {', '.join(PENALTIES)})", penalties.key_loc(name))
            elif not is_finite(weight):
                f.error(f"penalty weight must be a number, got {weight!r}",
                        penalties.value_loc(name))
        values["penalties"] = {k: float(v) for k, v in d["penalties"].items()
                               if k in PENALTIES and is_finite(v)}
    if "range" in d:
        bounds = d["range"]
        if isinstance(bounds, list) and len(bounds) == 2 and all(map(is_finite, bounds)) \
                and bounds[0] < bounds[1]:
            values["range"] = (float(bounds[0]), float(bounds[1]))
        else:
            f.error(f"'range' must be [low, high] with low < high, got {bounds!r}",
                    f.value_loc("range"))
    for key, problem in (("start", start_problem), ("preprocess", preprocess_problem),
                         ("input_shape", input_shape_problem)):
        if key in d:
            if problem(d[key]):
                f.error(f"'{key}': {problem(d[key])}", f.value_loc(key))
            else:
                values[key] = tuple(d[key]) if key == "input_shape" else d[key]
    start = values.get("start", "noise")
    if start != "noise":
        data = start.split(":", 1)[1]
        known = sorted(n for n in registry.table("data_loader") if not n.startswith("."))
        if values["param"] not in ("pixels", "fourier"):
            f.error(f"'start': {start} needs param: pixels or fourier, not "
                    f"'{values['param']}'", f.value_loc("start"))
        elif data not in known and not os.path.exists(data):
            f.error(f"'start': no data set '{data}'{did_you_mean(data, known)} (data sets: "
                    f"{', '.join(known)}, or a file's path)", f.value_loc("start"))
    if "thresholds" in d:
        steps = values["steps"] if "steps" in d else None
        problem = thresholds_problem(d["thresholds"], steps)
        if problem:
            f.error(f"'thresholds': {problem}", f.value_loc("thresholds"))
        else:
            values["thresholds"] = tuple(d["thresholds"])
            if values["thresholds"] and "steps" not in d:
                values["steps"] = values["thresholds"][-1]
    return VisualizeConfig(**values)
