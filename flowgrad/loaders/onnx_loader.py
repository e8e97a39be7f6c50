"""The ONNX front end: an ONNX model (file, bytes or ModelProto) becomes a flowgrad Graph.

Steps: read the model (external data checked to stay beside it, see
:mod:`flowgrad.onnx.model_io`), check its structure (tensors, inputs, each node against its
ONNX schema: :mod:`flowgrad.onnx.checks`, every problem at once, before anything is allocated
or translated), normalise very old opsets, check that every node has a
translation for its opset version (reporting *all* missing ones at once), classify initializers
(float ones become trainable params, running statistics become state, shape-like ones constants),
translate node by node with constant folding (:mod:`flowgrad.onnx.builder`), then run the usual
passes.  ONNX names are sanitized to ``[A-Za-z0-9_-]``; ``graph.meta["onnx"]`` maps them back.
"""
from __future__ import annotations

from typing import Any

from ..graph import Graph
from ..passes import prepare
from ..plugins import Registry, default_registry


def load_onnx(source: Any, registry: Registry | None = None, *, dynamic_batch: bool = True,
              base_dir: str | None = None, name: str | None = None) -> Graph:
    """Load an ONNX model as a prepared :class:`~flowgrad.Graph`.

    ``source`` is a path, ``bytes`` or an ``onnx.ModelProto``.  With ``dynamic_batch`` (the
    default) the leading axis of every graph input is the batch axis and may change from batch
    to batch, even if the model fixes it; pass False to keep the model's static dims.
    ``base_dir`` locates external tensor files for in-memory models.
    """
    from ..errors import GraphError
    from ..onnx.checks import check_model
    from ..onnx.importer import Importer
    from ..onnx.model_io import normalise, opset_versions, read_model

    model, where = read_model(source, base_dir)
    original = opset_versions(model)
    problems = check_model(model, original)
    if problems:
        raise GraphError(problems)
    model = normalise(model)
    importer = Importer(model, registry or default_registry(), where,
                        dynamic_batch=dynamic_batch)
    graph = importer.build(name)
    graph.meta["onnx"]["source_opset"] = original
    return prepare(graph)


__all__ = ["load_onnx"]
