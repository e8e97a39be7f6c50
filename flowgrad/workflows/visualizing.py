"""Visualizing neurons as configured: the graph's ``visualize:`` section, overridden by
keyword settings, turned into one :func:`flowgrad.visualize` call (``flowgrad visualize``).

What the section leaves to the graph is settled here: one objective per unit or channel of
``each``; the input to optimize, when the graph has a single float one; the transforms, which
default to ``default`` for images of 16 pixels or more and ``none`` below.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import Plan, compile, load
from ..checkpoint import load_params
from ..errors import FlowgradError
from ..graph import Graph
from ..visualize import Visualization, parse_transforms, save_outputs, view_shape, visualize
from ..visualize.settings import VisualizeConfig, from_graph


@dataclass
class VisualizationRun:
    """What :func:`visualize_checkpoint` did: the plan, the settings used, the result and the
    files written (grid, ``.npy``, snapshots)."""

    plan: Plan
    config: VisualizeConfig
    result: Visualization
    files: list[str] = field(default_factory=list)


def objectives_for(graph: Graph, config: VisualizeConfig) -> list[str]:
    """The objective specs: ``config.objectives``, or one per unit of axis 1 of ``each``."""
    if config.objectives:
        return list(config.objectives)
    if config.each:
        each = config.each
        try:
            node, port = graph.resolve(each)
        except KeyError as e:
            raise FlowgradError(f"each: {e.args[0]}") from None
        spec = graph.specs(node)[port]
        if spec.ndim < 2 or spec.shape[1] is None:
            raise FlowgradError(f"each: '{each}' has no fixed axis 1 (shape {spec.shape})")
        if spec.ndim == 2:
            return [f"{each}[{k}]" for k in range(spec.shape[1])]
        return [f"channel({each}, {k})" for k in range(spec.shape[1])]
    raise FlowgradError("say what to maximise: objectives (--objective SPEC, repeatable) or "
                        "each (--each NODE: one image per unit)")


def optimize_images(plan: Plan, config: VisualizeConfig | None = None, *,
                    input: str | None = None, diversity: tuple[str, float] | None = None,
                    clip: bool = False, seed: int = 0, snapshot_every: int = 0,
                    progress: bool = False, registry: Any = None) -> Visualization:
    """One image per objective of ``config`` (default: the graph's ``visualize:`` section),
    optimized together.  ``input`` defaults to the graph's only float input; ``clip`` clips
    into ``config.range`` instead of squashing with a sigmoid; ``diversity`` is
    ``(node, weight)`` for the batch's Gram-matrix diversity term."""
    graph = plan.graph
    config = from_graph(graph) if config is None else config
    if input is None:
        floats = [n for n in graph.inputs if graph.spec_of(n).dtype.kind == "f"]
        input = floats[0] if len(floats) == 1 else None
    size = max(view_shape(graph.spec_of(input).shape[1:])[1:]) if input is not None else 8
    transforms = parse_transforms(config.transforms or ("default" if size >= 16 else "none"),
                                  size, registry)
    return visualize(plan, objectives_for(graph, config), input=input, steps=config.steps,
                     lr=config.lr, optimizer=config.optimizer, param=config.param,
                     value_range=config.range, range_mode="clip" if clip else "sigmoid",
                     transforms=transforms, penalties=config.penalties, diversity=diversity,
                     seed=seed, progress=progress, snapshot_every=snapshot_every,
                     registry=registry)


def visualize_checkpoint(graph: Graph | str, out: str, checkpoint: str | None = None, *,
                         dtype: str = "float32", registry: Any = None, input: str | None = None,
                         diversity: tuple[str, float] | None = None, clip: bool = False,
                         seed: int = 0, snapshot_every: int = 0, progress: bool = False,
                         **settings: Any) -> VisualizationRun:
    """Optimize images for the graph with the params of ``checkpoint`` and write the labelled
    PNG grid ``out`` (captions: each objective's final value), the images as ``.npy`` beside
    it and any snapshots.  ``settings`` override the graph's ``visualize:`` section
    (``objectives=``, ``each=``, ``steps=``, ``lr=``, ``penalties=``… — any
    :class:`VisualizeConfig` field; None leaves it as it is)."""
    if not isinstance(graph, Graph):
        graph = load(graph, registry=registry)
    plan = compile(graph, dtype=dtype)
    if checkpoint:
        load_params(plan, checkpoint)
    config = from_graph(graph).replace(**settings)
    result = optimize_images(plan, config, input=input, diversity=diversity, clip=clip,
                             seed=seed, snapshot_every=snapshot_every, progress=progress,
                             registry=registry)
    captions = [f"{label}\n= {v:.3g}" for label, v in zip(result.labels, result.values[-1])]
    files = save_outputs(result, out, value_range=config.range, title=graph.name,
                         captions=captions)
    return VisualizationRun(plan, config, result, files)
