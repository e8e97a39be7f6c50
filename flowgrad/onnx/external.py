"""Reading tensors stored outside the model file (ONNX "external data"), and only from beside it.

A tensor's ``external_data`` entries name a ``location`` (a path relative to the model's
folder), an ``offset`` and a ``length`` in that file, and optionally a SHA-1 ``checksum``.
They come from the (untrusted) model, so flowgrad reads them itself rather than through
``onnx.external_data_helper``, whose checks differ between onnx versions (``pyproject.toml``
allows 1.16 on):

* the location is relative, without NUL, without a ``..`` part, and resolves (symlinks
  followed) to a regular file inside the model's folder — nothing outside that folder is ever
  opened;
* offset and length are non-negative decimal integers, and ``offset + length`` lies inside the
  file; the length equals what the tensor's dims and type declare (checked before reading, so
  a huge declared length reads nothing);
* a checksum, when given, matches the bytes read.

Every problem of every tensor is reported at once.
"""
from __future__ import annotations

import hashlib
import os
import re

import onnx
from onnx import AttributeProto, TensorProto

from ..errors import Diagnostic
from . import tensors
from .tensors import DTYPES, check_dims, declared_bytes, size_text

_KEYS = ("location", "offset", "length", "checksum")
_DIGITS = re.compile(r"[0-9]+")


def external_tensors(model: onnx.ModelProto) -> list[TensorProto]:
    """Every tensor of the model (initializers and tensor attributes, in subgraphs and local
    functions too) that keeps its data in an external file."""
    found: list[TensorProto] = []

    def visit_nodes(nodes) -> None:
        for node in nodes:
            for attr in node.attribute:
                if attr.type == AttributeProto.TENSOR:
                    found.append(attr.t)
                elif attr.type == AttributeProto.TENSORS:
                    found.extend(attr.tensors)
                elif attr.type == AttributeProto.GRAPH:
                    visit_graph(attr.g)
                elif attr.type == AttributeProto.GRAPHS:
                    for g in attr.graphs:
                        visit_graph(g)

    def visit_graph(graph: onnx.GraphProto) -> None:
        found.extend(graph.initializer)
        visit_nodes(graph.node)

    visit_graph(model.graph)
    for function in model.functions:
        visit_nodes(function.node)
    return [t for t in found if t.data_location == TensorProto.EXTERNAL]


def load_external(model: onnx.ModelProto, base_dir: str | None, where: str) -> list[Diagnostic]:
    """Read every external tensor of ``model`` into its ``raw_data``; return the problems."""
    stored = external_tensors(model)
    if not stored:
        return []
    if base_dir is None:
        return [Diagnostic(f"{where}: the model keeps tensors in external files; load it from "
                           "its path, or pass base_dir= (the folder holding those files)")]
    root = os.path.realpath(base_dir)
    problems = []
    for tensor in stored:
        why = _read(tensor, root)
        if why:
            problems.append(Diagnostic(f"tensor '{tensor.name}': {why}",
                                       node=tensor.name or "tensor"))
    return problems


def _read(tensor: TensorProto, root: str) -> str | None:
    """Fill ``tensor`` from its external file; the reason it cannot be, or None."""
    dtype = DTYPES.get(tensor.data_type)
    if dtype is None or check_dims(tensor.dims, "")[0]:
        return None                  # the structural check names the type or dims at fault
    info: dict[str, str] = {}
    for entry in tensor.external_data:
        if entry.key in info:
            return f"external data key '{entry.key}' is given twice; keep one"
        info[entry.key] = entry.value
    unknown = sorted(set(info) - set(_KEYS))
    if unknown:
        return f"unknown external data key(s) {', '.join(map(repr, unknown))} (known: " \
               f"{', '.join(_KEYS)})"
    path, why = _locate(info.get("location", ""), root)
    if why:
        return why
    expected = declared_bytes(tensor)
    offset, why = _integer(info, "offset", 0)
    if why:
        return why
    length, why = _integer(info, "length", None)
    if why:
        return why
    try:
        size = os.path.getsize(path)
    except OSError as e:
        return f"cannot read '{info['location']}': {e.strerror}"
    if offset > size:
        return f"external data offset {offset} is past the end of '{info['location']}' " \
               f"({size} bytes)"
    if length is None:
        length = size - offset
    if length != expected:
        return (f"external data length {length} does not match the {expected} bytes its dims "
                f"{list(tensor.dims)} and type need; the dims or the length are wrong")
    if expected > tensors.MAX_BYTES:
        return f"the tensor takes {size_text(expected)}, over flowgrad's bound of " \
               f"{size_text(tensors.MAX_BYTES)}"
    if offset + length > size:
        return (f"external data [{offset}, {offset + length}) reaches past the end of "
                f"'{info['location']}' ({size} bytes); the file is truncated or the offset "
                "is wrong")
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(length)
    except OSError as e:
        return f"cannot read '{info['location']}': {e.strerror}"
    if len(data) != length:
        return f"'{info['location']}' changed while it was read"
    checksum = info.get("checksum")
    if checksum is not None and hashlib.sha1(data).hexdigest() != checksum.lower():
        return f"the SHA-1 checksum of its external data does not match ({checksum!r})"
    tensor.raw_data = data
    del tensor.external_data[:]
    tensor.data_location = TensorProto.DEFAULT
    return None


def _locate(location: str, root: str) -> tuple[str, str | None]:
    """The real path of ``location`` inside ``root``, or why it is refused."""
    shown = repr(location)[:200]
    if not location:
        return "", "external data has no location; name the file beside the model"
    if "\x00" in location:
        return "", f"external data location {shown} contains a NUL character"
    parts = re.split(r"[\\/]", location)
    if os.path.isabs(location) or location.startswith(("/", "\\")) or re.match(r"[A-Za-z]:",
                                                                                location):
        return "", (f"external data location {shown} is an absolute path, outside the "
                    f"model's folder {root}; flowgrad reads external data only from there "
                    "(move the file beside the model and give its relative name)")
    if ".." in parts:
        return "", (f"external data location {shown} leads outside the model's folder "
                    f"{root} through '..'; move the file beside the model")
    target = os.path.realpath(os.path.join(root, location))
    if os.path.commonpath([root, target]) != root:
        return "", (f"external data location {shown} resolves (through a symlink) to "
                    f"{target}, outside the model's folder {root}; refusing to read it "
                    "(copy the file beside the model)")
    if not os.path.isfile(target):
        return "", (f"needs external file {shown}, which is not a file in {root}; put it "
                    "beside the model")
    return target, None


def _integer(info: dict[str, str], key: str, default: int | None) -> tuple[int | None, str | None]:
    raw = info.get(key)
    if raw is None:
        return default, None
    if not _DIGITS.fullmatch(raw) or len(raw) > 20:
        return None, f"external data {key} {raw[:40]!r} is not a non-negative integer"
    return int(raw), None
