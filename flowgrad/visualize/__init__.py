"""Visualizing neurons by optimizing inputs (feature visualization).

    from flowgrad.visualize import visualize, save_outputs
    result = visualize(plan, [f"logits[{k}]" for k in range(10)], steps=200)
    save_outputs(result, "out/logits.png")      # labelled PNG grid + .npy arrays

See :mod:`.objectives` (what to maximise; lucid's extra ones in :mod:`.lucid_objectives`,
batch terms in :mod:`.batch`), :mod:`.param` (pixels, Fourier 1/f, colour decorrelation,
sigmoid range; :mod:`.cppn` and :mod:`.lowres` for lucid's CPPN, low-resolution and Laplacian
pyramid), :mod:`.transforms` (pad/jitter/scale/rotate), :mod:`.penalties` (L1, L2, TV, blur),
:mod:`.preprocess` (a model's mean/std, channel order, value range), :mod:`.optimize` (the
loop) and :mod:`.layer` (every channel of a layer into one grid, resumably).  docs/lucid.md
maps lucid's API to these.
"""
from __future__ import annotations

import os

import numpy as np

from .cppn import CPPN
from .layer import ChannelImage, LayerRender, render_channels, render_layer
from .lowres import LaplacianPyramid, LowRes
from .objectives import (Alignment, ChannelInterpolate, Combination, Direction, DirectionNeuron,
                         Diversity, Layer, Neuron, Objective, Product, Quotient, channel, logit,
                         objective_factories, parse_objective)
from .optimize import InactiveObjectiveWarning, Visualization, frozen, view_shape, visualize
from .param import Fourier, Pipeline, Pixels
from .penalties import PENALTIES, apply_penalties, parse_penalties
from .preprocess import PRESETS as PREPROCESS_PRESETS
from .preprocess import Preprocess, preprocess_of
from .transforms import Transforms, parse_transforms


def save_outputs(result: Visualization, path: str, value_range=(0.0, 1.0), title: str = "",
                 captions: list[str] | None = None) -> list[str]:
    """Write the labelled PNG grid at ``path``, the images as ``<stem>.npy`` beside it and each
    snapshot as ``<stem>_step<k>.png``; return the paths written."""
    from ..plots import image_grid
    stem, _ = os.path.splitext(path)
    labels = captions or result.labels
    written = [image_grid(list(result.views), labels, path, value_range=value_range,
                          title=title)]
    np.save(stem + ".npy", result.images)
    written.append(stem + ".npy")
    for step, views in result.snapshots:
        written.append(image_grid(list(views), labels, f"{stem}_step{step}.png",
                                  value_range=value_range, title=f"{title} step {step}".strip()))
    return written


__all__ = [
    "Alignment", "CPPN", "ChannelImage", "ChannelInterpolate", "Combination", "Direction",
    "DirectionNeuron", "Diversity", "Fourier", "InactiveObjectiveWarning", "LaplacianPyramid",
    "Layer", "LayerRender", "LowRes", "Neuron", "Objective", "PENALTIES", "PREPROCESS_PRESETS",
    "Pipeline", "Pixels", "Preprocess", "Product", "Quotient", "Transforms", "Visualization",
    "apply_penalties", "channel", "frozen", "logit", "objective_factories", "parse_objective",
    "parse_penalties", "parse_transforms", "preprocess_of", "render_channels", "render_layer",
    "save_outputs", "view_shape", "visualize",
]
