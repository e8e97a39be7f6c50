"""Locations inside an instantiated block: the place in the block's body plus where it was
instantiated, so an error reads both, compiler style::

    lib.yaml:7:22: error: ...
        7 |       c2: {op: conv, in: {x: r1, W: W2}}
          |                      ^
    net.yaml:20:3: note: in 'stage2.block1', an instance of block 'basic'
       20 |   stage2: {block: basic, repeat: 2, in: stage1, with: {ch: 128}}
          |   ^

:class:`InstanceLocation` is a :class:`SourceLocation` (its ``path:line:col`` is the place in
the body), so everything that locates an error by a node's location — the builder, the passes,
the plan — carries the instantiation chain along without knowing about it; the loader turns
such diagnostics into :class:`_NotedDiagnostic` s, whose report adds a note per site.

:class:`Section`, :func:`shallow` and :class:`Fallback` assemble the expanded file's marked
containers so that each entry keeps the locations it was written at.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from ..errors import Diagnostic, SourceLocation
from .yaml_source import MarkedDict, MarkedList


@dataclass(frozen=True)
class Site:
    """One instantiation: where it is written (in its own file), the instance's full name and
    its block."""

    loc: SourceLocation
    instance: str
    block: str


@dataclass(frozen=True)
class InstanceLocation(SourceLocation):
    """A place in a block's body as seen from one instance: ``sites`` innermost first."""

    sites: tuple[Site, ...] = ()


def within(loc: SourceLocation, sites: tuple[Site, ...]) -> SourceLocation:
    """``loc`` (a place in a block's body) seen through ``sites``."""
    if not sites:
        return loc
    return InstanceLocation(loc.path, loc.line, loc.col, loc.text, sites)


class Within(Mapping):
    """``{key: location}`` of a block's body seen through ``sites``, made when read."""

    __slots__ = ("_locs", "_sites")

    def __init__(self, locs: Mapping[Any, SourceLocation], sites: tuple[Site, ...]):
        self._locs, self._sites = locs, sites

    def __getitem__(self, key: Any) -> SourceLocation:
        return within(self._locs[key], self._sites)

    def __iter__(self):
        return iter(self._locs)

    def __len__(self) -> int:
        return len(self._locs)

    def __contains__(self, key: Any) -> bool:
        return key in self._locs


class WithinItems(Sequence):
    """``[location]`` of a list in a block's body seen through ``sites``, made when read."""

    __slots__ = ("_locs", "_sites")

    def __init__(self, locs: Sequence[SourceLocation], sites: tuple[Site, ...]):
        self._locs, self._sites = locs, sites

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [within(loc, self._sites) for loc in self._locs[index]]
        return within(self._locs[index], self._sites)

    def __len__(self) -> int:
        return len(self._locs)


class _NotedDiagnostic(Diagnostic):
    """A diagnostic inside a block instance: its report ends with a note per site."""

    def format(self) -> str:
        lines = [super().format()]
        for site in self.loc.sites:
            note = f"in '{site.instance}', an instance of block '{site.block}'"
            lines.append(Diagnostic(note, site.loc, severity="note").format())
        return "\n".join(lines)


def with_sites(diagnostic: Diagnostic) -> Diagnostic:
    """``diagnostic``, reporting its instantiation sites if it lies inside a block."""
    loc = diagnostic.loc
    if type(diagnostic) is Diagnostic and isinstance(loc, InstanceLocation):
        return _NotedDiagnostic(diagnostic.message, loc, diagnostic.node, diagnostic.severity)
    return diagnostic


def source_order(diagnostic: Diagnostic, main: str) -> tuple:
    """Sort key of diagnostics: by place in the main file (an error in a block by the site of
    its outermost instance, then by its place in the body), other files after, unlocated
    last."""
    loc = diagnostic.loc
    if loc is None:
        return (2,)
    inner = (loc.path, loc.line, loc.col)
    if isinstance(loc, InstanceLocation):
        outer = loc.sites[-1].loc
        return (0, outer.line, outer.col) + inner
    if loc.path == main:
        return (0, loc.line, loc.col, "", 0, 0)
    return (1,) + inner


class Section:
    """A params, constants or nodes section being assembled: entries and their locations,
    the expanded ones seen through their instantiation sites."""

    def __init__(self, base: Any, loc: SourceLocation):
        self.out = MarkedDict()
        self.out.loc = loc
        self.where: dict[str, tuple] = {}
        self.out.key_locs = Placed(self.where, 0)
        self.out.value_locs = Placed(self.where, 1)
        if isinstance(base, MarkedDict):
            for name, value in base.items():
                self.add(name, value, base, name, ())

    def add(self, name: str, value: Any, container: MarkedDict, key: str,
            sites: tuple[Site, ...]) -> None:
        self.out[name] = value
        self.where[name] = (container.key_locs, container.value_locs, key, sites)


class Placed(Mapping):
    """The key (``which`` 0) or value (1) locations of a :class:`Section`, made when read."""

    def __init__(self, where: dict[str, tuple], which: int):
        self._where, self._which = where, which

    def __getitem__(self, name: str) -> SourceLocation:
        entry = self._where[name]
        return within(entry[self._which][entry[2]], entry[3])

    def __iter__(self):
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


def shallow(value: MarkedDict | MarkedList) -> MarkedDict | MarkedList:
    """A copy of a marked container that shares its locations."""
    out = type(value)(value)
    if isinstance(value, MarkedDict):
        out.key_locs, out.value_locs = value.key_locs, value.value_locs
    else:
        out.item_locs = value.item_locs
    out.loc = value.loc
    return out


class Fallback(Mapping):
    """``locs``, answering ``default`` for a key it lacks (a section only expansion made)."""

    def __init__(self, locs: Mapping, default: SourceLocation):
        self._locs, self._default = locs, default

    def __getitem__(self, key: Any) -> SourceLocation:
        return self._locs[key] if key in self._locs else self._default

    def __iter__(self):
        return iter(self._locs)

    def __len__(self) -> int:
        return len(self._locs)
