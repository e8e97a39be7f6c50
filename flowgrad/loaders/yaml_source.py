"""Reading YAML with source positions, safely.

:class:`MarkedLoader` is a ``SafeLoader`` that (1) rejects duplicate keys and non-string keys
(YAML 1.1 reads ``no``/``on``/``1`` as booleans or numbers) while honouring merge keys
(``<<: *base`` then overriding keys, as YAML defines them) and (2) builds :class:`MarkedDict` /
:class:`MarkedList` containers that remember where each key and value stood, so later checks
can point at the exact line and column.  Opening a YAML file never runs code.

Two parsers sit under the same constructor.  PyPI's PyYAML ships libyaml's C parser
(``yaml.CSafeLoader``), several times faster than its pure-Python one, which was 83 % of
loading a 1,000-node graph.  The pure-Python parser (:class:`PyMarkedLoader`) stays the
reference for what a file means and how a mistake is reported, because the two differ at the
edges: libyaml words its syntax errors differently, accepts tabs, ``?`` and tags where PyYAML
refuses them, and marks some positions elsewhere.  So :func:`read_yaml` gives libyaml only
text free of the characters where they part (:data:`_PURE_ONLY`), the C loader hands back a
file with an empty value in a flow mapping, and whenever libyaml fails, for any reason, the
text is read again by the pure parser, whose diagnostic the user sees.  A file therefore loads
to the same data with the same locations, or fails with the same report, under either parser
(tests/test_yaml_fast.py checks both, on the error cases and on randomly edited graphs).
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any

import numpy as np
import yaml

from ..errors import DiagnosticList, GraphError, SourceLocation
from .yaml_guard import BoundedComposer, decode, may_exceed, over_limits

_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"
#: keys PyYAML's ``flatten_mapping`` rewrites: ``<<`` (merge) and ``=`` (the value key)
_FLATTENED = (_MERGE_TAG, "tag:yaml.org,2002:value")
_YAML_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")
_UNPRINTABLE = re.compile("[^\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class _Locations(Mapping):
    """``{key: SourceLocation}`` made from parser marks one key at a time, when read."""

    __slots__ = ("_source", "_marks", "_made")

    def __init__(self, source: "Source", marks: dict):
        self._source, self._marks, self._made = source, marks, {}

    def __getitem__(self, key: Any) -> SourceLocation:
        loc = self._made.get(key)
        if loc is None:
            loc = self._made[key] = self._source.loc(self._marks[key])
        return loc

    def __iter__(self):
        return iter(self._marks)

    def __len__(self) -> int:
        return len(self._marks)

    def __contains__(self, key: Any) -> bool:
        return key in self._marks


class _ItemLocations(Sequence):
    """``[SourceLocation]`` made from parser marks one item at a time, when read."""

    __slots__ = ("_source", "_marks", "_made")

    def __init__(self, source: "Source", marks: list):
        self._source, self._marks, self._made = source, marks, {}

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self._marks)))]
        index = range(len(self._marks))[index]          # negative indices, IndexError
        loc = self._made.get(index)
        if loc is None:
            loc = self._made[index] = self._source.loc(self._marks[index])
        return loc

    def __len__(self) -> int:
        return len(self._marks)


class MarkedDict(dict):
    """A dict that knows the location of itself, of each key and of each value.

    Locations are made from the parser's marks when first read: a graph file has a handful
    per line, most are never read (only a mistake needs them), and making them all cost a
    fifth of reading a large file.
    """

    _source: "Source"
    _mark: Any
    key_locs: Mapping[str, SourceLocation]
    value_locs: Mapping[str, SourceLocation]

    @cached_property
    def loc(self) -> SourceLocation:
        return self._source.loc(self._mark)


class MarkedList(list):
    """A list that knows the location of itself and of each item (made when first read)."""

    _source: "Source"
    _mark: Any
    item_locs: Sequence[SourceLocation]

    @cached_property
    def loc(self) -> SourceLocation:
        return self._source.loc(self._mark)


class Source:
    """A YAML text and its path: turns yaml marks into :class:`SourceLocation` s."""

    def __init__(self, path: str, text: str):
        self.path = path
        self.text = text
        self.lines = text.splitlines()

    def loc(self, mark: Any) -> SourceLocation:
        line = mark.line
        text = self.lines[line] if 0 <= line < len(self.lines) else ""
        return SourceLocation(self.path, line + 1, mark.column + 1, text)

    def at(self, position: int) -> SourceLocation:
        """The location of character ``position`` of the text, lines broken where YAML breaks
        them; for a character the reader refuses, so unprintable ones show as U+FFFD."""
        text = self.text
        breaks = [m.end() for m in _YAML_BREAK.finditer(text, 0, position)]
        start = breaks[-1] if breaks else 0
        end = _YAML_BREAK.search(text, position)
        line = text[start:end.start() if end else len(text)]
        shown = _UNPRINTABLE.sub("\ufffd", line)
        return SourceLocation(self.path, len(breaks) + 1, position - start + 1, shown)


class _Marking:
    """The constructor half shared by both parsers: location-carrying containers and strict
    keys (see the module doc).  Mixed in before a PyYAML loader class."""

    #: libyaml marks an empty value in a flow mapping (``{shape: }``) where the next token
    #: starts, PyYAML where the ``:`` ends; the C loader hands such files to the pure parser
    check_flow_empties = False

    def __init__(self, text: str, source: Source, errors: DiagnosticList):
        self.source = source
        self.errors = errors
        super().__init__(text)

    def construct_marked_mapping(self, node: yaml.MappingNode) -> MarkedDict:
        if not isinstance(node, yaml.MappingNode):   # an explicit !!map on a scalar or list
            raise yaml.constructor.ConstructorError(
                None, None, f"expected a mapping node, but found {node.id}", node.start_mark)
        inherited = 0                         # pairs merged in (``<<:``), before the own ones
        if any(key_node.tag in _FLATTENED for key_node, _ in node.value):
            own = sum(1 for key_node, _ in node.value if key_node.tag != _MERGE_TAG)
            self.flatten_mapping(node)
            inherited = len(node.value) - own
        if self.check_flow_empties and node.flow_style:
            for pair in node.value:
                for child in pair:
                    if type(child) is yaml.ScalarNode and not child.value and not child.style:
                        raise _ReadAgain
        out = MarkedDict()
        out._source, out._mark = self.source, node.start_mark
        key_marks: dict[str, Any] = {}
        value_marks: dict[str, Any] = {}
        out.key_locs = _Locations(self.source, key_marks)
        out.value_locs = _Locations(self.source, value_marks)
        merged: set[str] = set()              # keys taken from a merged mapping so far
        for index, (key_node, value_node) in enumerate(node.value):
            if index < inherited:
                # the merged mapping's own construction reports its key mistakes; of the
                # mappings merged, the first to give a key wins (YAML's merge key)
                if type(key_node) is yaml.ScalarNode and key_node.tag == _STR_TAG \
                        and key_node.value not in out:
                    merged.add(key_node.value)
                    out[key_node.value] = self._value(value_node)
                    key_marks[key_node.value] = key_node.start_mark
                    value_marks[key_node.value] = value_node.start_mark
                continue
            if type(key_node) is not yaml.ScalarNode or key_node.tag != _STR_TAG:
                key_loc = self.source.loc(key_node.start_mark)
                shown = key_node.value if isinstance(key_node, yaml.ScalarNode) else "a collection"
                self.errors.add(f"key {shown!r} is not a string (YAML reads it as "
                                f"{_yaml_type(key_node)}); quote it: '\"{shown}\"'", key_loc)
                continue
            key = key_node.value
            if key in merged:                 # the mapping's own key overrides a merged one
                merged.discard(key)
            elif key in out:
                first = self.source.loc(key_marks[key])
                self.errors.add(f"duplicate key '{key}' (first defined at line {first.line})",
                                self.source.loc(key_node.start_mark))
                continue
            out[key] = self._value(value_node)
            key_marks[key] = key_node.start_mark
            value_marks[key] = value_node.start_mark
        return out

    def construct_marked_sequence(self, node: yaml.SequenceNode) -> MarkedList:
        if not isinstance(node, yaml.SequenceNode):   # an explicit !!seq on a scalar or map
            raise yaml.constructor.ConstructorError(
                None, None, f"expected a sequence node, but found {node.id}", node.start_mark)
        out = MarkedList([self._value(child) for child in node.value])
        out._source, out._mark = self.source, node.start_mark
        out.item_locs = _ItemLocations(self.source, [child.start_mark for child in node.value])
        return out

    def _value(self, node: yaml.Node) -> Any:
        """What ``construct_object(node, deep=True)`` returns; a plain string (most values of
        a graph file) is taken directly, skipping three calls per value."""
        if type(node) is yaml.ScalarNode and node.tag == _STR_TAG:
            return node.value
        return self.construct_object(node, deep=True)


def _guarded(constructor: Any, what: str) -> Any:
    """A scalar constructor whose failure on a malformed value (``!!int x``, ``2001-13-45``)
    is a located YAML error, not a Python traceback."""
    def construct(loader: Any, node: yaml.Node) -> Any:
        try:
            return constructor(loader, node)
        except (ValueError, TypeError, KeyError, OverflowError):
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {node.value!r} as {what}", node.start_mark) from None
    return construct


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
_FLOAT_12 = re.compile(r"""^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$""")


def _configure(cls: type) -> type:
    """Give a loader class its own copy of the implicit resolvers (plus YAML 1.2 floats) and
    the marked-container constructors, leaving PyYAML's classes untouched."""
    cls.yaml_implicit_resolvers = {k: list(v) for k, v in
                                   yaml.SafeLoader.yaml_implicit_resolvers.items()}
    cls.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789"))
    cls.add_constructor("tag:yaml.org,2002:map", cls.construct_marked_mapping)
    cls.add_constructor("tag:yaml.org,2002:seq", cls.construct_marked_sequence)
    for tag, what in (("int", "an integer"), ("float", "a number"), ("bool", "a boolean"),
                      ("timestamp", "a date")):
        tag = f"tag:yaml.org,2002:{tag}"
        cls.add_constructor(tag, _guarded(yaml.SafeLoader.yaml_constructors[tag], what))
    return cls


class _ReadAgain(Exception):
    """libyaml would place a mark where PyYAML does not: read the text with the pure parser."""


@_configure
class PyMarkedLoader(_Marking, BoundedComposer, yaml.SafeLoader):
    """The pure-Python parser: the reference for meaning and for error messages, and the one
    that refuses too deep nesting and too many aliases at the exact place (:mod:`.yaml_guard`)."""


if getattr(yaml, "__with_libyaml__", False):
    @_configure
    class CMarkedLoader(_Marking, yaml.CSafeLoader):
        """libyaml's C parser under the same constructor and resolvers."""

        check_flow_empties = True

    MarkedLoader: type = CMarkedLoader
else:  # PyYAML built without libyaml
    CMarkedLoader = None
    MarkedLoader = PyMarkedLoader


#: characters on which the two parsers part ways, found by feeding both mutated graph files:
#: libyaml takes a tab as a separator where PyYAML refuses it; PyYAML ends a plain scalar in
#: a flow collection at ``?`` and libyaml does not; libyaml ends a tag (``!x``) at a flow
#: indicator and PyYAML does not; libyaml does not count a byte-order mark inside the text as
#: a column.  Text holding any of them is read by the pure parser (graph files rarely do).
_PURE_ONLY = ("\t", "?", "!", "\ufeff")


def read_yaml(path: str, text: str | None = None) -> tuple[Any, Source]:
    """Parse a YAML file into marked containers; syntax and key errors raise GraphError.

    :data:`MarkedLoader` parses (libyaml where PyYAML has it); text holding one of
    :data:`_PURE_ONLY`, any text libyaml fails on and any reading over the limits of
    :mod:`.yaml_guard` goes through the pure-Python parser, whose reading and whose messages
    are the reference (see the module doc).  A file is read as UTF-8; an invalid byte is a
    located error too.
    """
    if text is None:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise GraphError(f"{path}: cannot read: {e.strerror}") from None
        text = decode(data, lambda shown, position: Source(path, shown).at(position))
    source = Source(path, text)
    if MarkedLoader is not PyMarkedLoader and not any(c in text for c in _PURE_ONLY):
        errors = DiagnosticList()
        loader = None
        try:
            loader = MarkedLoader(text, source, errors)
            node = loader.get_single_node()
            if node is not None and may_exceed(text) and over_limits(node):
                raise _ReadAgain
            data = None if node is None else loader.construct_document(node)
        except Exception:  # noqa: BLE001 - parse again below: the pure parser reports it
            pass
        else:
            errors.raise_if_any(GraphError)
            return data, source
        finally:
            if loader is not None:
                loader.dispose()
    errors = DiagnosticList()
    loader = None
    try:
        loader = PyMarkedLoader(text, source, errors)   # checks every character of the text
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        message = f"invalid YAML: {e.problem or e.context}"
        if e.context and e.problem:
            message += f" ({e.context})"
        raise GraphError(message, loc=source.loc(mark) if mark else None) from None
    except yaml.reader.ReaderError as e:
        raise GraphError(f"invalid YAML: unacceptable character #x{e.character:04x}: {e.reason}",
                         loc=source.at(e.position)) from None
    except yaml.YAMLError as e:
        raise GraphError(f"{path}: invalid YAML: {e}") from None
    finally:
        if loader is not None:
            loader.dispose()
    errors.raise_if_any(GraphError)
    return data, source
