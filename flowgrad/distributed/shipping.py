"""Shipping a graph to workers once, and the compiled plans they keep.

What travels is the graph's *source* — YAML text or ONNX bytes — with the paths of the plugin
files it needs and the names of the installed plugins the driver loaded, never pickled ops:
a worker loads it with its own registry, so a plugin missing on a worker is named in a clear
error instead of failing inside unpickling.  Each worker compiles a source once and keeps the
plan on the worker object, keyed by a hash of the source, the dtype and the params, so later
tasks of the same run (or of a rerun) reuse it.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ..errors import FlowgradError
from ..graph import Graph
from ..plan import Plan, compile
from ..plugins import Registry, default_registry, make_registry


@dataclass(frozen=True)
class GraphSource:
    """A graph as it is sent: ``kind`` ``"yaml"`` or ``"onnx"``, its ``payload`` (text or
    bytes), the ``path`` it was read from (for messages, and the relative ``weights:`` and
    ``include:`` files of a YAML graph, which workers must see at the same path), the plugin
    ``plugin_paths`` to load and the installed plugins (``entry_points``) the driver used."""

    kind: str
    payload: str | bytes
    path: str
    plugin_paths: tuple[str, ...] = ()
    entry_points: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """A content hash: equal sources compile to equal plans."""
        digest = hashlib.sha256()
        for part in (self.kind, self.path, *self.plugin_paths, "|", *self.entry_points):
            digest.update(part.encode() + b"\0")
        digest.update(self.payload.encode() if isinstance(self.payload, str) else self.payload)
        return digest.hexdigest()


def ship(graph: Graph | str, registry: Registry | None = None) -> GraphSource:
    """The source of ``graph`` (a path, or a graph loaded from a file) and of the plugins
    ``registry`` (default: the process's) loaded."""
    path = graph if isinstance(graph, str) else graph.source
    if not path or not os.path.isfile(path):
        name = graph if isinstance(graph, str) else graph.name
        raise FlowgradError(f"graph '{name}' has no file to send to the workers; save it as "
                            ".yaml or .onnx first")
    ext = os.path.splitext(path)[1].lower()
    if ext in (".yaml", ".yml"):
        with open(path, encoding="utf-8") as f:
            kind, payload = "yaml", f.read()
    elif ext == ".onnx":
        with open(path, "rb") as f:
            kind, payload = "onnx", f.read()
    else:
        raise FlowgradError(f"{path}: a distributed run needs a .yaml or .onnx graph")
    registry = registry or default_registry()
    files = tuple(os.path.abspath(p.origin) for p in registry.plugins
                  if p.kind in ("file", "package"))
    installed = tuple(p.name for p in registry.plugins if p.kind == "entry point")
    return GraphSource(kind, payload, os.path.abspath(path), files, installed)


def worker_cache() -> dict[str, Any]:
    """This worker's store of plans and replicas (a plain dict on the Dask worker object)."""
    from distributed import get_worker
    worker = get_worker()
    if not hasattr(worker, "flowgrad_cache"):
        worker.flowgrad_cache = {}
    return worker.flowgrad_cache


def worker_registry(source: GraphSource) -> Registry:
    """The registry a worker loads ``source``'s plugins into, built once per plugin set; a
    plugin the driver had and this worker lacks is an error naming it."""
    from distributed import get_worker
    cache = worker_cache()
    key = ("registry", source.plugin_paths, source.entry_points)
    if key not in cache:
        absent = [p for p in source.plugin_paths if not os.path.exists(p)]
        # installed plugins are loaded only if the driver had some: the same table of ops
        registry = make_registry(paths=[p for p in source.plugin_paths if p not in absent],
                                 autoload=bool(source.entry_points))
        loaded = {p.name for p in registry.plugins}
        absent += [f"{name} (installed plugin)" for name in source.entry_points
                   if name not in loaded]
        if absent:
            raise FlowgradError(f"worker {get_worker().address} cannot load the plugins "
                                f"{source.path} needs: {', '.join(absent)}; install them (or "
                                "put the plugin files at the same paths) on every worker")
        cache[key] = registry
    return cache[key]


def worker_graph(source: GraphSource) -> Graph:
    """``source`` loaded on this worker (once: loading is the slow part of compiling)."""
    cache = worker_cache()
    key = ("graph", source.key)
    if key not in cache:
        from ..loaders import load
        from ..loaders.yaml_loader import load_yaml
        registry = worker_registry(source)
        cache[key] = (load_yaml(source.path, registry=registry, text=source.payload)
                      if source.kind == "yaml" else load(source.payload, registry=registry))
    return cache[key]


def worker_plan(source: GraphSource, dtype: str, params: Mapping[str, np.ndarray] | None = None,
                params_key: str = "", seed: int = 0) -> Plan:
    """The plan of ``source`` on this worker, compiled on first use; ``params`` (identified by
    ``params_key``) are loaded into it once."""
    cache = worker_cache()
    key = ("plan", source.key, dtype, seed, params_key)
    if key not in cache:
        plan = compile(worker_graph(source), dtype=dtype, seed=seed)
        if params is not None:
            plan.load_state_dict(params)
        cache[key] = plan
    return cache[key]


def params_digest(params: Mapping[str, np.ndarray]) -> str:
    """A hash of params' names and bytes: which weights a cached plan holds."""
    digest = hashlib.sha256()
    for name in sorted(params):
        digest.update(name.encode() + b"\0")
        digest.update(np.ascontiguousarray(params[name]).tobytes())
    return digest.hexdigest()
