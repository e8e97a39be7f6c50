"""Visualizing neurons as configured: the graph's ``visualize:`` section, overridden by
keyword settings, turned into one :func:`flowgrad.visualize` call (``flowgrad visualize``) or
one :func:`flowgrad.visualize.render_layer` call (``flowgrad visualize --all-channels``).

What the section leaves to the graph is settled here: one objective per unit or channel of
``each``; the input to optimize, when the graph has a single float one; its size (the declared
one, or ``input_shape`` for free dimensions); the transforms, which default to ``default`` for
images of 16 pixels or more and ``none`` below; the start (``mean:DATA``: the mean input of a
data set); and whether the weights are random (no checkpoint, every weight from an
initializer), which the grid's title and the command say, since an untrained network's
images look like structured noise and are easily mistaken for a failed run.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .. import Plan, compile, load
from ..checkpoint import load_params
from ..errors import FlowgradError
from ..graph import Graph
from ..visualize import (LayerRender, Visualization, parse_transforms, render_layer,
                         save_outputs, view_shape, visualize)
from ..visualize.objectives import quote_ref
from ..visualize.param import Fourier, Pixels
from ..visualize.settings import VisualizeConfig, from_graph

#: appended to a grid's title when the network is untrained
RANDOM_WEIGHTS = "random weights"


@dataclass
class VisualizationRun:
    """What :func:`visualize_checkpoint` did: the plan, the settings used, the result, the
    files written (grid, ``.npy``, threshold and snapshot grids) and whether the weights were
    ``random`` (no checkpoint, every weight from its initializer)."""

    plan: Plan
    config: VisualizeConfig
    result: Visualization
    files: list[str] = field(default_factory=list)
    random: bool = False


@dataclass
class LayerRun:
    """What :func:`render_layer_checkpoint` did: the plan, the settings, the layer, the render
    (channels, values, how many were resumed from an earlier run, the inactive channels), the
    files written and whether the weights were ``random``."""

    plan: Plan
    config: VisualizeConfig
    layer: str
    render: LayerRender
    files: list[str] = field(default_factory=list)
    random: bool = False


def random_weights(graph: Graph, checkpoint: str | None = None) -> bool:
    """Whether the network is untrained: no checkpoint, and every trainable param comes from
    a (random) initializer rather than a weights file, an ONNX initializer or a given value."""
    if checkpoint:
        return False
    trainable = [n for n in graph.params if graph.is_trainable(n)]
    inits = [graph.extra(n, "init") for n in trainable]
    return bool(trainable) and all(isinstance(i, dict) and i.get("kind") != "value"
                                   for i in inits)


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
        each = quote_ref(each)           # a model's own name: 'save_infer_model/scale_0.tmp_1'
        if spec.ndim == 2:
            return [f"{each}[{k}]" for k in range(spec.shape[1])]
        return [f"channel({each}, {k})" for k in range(spec.shape[1])]
    raise FlowgradError("say what to maximise: objectives (--objective SPEC, repeatable) or "
                        "each (--each NODE: one image per unit)")


class StartFrom:
    """The ``pixels`` or ``fourier`` parameterization starting at a given image instead of
    faint noise: a factory for :class:`~flowgrad.visualize.param.Pipeline`
    (``param=StartFrom(...)``).

    ``image`` is in display units; the start is the parameter that the parameterization and
    the range mapping turn into it: the sigmoid's inverse (clamped away from the saturated
    ends, where its gradient vanishes), then for ``fourier`` the inverse of its scaled
    spectrum.  Colours are not decorrelated: the start is an image, not a mix."""

    KINDS = ("pixels", "fourier")

    def __init__(self, kind: str, image: np.ndarray, value_range: tuple[float, float],
                 range_mode: str, name: str):
        low, high = value_range
        if range_mode == "sigmoid":
            s = np.clip((image - low) / (high - low), 0.02, 0.98)
            image = np.log(s / (1.0 - s))
        self.kind = kind
        self.start = np.asarray(image, dtype=np.float64)
        self.name = name

    def __call__(self, shape, *, sd: float, decay: float) -> Pixels | Fourier:
        if self.start.size != math.prod(shape):
            raise FlowgradError(f"start: {self.name} has {self.start.size} values per sample, "
                                f"the image {shape} has {math.prod(shape)}")
        image = self.start.reshape(shape)
        if self.kind == "pixels":
            base, p = Pixels(shape, sd=sd), image
        else:
            base = Fourier(shape, decay=decay, sd=sd)
            spectrum = np.fft.rfft2(image, norm="ortho") / base.scale
            p = np.stack([spectrum.real, spectrum.imag], axis=-1)
        base.init = lambda rng: p.copy()
        base.colour_decorrelation = False
        return base

    def __repr__(self) -> str:           # what a layer render's recorded settings name
        return f"{self.kind} from {self.name}"


def parameterization(config: VisualizeConfig, clip: bool = False,
                     registry: Any = None) -> "str | StartFrom":
    """``config.param``, or for ``start: mean:DATA`` the parameterization starting at the
    mean input of that data set."""
    if config.start == "noise":
        return config.param
    if config.param not in StartFrom.KINDS:
        raise FlowgradError(f"start: '{config.start}' needs param: pixels or fourier, not "
                            f"'{config.param}' (or start from noise: --start noise)")
    from ..data import load_data
    data = config.start.split(":", 1)[1]
    try:
        features = load_data(data, registry).x
    except FlowgradError as e:
        raise FlowgradError(f"start: {e.diagnostics[0].message}") from None
    if features is None or not len(features):
        raise FlowgradError(f"start: '{data}' has no features array to average (its arrays "
                            "are named after graph inputs, or it is empty); name the features "
                            "x, or start from noise: --start noise")
    mean = np.asarray(features, dtype=np.float64).mean(axis=0)
    return StartFrom(config.param, mean, config.range, "clip" if clip else "sigmoid",
                     f"mean:{data}")


def image_input(graph: Graph, input: str | None,
                input_shape: Sequence[int] | None) -> tuple[str | None, tuple[int, ...] | None]:
    """The input to optimize (given, or the graph's only float input) and one sample's shape
    (``input_shape``, or the declared one; None when the input has free dimensions and no
    ``input_shape`` was given: :func:`visualize` then says so)."""
    if input is None:
        floats = [n for n in graph.inputs if graph.spec_of(n).dtype.kind == "f"]
        input = floats[0] if len(floats) == 1 else None
    if input_shape is not None:
        return input, tuple(input_shape)
    if input is None or input not in graph.inputs:
        return input, None
    declared = tuple(graph.spec_of(input).shape[1:])
    return input, None if None in declared else declared


def visualize_options(plan: Plan, config: VisualizeConfig, *, input: str | None = None,
                      clip: bool = False, seed: int = 0, registry: Any = None) -> dict[str, Any]:
    """The keyword arguments of :func:`visualize` (and of ``render_layer``) that ``config``
    settles: everything but the objectives, thresholds, snapshots and progress."""
    input, shape = image_input(plan.graph, input, config.input_shape)
    size = max(view_shape(shape)[1:]) if shape is not None else 8
    transforms = parse_transforms(config.transforms or ("default" if size >= 16 else "none"),
                                  size, registry)
    return dict(input=input, steps=config.steps, lr=config.lr, optimizer=config.optimizer,
                param=parameterization(config, clip, registry), value_range=config.range,
                range_mode="clip" if clip else "sigmoid", transforms=transforms,
                penalties=config.penalties, preprocess=config.preprocess,
                input_shape=config.input_shape, seed=seed, registry=registry)


def optimize_images(plan: Plan, config: VisualizeConfig | None = None, *,
                    input: str | None = None, diversity: tuple[str, float] | None = None,
                    clip: bool = False, seed: int = 0, snapshot_every: int = 0,
                    progress: bool = False, registry: Any = None) -> Visualization:
    """One image per objective of ``config`` (default: the graph's ``visualize:`` section),
    optimized together, keeping the images at ``config.thresholds``.  ``input`` defaults to
    the graph's only float input; ``clip`` clips into ``config.range`` instead of squashing
    with a sigmoid; ``diversity`` is ``(node, weight)`` for the batch's Gram-matrix diversity
    term."""
    config = from_graph(plan.graph) if config is None else config
    options = visualize_options(plan, config, input=input, clip=clip, seed=seed,
                                registry=registry)
    return visualize(plan, objectives_for(plan.graph, config), diversity=diversity,
                     progress=progress, snapshot_every=snapshot_every,
                     thresholds=config.thresholds, **options)


def prepare(graph: Graph | str, checkpoint: str | None, dtype: str, registry: Any,
            settings: dict[str, Any]) -> tuple[Plan, VisualizeConfig, bool]:
    """The compiled plan with the checkpoint's params, the section with ``settings`` applied
    and whether the weights are random."""
    if not isinstance(graph, Graph):
        graph = load(graph, registry=registry)
    plan = compile(graph, dtype=dtype)
    if checkpoint:
        load_params(plan, checkpoint)
    return plan, from_graph(graph).replace(**settings), random_weights(graph, checkpoint)


def title_of(graph: Graph, what: str, random: bool) -> str:
    """A grid's title: the graph's name, what is shown, and the random-weights note."""
    return f"{graph.name}: {what}" + (f" ({RANDOM_WEIGHTS})" if random else "")


def visualize_checkpoint(graph: Graph | str, out: str, checkpoint: str | None = None, *,
                         dtype: str = "float32", registry: Any = None, input: str | None = None,
                         diversity: tuple[str, float] | None = None, clip: bool = False,
                         seed: int = 0, snapshot_every: int = 0, progress: bool = False,
                         **settings: Any) -> VisualizationRun:
    """Optimize images for the graph with the params of ``checkpoint`` and write the labelled
    PNG grid ``out`` (captions: each objective's final value, the penalties apart), the images
    as ``.npy`` beside it and a grid per threshold and snapshot.  ``settings`` override the
    graph's ``visualize:`` section (``objectives=``, ``each=``, ``steps=``, ``thresholds=``,
    ``preprocess=``, ``input_shape=``… — any :class:`VisualizeConfig` field; None leaves it
    as it is)."""
    plan, config, random = prepare(graph, checkpoint, dtype, registry, settings)
    result = optimize_images(plan, config, input=input, diversity=diversity, clip=clip,
                             seed=seed, snapshot_every=snapshot_every, progress=progress,
                             registry=registry)
    files = save_outputs(result, out, value_range=config.range, captions=result.captions(),
                         title=title_of(plan.graph, "inputs maximising each objective", random))
    return VisualizationRun(plan, config, result, files, random)


def render_layer_checkpoint(graph: Graph | str, layer: str, out: str,
                            checkpoint: str | None = None, *,
                            channels: Sequence[int] | None = None, batch: int = 8,
                            dtype: str = "float32", registry: Any = None,
                            input: str | None = None, clip: bool = False, seed: int = 0,
                            progress: bool = False,
                            on_batch: Callable[[int, int], Any] | None = None,
                            **settings: Any) -> LayerRun:
    """Render every channel of ``layer`` (or ``channels``) into the labelled grid ``out``,
    ``batch`` channels per optimization, resumably (finished channels are kept in
    ``out + ".parts"`` and skipped by a rerun with the same settings).  ``settings`` override
    the graph's ``visualize:`` section as for :func:`visualize_checkpoint`; objectives,
    ``each`` and thresholds do not apply (one final image per channel)."""
    plan, config, random = prepare(graph, checkpoint, dtype, registry, settings)
    options = visualize_options(plan, config, input=input, clip=clip, seed=seed,
                                registry=registry)
    render = render_layer(plan, layer, channels, batch=batch, out=out, progress=progress,
                          on_batch=on_batch, title=title_of(plan.graph, layer, random),
                          **options)
    return LayerRun(plan, config, layer, render, list(render.files), random)
