"""Reading YAML with source positions, safely.

:class:`MarkedLoader` is a ``SafeLoader`` that (1) rejects duplicate keys and non-string keys
(YAML 1.1 reads ``no``/``on``/``1`` as booleans or numbers) and (2) builds :class:`MarkedDict` /
:class:`MarkedList` containers that remember where each key and value stood, so later checks
can point at the exact line and column.  Opening a YAML file never runs code.
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np
import yaml

from ..errors import DiagnosticList, GraphError, SourceLocation

_STR_TAG = "tag:yaml.org,2002:str"


class MarkedDict(dict):
    """A dict that knows the location of itself, of each key and of each value."""

    loc: SourceLocation
    key_locs: dict[str, SourceLocation]
    value_locs: dict[str, SourceLocation]


class MarkedList(list):
    """A list that knows the location of itself and of each item."""

    loc: SourceLocation
    item_locs: list[SourceLocation]


class Source:
    """A YAML text and its path: turns yaml marks into :class:`SourceLocation` s."""

    def __init__(self, path: str, text: str):
        self.path = path
        self.lines = text.splitlines()

    def loc(self, mark: Any) -> SourceLocation:
        line = mark.line
        text = self.lines[line] if 0 <= line < len(self.lines) else ""
        return SourceLocation(self.path, line + 1, mark.column + 1, text)


class MarkedLoader(yaml.SafeLoader):
    """SafeLoader with location-carrying containers and strict keys (see module doc)."""

    def __init__(self, text: str, source: Source, errors: DiagnosticList):
        super().__init__(text)
        self.source = source
        self.errors = errors

    def construct_marked_mapping(self, node: yaml.MappingNode) -> MarkedDict:
        self.flatten_mapping(node)
        out = MarkedDict()
        out.loc = self.source.loc(node.start_mark)
        out.key_locs, out.value_locs = {}, {}
        for key_node, value_node in node.value:
            key_loc = self.source.loc(key_node.start_mark)
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _STR_TAG:
                shown = key_node.value if isinstance(key_node, yaml.ScalarNode) else "a collection"
                self.errors.add(f"key {shown!r} is not a string (YAML reads it as "
                                f"{_yaml_type(key_node)}); quote it: '\"{shown}\"'", key_loc)
                continue
            key = key_node.value
            if key in out:
                first = out.key_locs[key]
                self.errors.add(f"duplicate key '{key}' (first defined at line {first.line})",
                                key_loc)
                continue
            out[key] = self.construct_object(value_node, deep=True)
            out.key_locs[key] = key_loc
            out.value_locs[key] = self.source.loc(value_node.start_mark)
        return out

    def construct_marked_sequence(self, node: yaml.SequenceNode) -> MarkedList:
        out = MarkedList(self.construct_object(child, deep=True) for child in node.value)
        out.loc = self.source.loc(node.start_mark)
        out.item_locs = [self.source.loc(child.start_mark) for child in node.value]
        return out


def plain(value: Any) -> Any:
    """The plain Python form of a value, as YAML reads and writes it: dicts, lists, numbers and
    strings.  Marked containers become dicts and lists, tuples and arrays lists, numpy scalars
    Python numbers."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _yaml_type(node: yaml.Node) -> str:
    return {"tag:yaml.org,2002:bool": "a boolean", "tag:yaml.org,2002:int": "an integer",
            "tag:yaml.org,2002:float": "a number", "tag:yaml.org,2002:null": "null"}.get(
        node.tag, "a collection" if not isinstance(node, yaml.ScalarNode) else node.tag)


# YAML 1.2 floats: PyYAML implements YAML 1.1, where `1e-4` and `1.0e6` are strings (1.1 wants a
# dot and a signed exponent).  Learning rates are written that way, so read them as numbers.
MarkedLoader.yaml_implicit_resolvers = {k: list(v) for k, v in
                                        yaml.SafeLoader.yaml_implicit_resolvers.items()}
MarkedLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"""),
    list("-+0123456789"))
MarkedLoader.add_constructor("tag:yaml.org,2002:map", MarkedLoader.construct_marked_mapping)
MarkedLoader.add_constructor("tag:yaml.org,2002:seq", MarkedLoader.construct_marked_sequence)


def read_yaml(path: str, text: str | None = None) -> tuple[Any, Source]:
    """Parse a YAML file into marked containers; syntax and key errors raise GraphError."""
    if text is None:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise GraphError(f"{path}: cannot read: {e.strerror}") from None
    source = Source(path, text)
    errors = DiagnosticList()
    loader = MarkedLoader(text, source, errors)
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        message = f"invalid YAML: {e.problem or e.context}"
        if e.context and e.problem:
            message += f" ({e.context})"
        raise GraphError(message, loc=source.loc(mark) if mark else None) from None
    except yaml.YAMLError as e:
        raise GraphError(f"{path}: invalid YAML: {e}") from None
    finally:
        loader.dispose()
    errors.raise_if_any(GraphError)
    return data, source
