"""What a YAML file may cost to read: its encoding, its nesting and its aliases, checked as it
is read, so a careless or hostile file is refused with a located message, fast.

* **Encoding.**  A graph file is UTF-8; an invalid byte is reported at its line and column
  (the column counts the characters before it), not as a ``UnicodeDecodeError``.
* **Nesting.**  Collections nested deeper than :data:`MAX_DEPTH` are refused where the first
  too-deep one starts: everything downstream (constructing, copying, ``plain``) recurses once
  per level, and no graph needs more than a handful.
* **Aliases.**  An alias is cheap to write and expensive to use: nine lines of nine aliases
  each stand for 9**9 values (the "billion laughs").  The constructor shares an aliased
  value, but every later copy (an op's attributes, a block body, an array) walks it in full.
  So the values aliases stand for are counted as they are composed, and a file is refused at
  the alias that takes the count past :data:`MAX_ALIAS_VALUES` (or the number of aliases past
  :data:`MAX_ALIASES`), before anything is built.

The pure-Python parser checks nesting and aliases in its composer (:class:`BoundedComposer`),
at the exact event; libyaml composes in C, so its reading is measured afterwards
(:func:`over_limits`) and, when over a limit, read again by the pure parser, whose report the
user sees — the two parsers keep giving the same report.  Both checks are skipped for what
cannot exceed them: a text without ``&`` has no aliases, and one with fewer opening brackets
and less indentation than :data:`MAX_DEPTH` cannot nest that deep.
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np
import yaml

from ..errors import GraphError

#: collections (mappings and lists) nested deeper than this are refused
MAX_DEPTH = 64
#: at most this many aliases (``*name``) in one file (ResNet-18's file has one)
MAX_ALIASES = 1_000
#: the values all aliases of a file stand for, counted as if each were written out in full
#: (ResNet-18's stand for 12)
MAX_ALIAS_VALUES = 10_000

#: a line indented at least N columns (counting the ``- ``, ``? `` and ``: `` of compact
#: collections), formatted with N
_INDENT = r"^[ \-?:]{%d}"
#: +1 for an opening bracket, -1 for a closing one, by byte
_BRACKETS = np.zeros(256, dtype=np.int32)
_BRACKETS[[ord("["), ord("{")]], _BRACKETS[[ord("]"), ord("}")]] = 1, -1


def decode(data: bytes, source_at) -> str:
    """``data`` as text; an invalid UTF-8 byte is a GraphError at its line and column
    (``source_at(text, position)`` locates a character of the text, shown harmlessly)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        position = len(data[:e.start].decode("utf-8"))
        shown = data.decode("utf-8", errors="replace")
        raise GraphError(f"invalid YAML: the file is not UTF-8 text (byte 0x{data[e.start]:02x}"
                         f" at offset {e.start} {_why(e)})", loc=source_at(shown, position)) \
            from None


def _why(e: UnicodeDecodeError) -> str:
    return {"invalid start byte": "cannot start a character",
            "invalid continuation byte": "cannot continue a character",
            "unexpected end of data": "starts a character the file does not finish"}.get(
        e.reason, f"is invalid: {e.reason}")


def may_exceed(text: str) -> bool:
    """Whether ``text`` might break a limit: it has anchors, or enough indentation and
    opening brackets to nest :data:`MAX_DEPTH` deep.  A cheap over-estimate (block
    collections nest at most two levels per column of indentation and one more, flow ones
    one per bracket), so that the C parser's reading of an ordinary file is not walked again
    (a few milliseconds for a file of 10,000 nodes)."""
    if "&" in text:
        return True
    brackets = text.count("[") + text.count("{")
    if brackets > MAX_DEPTH // 2:
        brackets = _flow_depth(text)
    columns = max((MAX_DEPTH - brackets) // 2 - 1, 0)
    return re.search(_INDENT % columns, text, re.MULTILINE) is not None


def _flow_depth(text: str) -> int:
    """An upper bound of how deep ``text``'s flow collections nest (quotes not understood)."""
    codes = np.frombuffer(text.encode("utf-8", "surrogatepass"), dtype=np.uint8)
    return int(_BRACKETS[codes].cumsum(dtype=np.int32).max(initial=0))


def over_limits(root: yaml.Node) -> bool:
    """Whether the composed ``root`` nests deeper than :data:`MAX_DEPTH` or its aliases (the
    nodes reached more than once) are too many or stand for too many values — what
    :class:`BoundedComposer` refuses, measured on libyaml's reading."""
    sizes: dict[int, tuple[int, int]] = {}     # id(node) -> (values written out, height)
    counts = [0, 0]                            # [distinct nodes, references]

    def walk(node: yaml.Node, enclosing: int) -> tuple[int, int]:
        counts[1] += 1
        known = sizes.get(id(node))
        if known is None:
            counts[0] += 1
            sizes[id(node)] = (1, 0)           # a node inside itself: the constructor refuses
            if isinstance(node, yaml.ScalarNode):
                return 1, 0
            if enclosing >= MAX_DEPTH:
                raise _Over
            size, height = 1, 0
            for child in _children(node):
                s, h = walk(child, enclosing + 1)
                size, height = size + s, max(height, h)
            known = sizes[id(node)] = (size, height + 1)
        if enclosing + known[1] > MAX_DEPTH:
            raise _Over
        return known

    try:
        total, _ = walk(root, 0)
    except _Over:
        return True
    return counts[1] - counts[0] > MAX_ALIASES or total - counts[0] > MAX_ALIAS_VALUES


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [child for pair in node.value for child in pair]
    return node.value


class _Over(Exception):
    """Raised inside :func:`over_limits`' walk: a limit is broken, stop looking."""


class BoundedComposer:
    """The composer half of the pure-Python loader, counting depth and aliases as it goes
    (mixed in before ``yaml.SafeLoader``; see the module doc)."""

    def compose_document(self) -> Any:
        self._depth = 0
        self._aliases = 0
        self._alias_values = 0
        self._sizes: dict[int, tuple[int, int]] = {}
        return super().compose_document()

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            node = super().compose_node(parent, index)
            size, height = self._sizes.get(id(node), (1, 0))   # (1, 0): an alias in itself
            self._aliases += 1
            self._alias_values += size
            if self._aliases > MAX_ALIASES:
                self._refuse(f"more than {MAX_ALIASES} aliases", event)
            if self._alias_values > MAX_ALIAS_VALUES:
                self._refuse(f"alias '*{event.anchor}' takes the file's aliases past "
                             f"{MAX_ALIAS_VALUES} values (each alias counts as the values it "
                             "repeats: an alias bomb?)", event)
            if self._depth + height > MAX_DEPTH:
                self._refuse(f"alias '*{event.anchor}' nests collections deeper than "
                             f"{MAX_DEPTH} levels", event)
            return node
        collection = isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent))
        if collection:
            self._depth += 1
            if self._depth > MAX_DEPTH:
                self._refuse(f"collections nested deeper than {MAX_DEPTH} levels", event)
        node = super().compose_node(parent, index)
        if collection:
            self._depth -= 1
            size, height = 1, 0
            for child in _children(node):
                s, h = self._sizes.get(id(child), (1, 0))
                size, height = size + s, max(height, h)
            self._sizes[id(node)] = (size, height + 1)
        return node

    @staticmethod
    def _refuse(problem: str, event: Any) -> None:
        raise yaml.composer.ComposerError(None, None, problem, event.start_mark)
