"""Rendering every channel of a layer on Dask workers.

A layer render is embarrassingly parallel: channel ``k``'s image depends only on the settings,
the seed and ``k`` (:func:`flowgrad.visualize.render_channels`).  So the channels still to do
are cut into tasks of ``batch`` channels, submitted to any worker, and each finished task's
images are written into ``OUT.parts/`` — the folder and format of the single-process
:func:`~flowgrad.visualize.render_layer`, settings fingerprint included — as they arrive.
``render_layer`` itself then assembles the grid from the parts, so the output is the
single-process one by construction, a rerun skips finished channels, and a distributed render
can be resumed by a local one and the other way round.  Dask reruns the task of a lost worker
elsewhere (tasks are not pinned); parts already written are never redone.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Sequence

from distributed import as_completed

from ..errors import FlowgradError
from ..graph import Graph
from ..plan import Plan
from ..visualize import LayerRender, render_channels, render_layer
from ..visualize.layer import (claim_parts, layer_channels, part_path, parts_fingerprint,
                               save_part)
from ..workflows.visualizing import LayerRun, prepare, title_of, visualize_options
from .cluster import broadcast, connect
from .shipping import GraphSource, params_digest, ship, worker_plan, worker_registry


def render_layer_distributed(plan: Plan, layer: str, channels: Sequence[int] | None = None,
                             batch: int = 8, out: str = "layer.png", *, client: Any = None,
                             cluster: str | None = None, workers: int | None = None,
                             source: GraphSource | None = None, registry: Any = None,
                             progress: bool = False,
                             on_batch: Callable[[int, int], Any] | None = None,
                             value_range: tuple[float, float] = (0.0, 1.0),
                             title: str | None = None, **options: Any) -> LayerRender:
    """:func:`~flowgrad.visualize.render_layer` with the channels rendered on Dask workers.

    The arguments are ``render_layer``'s, plus where to run (``client``, ``cluster`` or a
    ``LocalCluster`` of ``workers``) and the ``source`` to ship (default: ``plan.graph``'s file
    and ``registry``'s plugins); the plan's current params are sent once.  ``on_batch(done,
    total)`` is called as each task's channels arrive, in completion order.  ``resumed`` of the
    result counts the channels found in ``OUT.parts`` before this call.
    """
    options = dict(options, value_range=value_range)
    count = layer_channels(plan, layer)
    ids = list(range(count)) if channels is None else [int(k) for k in channels]
    if batch < 1:
        raise FlowgradError(f"batch must be at least 1, got {batch}")
    bad = [k for k in ids if not 0 <= k < count]
    if bad or not ids or len(set(ids)) != len(ids):
        raise FlowgradError(f"channels must be distinct ids in 0..{count - 1} of '{layer}', "
                            f"got {bad or ids}")
    parts = out + ".parts"
    claim_parts(parts, parts_fingerprint(plan, layer, batch, options))
    done = [k for k in ids if os.path.exists(part_path(parts, k))]
    todo = [k for k in ids if k not in set(done)]
    if todo:
        source = source or ship(plan.graph, registry)
        with connect(cluster, workers, client) as dask_client:
            _render_on(dask_client, plan, source, layer, todo, batch, parts, len(done),
                       len(ids), progress, on_batch, options)
    render = render_layer(plan, layer, ids, batch=batch, out=out, title=title,
                          registry=registry, **options)
    return dataclasses.replace(render, resumed=len(done))


def _render_on(client, plan: Plan, source: GraphSource, layer: str, todo: list[int],
               batch: int, parts: str, done: int, total: int, progress: bool,
               on_batch: Callable[[int, int], Any] | None, options: dict[str, Any]) -> None:
    """Submit ``todo`` in tasks of ``batch`` channels; write each task's parts on arrival."""
    params = plan.state_dict()
    shipped = broadcast(client, {"source": source, "params": params,
                                 "params_key": params_digest(params), "dtype": plan.dtype.name,
                                 "options": {k: v for k, v in options.items()
                                             if k != "registry"}})
    futures = [client.submit(_render, shipped, layer, todo[i:i + batch], batch, pure=False)
               for i in range(0, len(todo), batch)]
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=total, initial=done, unit="channel", desc=f"render {layer}",
                   dynamic_ncols=True, disable=None)
    try:
        for future in as_completed(futures):
            images = future.result()
            for k, image in images.items():
                save_part(parts, k, image)
            done += len(images)
            future.release()
            if bar is not None:
                bar.update(len(images))
            if on_batch is not None:
                on_batch(done, total)
    finally:
        client.cancel(futures)
        if bar is not None:
            bar.close()


def _render(shipped: dict[str, Any], layer: str, ids: list[int], batch: int) -> dict:
    """On a worker: render channels ``ids`` with the shipped plan, params and options."""
    source = shipped["source"]
    plan = worker_plan(source, shipped["dtype"], shipped["params"], shipped["params_key"])
    return render_channels(plan, layer, ids, batch=batch, registry=worker_registry(source),
                           **shipped["options"])


def render_layer_checkpoint(graph: Graph | str, layer: str, out: str,
                            checkpoint: str | None = None, *, client: Any = None,
                            cluster: str | None = None, workers: int | None = None,
                            channels: Sequence[int] | None = None, batch: int = 8,
                            dtype: str = "float32", registry: Any = None,
                            input: str | None = None, clip: bool = False, seed: int = 0,
                            progress: bool = False,
                            on_batch: Callable[[int, int], Any] | None = None,
                            **settings: Any) -> LayerRun:
    """``flowgrad visualize --all-channels --workers N``:
    :func:`flowgrad.render_layer_checkpoint` with the channels rendered on Dask workers;
    returns the same :class:`~flowgrad.workflows.visualizing.LayerRun`."""
    source = ship(graph, registry)
    plan, config, random = prepare(graph, checkpoint, dtype, registry, settings)
    options = visualize_options(plan, config, input=input, clip=clip, seed=seed,
                                registry=registry)
    render = render_layer_distributed(plan, layer, channels, batch=batch, out=out,
                                      client=client, cluster=cluster, workers=workers,
                                      source=source, progress=progress, on_batch=on_batch,
                                      title=title_of(plan.graph, layer, random), **options)
    return LayerRun(plan, config, layer, render, list(render.files), random)
