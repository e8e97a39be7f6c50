"""Rendering every channel of a layer into one labelled grid, resumably.

A layer of 512 channels is hours of optimization; a crash or a Ctrl-C must not lose what was
done.  So :func:`render_layer` renders the channels in batches (``batch`` channels per
:func:`~.optimize.visualize` call, one forward/backward for all of them), saves each channel's
image as soon as its batch finishes (``OUT.parts/channel_0007.npz``), and on a rerun skips the
channels already there.  Channel ``k``'s image depends only on the settings, the seed and
``k`` (its generator is seeded by its id, not by its place in a batch), so a resumed render
produces the grid an uninterrupted one would, byte for byte.  The parts folder records the
settings and a hash of the params: resuming with other settings or other weights is refused
rather than mixing two renders in one grid.

:func:`render_channels` is the unit of work — "render these channel ids" — that a worker of a
distributed render calls; :func:`render_layer` is the single-process driver around it.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import FlowgradError
from ..plan import Plan
from .objectives import Neuron
from .optimize import visualize

#: visualize options that make no sense for a grid of final images
_NOT_FOR_LAYERS = ("objectives", "ids", "thresholds", "snapshot_every", "callback", "progress",
                   "diversity")


@dataclass
class ChannelImage:
    """One rendered channel: its image ``view`` ``(C, H, W)``, final objective ``value``,
    ``penalty`` (apart) and whether its objective's gradient stayed zero (``inactive``)."""

    view: np.ndarray
    value: float
    penalty: float
    inactive: bool


@dataclass
class LayerRender:
    """What :func:`render_layer` made: the ``channels`` in grid order, their images and values,
    how many were ``resumed`` from parts, the ``inactive`` channels, the ``files`` written and
    each channel's ``penalties`` (apart from its value)."""

    channels: list[int]
    views: np.ndarray
    values: np.ndarray
    resumed: int
    inactive: list[int] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    penalties: np.ndarray | None = None


def layer_channels(plan: Plan, layer: str) -> int:
    """The number of channels (axis 1) of the value ``layer``."""
    graph = plan.graph
    try:
        node, port = graph.resolve(layer)
    except KeyError as e:
        raise FlowgradError(f"layer: {e.args[0]}") from None
    spec = graph.specs(node)[port]
    if spec.ndim < 2 or spec.shape[1] is None:
        raise FlowgradError(f"layer '{layer}' has no fixed axis 1 to take channels from "
                            f"(shape {spec.shape})")
    return int(spec.shape[1])


def render_channels(plan: Plan, layer: str, channel_ids: Sequence[int], *, batch: int = 8,
                    **options: Any) -> dict[int, ChannelImage]:
    """Render channels ``channel_ids`` of ``layer`` (each maximising its mean activation),
    ``batch`` per :func:`visualize` call; ``options`` are visualize's (steps, param,
    penalties, transforms, preprocess, input_shape, seed…).  A channel's image is the same
    whichever call, batch or process renders it."""
    _check_options(options)
    if batch < 1:
        raise FlowgradError(f"batch must be at least 1, got {batch}")
    ids = [int(k) for k in channel_ids]
    out: dict[int, ChannelImage] = {}
    for start in range(0, len(ids), batch):
        chunk = ids[start:start + batch]
        result = visualize(plan, [Neuron(layer, k) for k in chunk], ids=chunk, **options)
        inactive = set(result.inactive)
        for i, k in enumerate(chunk):
            out[k] = ChannelImage(result.views[i], float(result.values[-1][i]),
                                  float(result.penalties[-1][i]),
                                  result.labels[i] in inactive)
    return out


def render_layer(plan: Plan, layer: str, channels: Sequence[int] | None = None, batch: int = 8,
                 out: str = "layer.png", *, progress: bool = False,
                 on_batch: Callable[[int, int], Any] | None = None,
                 value_range: tuple[float, float] = (0.0, 1.0), title: str | None = None,
                 **options: Any) -> LayerRender:
    """Render every channel of ``layer`` (or ``channels``) into the labelled grid ``out``.

    Each finished batch is saved under ``out + ".parts"`` and a rerun resumes from there.
    ``progress`` shows a bar over channels; ``on_batch(done, total)`` is called after each
    batch (raising from it stops the render, keeping the parts).  Writes ``out`` and
    ``<stem>.npy`` (the images ``(channels, C, H, W)``); ``options`` go to :func:`visualize`.
    """
    _check_options(options)
    count = layer_channels(plan, layer)
    ids = list(range(count)) if channels is None else [int(k) for k in channels]
    bad = [k for k in ids if not 0 <= k < count]
    if bad or not ids or len(set(ids)) != len(ids):
        raise FlowgradError(f"channels must be distinct ids in 0..{count - 1} of '{layer}', "
                            f"got {bad or ids}")
    parts = out + ".parts"
    settings = dict(options, value_range=value_range)
    claim_parts(parts, parts_fingerprint(plan, layer, batch, settings))
    done = {k for k in ids if os.path.exists(part_path(parts, k))}
    todo = [k for k in ids if k not in done]
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(ids), initial=len(done), unit="channel", desc=f"render {layer}",
                   dynamic_ncols=True, disable=None)
    try:
        for start in range(0, len(todo), batch):
            chunk = todo[start:start + batch]
            rendered = render_channels(plan, layer, chunk, batch=batch,
                                       value_range=value_range, **options)
            for k, image in rendered.items():
                save_part(parts, k, image)
            if bar is not None:
                bar.update(len(chunk))
            if on_batch is not None:
                on_batch(len(done) + start + len(chunk), len(ids))
    finally:
        if bar is not None:
            bar.close()
    images = [load_part(parts, k) for k in ids]
    views = np.stack([im.view for im in images])
    values = np.array([im.value for im in images])
    shown = any(im.penalty for im in images)       # the penalties apart, as in captions()
    captions = [f"channel {k}\n= {im.value:.3g}" + (f"\npenalties {im.penalty:.3g}" if shown
                                                    else "") for k, im in zip(ids, images)]
    from ..plots import image_grid
    stem, _ = os.path.splitext(out)
    grid = image_grid(list(views), captions, out, value_range=value_range,
                      columns=math.ceil(math.sqrt(len(ids))),
                      title=layer if title is None else title)
    np.save(stem + ".npy", views)
    return LayerRender(ids, views, values, resumed=len(done),
                       inactive=[k for k, im in zip(ids, images) if im.inactive],
                       files=[grid, stem + ".npy"],
                       penalties=np.array([im.penalty for im in images]))


def _check_options(options: dict[str, Any]) -> None:
    given = [k for k in _NOT_FOR_LAYERS if k in options]
    if given:
        raise FlowgradError(f"a layer render does not take {', '.join(given)}: it renders one "
                            "final image per channel")


def parts_fingerprint(plan: Plan, layer: str, batch: int, options: dict[str, Any]) -> dict:
    """What a part depends on: the settings (named, not addressed: a function by its
    qualified name) and the params' bytes.  The registry is left out: each process builds
    its own, and what it resolves (a parameterization, an optimizer) is named already."""
    digest = hashlib.sha256()
    for name in sorted(plan.params):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(plan.params[name]).tobytes())

    def text(value: Any) -> str:
        if callable(value) and hasattr(value, "__qualname__"):
            return f"{getattr(value, '__module__', '')}.{value.__qualname__}"
        return repr(value)
    return {"layer": layer, "batch": batch, "dtype": str(plan.dtype),
            "params": digest.hexdigest(),
            "options": {k: text(v) for k, v in sorted(options.items()) if k != "registry"}}


def claim_parts(parts: str, fingerprint: dict) -> None:
    """Create the parts folder with its settings, or check those of an earlier render."""
    path = os.path.join(parts, "settings.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            before = json.load(f)
        if before != fingerprint:
            changed = sorted(k for k in set(before) | set(fingerprint)
                             if before.get(k) != fingerprint.get(k))
            raise FlowgradError(f"'{parts}' holds channels rendered with other settings "
                                f"({', '.join(changed)} differ); delete it to start over or "
                                "render with the same settings")
        return
    os.makedirs(parts, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(fingerprint, f, indent=1, sort_keys=True)


def part_path(parts: str, k: int) -> str:
    return os.path.join(parts, f"channel_{k:04d}.npz")


def save_part(parts: str, k: int, image: ChannelImage) -> None:
    """Write one channel atomically: an interrupted write never leaves a part to resume from."""
    path = part_path(parts, k)
    with open(path + ".tmp", "wb") as f:
        np.savez(f, view=image.view, value=image.value, penalty=image.penalty,
                 inactive=image.inactive)
    os.replace(path + ".tmp", path)


def load_part(parts: str, k: int) -> ChannelImage:
    """A finished channel, read back through the one checked reader (a part damaged by a
    crash is a located error, not a traceback)."""
    from ..arrays import read_arrays
    data = read_arrays(part_path(parts, k), "rendered channel")
    missing = sorted({"view", "value", "penalty", "inactive"} - set(data))
    if missing:
        from ..errors import FlowgradError
        raise FlowgradError(f"{part_path(parts, k)}: a rendered channel without {missing}; delete "
                            "it to render that channel again")
    return ChannelImage(data["view"], float(data["value"]), float(data["penalty"]),
                        bool(data["inactive"]))
