"""Front ends: turn a file (or an in-memory model) into a prepared :class:`~flowgrad.Graph`.

Nothing downstream knows which format a graph came from.
"""
from __future__ import annotations

import os
from typing import Any

from ..errors import FlowgradError
from ..graph import Graph
from ..plugins import Registry


def load(source: Any, registry: Registry | None = None, **options: Any) -> Graph:
    """Load a graph from a YAML file, an ONNX file, an ``onnx.ModelProto`` or ONNX bytes.

    The graph is validated, has its branches inserted and its shapes inferred; every problem is
    reported at once as a :class:`~flowgrad.GraphError` located in the source.
    """
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        ext = os.path.splitext(path)[1].lower()
        if ext in (".yaml", ".yml"):
            from .yaml_loader import load_yaml
            return load_yaml(path, registry=registry, **options)
        if ext == ".onnx":
            from .onnx_loader import load_onnx
            return load_onnx(path, registry=registry, **options)
        raise FlowgradError(f"{path}: cannot tell the format from the extension '{ext}'; "
                            "use .yaml/.yml for flowgrad graphs or .onnx for ONNX models")
    if isinstance(source, (bytes, bytearray)) or type(source).__name__ == "ModelProto":
        from .onnx_loader import load_onnx
        return load_onnx(source, registry=registry, **options)
    raise FlowgradError(f"cannot load a graph from {type(source).__name__}; pass a path to a "
                        ".yaml or .onnx file, an onnx.ModelProto or ONNX bytes")
