"""Reading ONNX models safely: files, bytes or protos; external data; old opsets.

External tensors are read from beside the model, and only from there (:mod:`.external`): a
``location`` that is absolute or resolves (through ``..`` or symlinks) outside the model's
folder is refused, because opening a model must not read arbitrary files.
"""
from __future__ import annotations

import os
from typing import Any

import onnx

from ..errors import GraphError
from .checks import text_problems
from .external import load_external
from .translations import canonical_domain

#: the oldest opset the handlers implement directly; older models go through version_converter
NATIVE_MIN_OPSET = 7


def read_model(source: Any, base_dir: str | None = None) -> tuple[onnx.ModelProto, str]:
    """Return ``(model, name for messages)`` with external data loaded and checked."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        try:
            model = onnx.load(path, load_external_data=False)
        except FileNotFoundError:
            raise GraphError(f"{path}: no such file") from None
        except Exception as e:
            raise GraphError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})") from None
        base_dir = os.path.dirname(os.path.abspath(path)) if base_dir is None else base_dir
        where = path
    elif isinstance(source, (bytes, bytearray)):
        try:
            model = onnx.load_from_string(bytes(source))
        except Exception as e:
            raise GraphError(f"the bytes given are not an ONNX model ({type(e).__name__}: {e})") \
                from None
        where = "<onnx bytes>"
    else:
        model = onnx.ModelProto()
        model.CopyFrom(source)
        where = f"<onnx model {model.graph.name or 'unnamed'}>"
    problems = text_problems(model) or load_external(model, base_dir, where)
    if problems:
        raise GraphError(problems)
    return model, where


def opset_versions(model: onnx.ModelProto) -> dict[str, int]:
    """``{domain: version}``; the default domain is ``""`` (``ai.onnx`` is folded into it)."""
    out = {}
    for entry in model.opset_import:
        out[canonical_domain(entry.domain)] = int(entry.version)
    if "" not in out and model.graph.node:
        out[""] = 1
    return out


def normalise(model: onnx.ModelProto) -> onnx.ModelProto:
    """Convert a model older than :data:`NATIVE_MIN_OPSET` with ``onnx.version_converter``.

    If the converter cannot handle the model, it is returned unchanged and the per-version
    handlers translate what they can (the rest is reported as unsupported).
    """
    version = opset_versions(model).get("", NATIVE_MIN_OPSET)
    if version >= NATIVE_MIN_OPSET:
        return model
    from onnx import version_converter
    try:
        converted = version_converter.convert_version(model, NATIVE_MIN_OPSET)
    except Exception:
        return model
    converted.ir_version = max(converted.ir_version, 3)
    return converted
