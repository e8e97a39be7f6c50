"""Checked access to an ONNX node's inputs and attributes, for import handlers.

A model file is untrusted input: a node may lack an input its op needs, carry an attribute of
the wrong type, or hold a string that is not UTF-8.  Handlers therefore never index raw lists
or read raw protos; they ask :class:`Inputs` and :class:`Attrs`, which raise an
:class:`~flowgrad.onnx.builder.ImportProblem` saying what is wrong and what to do.  The
importer adds the node's name, op type and opset, so a user reads e.g.::

    ONNX node 'conv_3' (Conv, opset 13): needs input 1 (W); connect a value to it

``Attrs`` is still a read-only mapping of decoded values (``a.get("alpha", 0.01)``), so a
plugin written against plain dicts keeps working; the typed readers (``a.int``, ``a.ints``,
``a.float``, ``a.floats``, ``a.string``, ``a.strings``, ``a.tensor``, ``a.bool``) are the
built-ins' one way in.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import AttributeProto

from .builder import ImportProblem, Value
from .tensors import check_tensor, to_array

_REQUIRED = object()

#: what each attribute type is called in messages
_KIND = {AttributeProto.FLOAT: "a float", AttributeProto.INT: "an int",
         AttributeProto.STRING: "a string", AttributeProto.TENSOR: "a tensor",
         AttributeProto.GRAPH: "a graph", AttributeProto.FLOATS: "a list of floats",
         AttributeProto.INTS: "a list of ints", AttributeProto.STRINGS: "a list of strings",
         AttributeProto.TENSORS: "a list of tensors", AttributeProto.GRAPHS: "a list of graphs",
         AttributeProto.SPARSE_TENSOR: "a sparse tensor",
         AttributeProto.SPARSE_TENSORS: "a list of sparse tensors",
         AttributeProto.TYPE_PROTO: "a type", AttributeProto.TYPE_PROTOS: "a list of types"}


def _kind(attr: AttributeProto) -> str:
    return _KIND.get(attr.type, f"of unknown type {attr.type}")


class Attrs(Mapping):
    """A node's attributes: typed, checked readers, and a mapping of decoded values."""

    def __init__(self, node: onnx.NodeProto):
        self._protos = {attr.name: attr for attr in node.attribute}

    # -- the mapping (decoded values; for plugins and generic handlers) -------------------
    def __getitem__(self, name: str) -> Any:
        attr = self._protos[name]
        t = attr.type
        if t == AttributeProto.INT:
            return self.int(name)
        if t == AttributeProto.INTS:
            return self.ints(name)
        if t == AttributeProto.FLOAT:
            return self.float(name)
        if t == AttributeProto.FLOATS:
            return self.floats(name)
        if t == AttributeProto.STRING:
            return self.string(name)
        if t == AttributeProto.STRINGS:
            return self.strings(name)
        if t == AttributeProto.TENSOR:
            return self.tensor(name)
        raise ImportProblem(f"attribute '{name}' is {_kind(attr)}, which flowgrad does not "
                            "read; remove it")

    def __iter__(self):
        return iter(self._protos)

    def __len__(self) -> int:
        return len(self._protos)

    def __contains__(self, name: object) -> bool:
        return name in self._protos

    # -- typed readers --------------------------------------------------------------------
    def _proto(self, name: str, default: Any, *types: int) -> AttributeProto | None:
        attr = self._protos.get(name)
        if attr is None:
            if default is _REQUIRED:
                raise ImportProblem(f"needs attribute '{name}'; add it to the node")
            return None
        if attr.type not in types:
            raise ImportProblem(f"attribute '{name}' must be {_KIND[types[0]]}, not "
                                f"{_kind(attr)}; fix its type")
        return attr

    def int(self, name: str, default: Any = _REQUIRED) -> int:
        attr = self._proto(name, default, AttributeProto.INT)
        return default if attr is None else int(attr.i)

    def bool(self, name: str, default: Any = _REQUIRED) -> bool:
        """An ONNX int used as a flag (ONNX has no booleans)."""
        attr = self._proto(name, default, AttributeProto.INT)
        return default if attr is None else bool(attr.i)

    def ints(self, name: str, default: Any = _REQUIRED) -> list[int]:
        attr = self._proto(name, default, AttributeProto.INTS, AttributeProto.INT)
        if attr is None:
            return default
        return [int(attr.i)] if attr.type == AttributeProto.INT else [int(v) for v in attr.ints]

    def float(self, name: str, default: Any = _REQUIRED) -> float:
        """A float (an int attribute is accepted: some exporters write ``alpha=1``)."""
        attr = self._proto(name, default, AttributeProto.FLOAT, AttributeProto.INT)
        if attr is None:
            return default
        return float(attr.f if attr.type == AttributeProto.FLOAT else attr.i)

    def floats(self, name: str, default: Any = _REQUIRED) -> list[float]:
        attr = self._proto(name, default, AttributeProto.FLOATS, AttributeProto.INTS)
        if attr is None:
            return default
        values = attr.floats if attr.type == AttributeProto.FLOATS else attr.ints
        return [float(v) for v in values]

    def string(self, name: str, default: Any = _REQUIRED) -> str:
        attr = self._proto(name, default, AttributeProto.STRING)
        return default if attr is None else _decode(name, attr.s)

    def strings(self, name: str, default: Any = _REQUIRED) -> list[str]:
        attr = self._proto(name, default, AttributeProto.STRINGS)
        return default if attr is None else [_decode(name, s) for s in attr.strings]

    def tensor(self, name: str, default: Any = _REQUIRED) -> np.ndarray:
        """A tensor attribute as an array, its element type and size checked first."""
        attr = self._proto(name, default, AttributeProto.TENSOR)
        if attr is None:
            return default
        problems = check_tensor(attr.t, f"attribute '{name}'")
        if problems:
            raise ImportProblem("; ".join(problems))
        return to_array(attr.t)


def _decode(name: str, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ImportProblem(f"attribute '{name}' is not UTF-8 text ({raw[:20]!r}); "
                            "rewrite it as text") from None


class Inputs(Sequence):
    """A node's inputs: one :class:`Value` per ONNX input, ``None`` for an omitted optional one.

    ``ins.need(i, "B")`` is a required input (a located problem if absent), ``ins.opt(i)`` an
    optional one (None if absent or past the end).  Indexing and slicing give the raw values
    (as a list), for handlers that pass all inputs through to a flowgrad op, which checks its
    own required ports.
    """

    def __init__(self, values: list[Value | None]):
        self._values = list(values)

    def __getitem__(self, index):
        return self._values[index]

    def __len__(self) -> int:
        return len(self._values)

    def need(self, index: int, name: str) -> Value:
        value = self.opt(index)
        if value is None:
            raise ImportProblem(f"needs input {index} ({name}); the node has "
                                f"{len(self._values)} input(s) — connect a value to input "
                                f"{index}")
        return value

    def opt(self, index: int) -> Value | None:
        return self._values[index] if index < len(self._values) else None


def scalar(array: Any, what: str, kind: type = float):
    """The single value of a load-time input (a Clip bound, a TopK k...), checked: one finite
    element (an int for ``kind=int``)."""
    flat = np.asarray(array).reshape(-1)
    if flat.size != 1:
        raise ImportProblem(f"{what} must hold one value, not {flat.size}; give a scalar")
    value = flat[0]
    if kind is int:
        if flat.dtype.kind not in "iub" and not (flat.dtype.kind == "f" and math.isfinite(value)
                                                 and float(value).is_integer()):
            raise ImportProblem(f"{what} must be an integer, not {value!r}")
        return int(value)
    return kind(value)
