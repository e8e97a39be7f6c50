"""The blocks a graph file can use: its own ``blocks:`` and those of the files it includes.

An included file holds only blocks (and more includes); its path is relative to the file that
includes it.  Every file is read once, so two files may include a third; a file that includes
itself, through any chain, is refused with the chain named.  A definition is checked here,
once, for its shape (keys, arguments, inputs, local names); its body's values are checked at
each instance, where the arguments are known (:mod:`.blocks`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..errors import DiagnosticList, GraphError, SourceLocation, unknown_key
from .yaml_source import MarkedDict, read_yaml

BLOCK_KEYS = ("args", "inputs", "params", "constants", "nodes", "outputs", "doc")
INCLUDED_KEYS = ("flowgrad", "doc", "include", "blocks")
LOCAL = ("params", "constants", "nodes")


@dataclass
class Block:
    name: str
    body: MarkedDict
    args: MarkedDict                # argument -> default (None: must be given)
    inputs: list[str]
    locals: dict[str, str]          # local name -> its section


class Library:
    """Block definitions by name; mistakes go to ``errors``."""

    def __init__(self, path: str, errors: DiagnosticList):
        self.errors = errors
        self.blocks: dict[str, Block] = {}
        self.broken: set[str] = set()           # defined with a mistake (already reported)
        self.incomplete = False                 # an include or a 'blocks:' failed to read
        self.defined_at: dict[str, SourceLocation] = {}
        self.included: set[str] = {os.path.abspath(path)}

    def error(self, message: str, loc: SourceLocation | None) -> None:
        self.errors.add(message, loc)

    def unread(self, message: str, loc: SourceLocation | None) -> None:
        """Report blocks that could not be read: an unknown block may be one of them, so
        instances of unknown blocks are then not reported too."""
        self.error(message, loc)
        self.incomplete = True

    def read(self, data: MarkedDict, path: str, chain: list[str]) -> None:
        """Read the blocks of ``data`` (the file ``path``) and of the files it includes."""
        include = data.get("include")
        if include is not None:
            entries = [include] if isinstance(include, str) else include
            locs = [data.value_locs["include"]] if isinstance(include, str) else \
                getattr(include, "item_locs", None)
            if locs is None or not all(isinstance(e, str) for e in entries):
                self.unread("'include' must be a file name or a list of file names",
                           data.value_locs["include"])
            else:
                for entry, loc in zip(entries, locs):
                    self.include(entry, loc, path, chain)
        blocks = data.get("blocks")
        if blocks is None:
            return
        if not isinstance(blocks, MarkedDict):
            self.unread("'blocks' must be a mapping from block names to their definitions",
                       data.value_locs["blocks"])
            return
        for name, body in blocks.items():
            self.define(name, body, blocks)

    def include(self, entry: str, loc: SourceLocation, includer: str, chain: list[str]) -> None:
        shown = os.path.normpath(os.path.join(os.path.dirname(includer), entry))
        full = os.path.abspath(shown)
        if full in (os.path.abspath(p) for p in chain):
            self.error(f"include cycle: {' -> '.join(chain + [shown])}", loc)
            return
        if full in self.included:                   # reached again by another path
            return
        self.included.add(full)
        if not os.path.isfile(full):
            problem = "a directory" if os.path.isdir(full) else "no such file"
            self.unread(f"cannot include '{entry}': {problem} '{shown}'", loc)
            return
        try:
            data, _ = read_yaml(shown)
        except GraphError as e:
            self.errors.items.extend(e.diagnostics)
            self.incomplete = True
            return
        if not isinstance(data, MarkedDict):
            self.unread(f"an included file holds a mapping with 'blocks'; '{shown}' does not",
                        loc)
            return
        for key in data:
            if key not in INCLUDED_KEYS:
                self.error(unknown_key(key, f"the included file '{shown}'", INCLUDED_KEYS),
                           data.key_locs[key])
        self.read(data, shown, chain + [shown])

    def define(self, name: Any, body: Any, blocks: MarkedDict) -> None:
        loc = blocks.key_locs[name]
        if not self.valid_name(name, loc, "block names"):
            return
        if name in self.defined_at:
            self.error(f"block '{name}' is already defined at {self.defined_at[name]}", loc)
            return
        self.defined_at[name] = loc
        if not self.check(name, body, blocks, loc):
            self.broken.add(name)

    def check(self, name: str, body: Any, blocks: MarkedDict, loc: SourceLocation) -> bool:
        """Register the block ``name`` if its definition is sound; else report why."""
        if not isinstance(body, MarkedDict):
            self.error(f"block '{name}' must be a mapping ({', '.join(BLOCK_KEYS)})",
                       blocks.value_locs[name])
            return False
        what = f"block '{name}'"
        sound = True
        for key in body:
            if key not in BLOCK_KEYS:
                self.error(unknown_key(key, what, BLOCK_KEYS), body.key_locs[key])
                sound = False
        args = body.get("args", MarkedDict())
        if not isinstance(args, MarkedDict):
            self.error(f"'args' of {what} must be a mapping from names to defaults (~ for "
                       "none)", body.value_locs["args"])
            return False
        inputs = body.get("inputs", [])
        inputs = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
            self.error(f"'inputs' of {what} must be a list of names", body.value_locs["inputs"])
            return False
        seen: dict[str, SourceLocation] = {}
        for i, port in enumerate(inputs):
            where = body.value_locs["inputs"] if isinstance(body["inputs"], str) \
                else body["inputs"].item_locs[i]
            sound = self.local_name(port, where, seen) and sound
        locals_: dict[str, str] = {}
        for section in LOCAL:
            entries = body.get(section)
            if entries is None:
                continue
            if not isinstance(entries, MarkedDict):
                self.error(f"'{section}' of {what} must be a mapping", body.value_locs[section])
                return False
            for local in entries:
                if self.local_name(local, entries.key_locs[local], seen):
                    locals_[local] = section
                else:
                    sound = False
        outputs = body.get("outputs")
        if outputs is None and not body.get("nodes"):
            self.error(f"{what} needs 'outputs' or 'nodes'", loc)
            return False
        if outputs is not None and not isinstance(outputs, str) and not (
                isinstance(outputs, list) and outputs and all(isinstance(o, str) for o in outputs)):
            self.error(f"'outputs' of {what} must be a name or a list of names",
                       body.value_locs["outputs"])
            return False
        for arg in args:
            sound = self.valid_name(arg, args.key_locs[arg], "argument names") and sound
        if sound:
            self.blocks[name] = Block(name, body, args, inputs, locals_)
        return sound

    def local_name(self, name: Any, loc: SourceLocation, seen: dict) -> bool:
        if not self.valid_name(name, loc, "names"):
            return False
        if name in seen:
            self.error(f"'{name}' is already declared at line {seen[name].line}; a block's "
                       "inputs, params, constants and nodes share one namespace", loc)
            return False
        seen[name] = loc
        return True

    def valid_name(self, name: Any, loc: SourceLocation, what: str) -> bool:
        if not isinstance(name, str) or not name or name.strip() != name or \
                any(c in name for c in "#.$"):
            self.error(f"{what} must be non-empty strings without '#', '.', '$' or surrounding "
                       f"spaces, got {name!r}", loc)
            return False
        return True
