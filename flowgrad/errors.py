"""Errors that users see: each one says where (file:line:col or node name) and what to do.

A user's mistake must never surface as a Python traceback, so every error flowgrad raises for
bad input is a :class:`FlowgradError` carrying one or more :class:`Diagnostic` s.  A pass collects
all the diagnostics it finds and raises them together, like a compiler.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Iterable, Sequence


@dataclass(frozen=True)
class SourceLocation:
    """A position in a source file (1-based line and column) and the text of that line."""

    path: str
    line: int
    col: int
    text: str = ""

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Diagnostic:
    """One problem: a message, and where it is (a source location, a node name, or both)."""

    message: str
    loc: SourceLocation | None = None
    node: str | None = None
    severity: str = "error"

    def format(self) -> str:
        if self.loc is not None:
            head = f"{self.loc}: {self.severity}: {self.message}"
            if not self.loc.text:
                return head
            gutter = f"{self.loc.line:>5} | "
            caret = " " * (len(gutter) - 2) + "| " + " " * (self.loc.col - 1) + "^"
            return f"{head}\n{gutter}{self.loc.text}\n{caret}"
        if self.node is not None:
            return f"node '{self.node}': {self.severity}: {self.message}"
        return f"{self.severity}: {self.message}"


class FlowgradError(Exception):
    """Base of every error flowgrad raises for a user's input; ``str()`` is the full report."""

    def __init__(self, diagnostics: str | Diagnostic | Sequence[Diagnostic], *,
                 node: str | None = None, loc: SourceLocation | None = None):
        if isinstance(diagnostics, str):
            diagnostics = [Diagnostic(diagnostics, loc=loc, node=node)]
        elif isinstance(diagnostics, Diagnostic):
            diagnostics = [diagnostics]
        self.diagnostics: list[Diagnostic] = list(diagnostics)
        super().__init__(self.report())

    def report(self) -> str:
        parts = [d.format() for d in self.diagnostics]
        if len(self.diagnostics) > 1:
            parts.append(f"{len(self.diagnostics)} errors")
        return "\n".join(parts)


class GraphError(FlowgradError):
    """A graph cannot be loaded, validated or shape-checked (a front-end or pass error)."""


class PluginError(FlowgradError):
    """A plugin could not be loaded, or two plugins claim the same name."""


class OpError(FlowgradError):
    """An op failed while running; the message names the node, its op type and input shapes."""


class NumericsError(FlowgradError):
    """A non-finite value appeared; the message names the first node that produced one."""


class AttrError(ValueError):
    """An op attribute has the wrong type or value (raised by ``Op.__init__``).

    Front ends catch it and attach the attribute's source location; ``attr`` names it.
    """

    def __init__(self, message: str, attr: str | None = None):
        super().__init__(message)
        self.attr = attr


class ShapeError(ValueError):
    """An op's ``infer`` found inputs whose shapes or dtypes it cannot accept."""


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """Return ``"; did you mean 'x'?"`` for the closest candidate, or ``""`` if none is close."""
    matches = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean '{matches[0]}'?" if matches else ""


def unknown_key(key: str, section: str, allowed: Sequence[str]) -> str:
    """The message for a mapping key that is not allowed: ``unknown key 'k' in 'train'; did
    you mean ...? (allowed: ...)`` — one wording for every section of every file."""
    return (f"unknown key '{key}' in {section}{did_you_mean(key, allowed)} "
            f"(allowed: {', '.join(allowed)})")


class DiagnosticList:
    """Collects the diagnostics of one pass, then raises them all at once."""

    def __init__(self) -> None:
        self.items: list[Diagnostic] = []

    def add(self, message: str, loc: SourceLocation | None = None, node: str | None = None) -> None:
        self.items.append(Diagnostic(message, loc=loc, node=node))

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self, cls: type[FlowgradError] = GraphError) -> None:
        if self.items:
            raise cls(self.items)
