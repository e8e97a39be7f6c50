"""Typed reads of one YAML settings mapping (``train:``, ``visualize:``), every mistake located.

The graph sections (inputs, params, nodes) are read by the builder; the settings sections are
flat mappings of typed values, and this is their one vocabulary: each read returns the value,
or ``default`` when the key is absent or its value is wrong — after adding the mistake, at
the key or the value, to the loader's error list, so a file's errors all come in one round.
"""
from __future__ import annotations

from typing import Any, Sequence

from ..errors import DiagnosticList, SourceLocation, did_you_mean, unknown_key
from .value_checks import is_finite

_INT64_MAX = 2**63 - 1

class SectionFields:
    """The keys of one mapping ``d`` (a located ``MarkedDict``) named ``what`` in messages."""

    def __init__(self, d: Any, what: str, errors: DiagnosticList,
                 fallback: SourceLocation | None = None):
        self.d = d
        self.what = what
        self.errors = errors
        self.fallback = fallback

    # -- locations ---------------------------------------------------------------------
    def loc(self) -> SourceLocation | None:
        return getattr(self.d, "loc", None) or self.fallback

    def key_loc(self, key: str) -> SourceLocation | None:
        return getattr(self.d, "key_locs", {}).get(key) or self.loc()

    def value_loc(self, key: str) -> SourceLocation | None:
        return getattr(self.d, "value_locs", {}).get(key) or self.loc()

    def error(self, message: str, loc: SourceLocation | None) -> None:
        self.errors.add(message, loc)

    # -- reads -------------------------------------------------------------------------
    def only(self, allowed: Sequence[str]) -> None:
        """Report every key not in ``allowed``, at the key."""
        for key in self.d:
            if key not in allowed:
                self.error(unknown_key(key, self.what, allowed), self.key_loc(key))

    def integer(self, key: str, low: int, default: Any) -> Any:
        """An integer ``>= low`` that fits in an int64 (counts, sizes and seeds reach numpy)."""
        value = self.d.get(key, default)
        if key in self.d and not (is_finite(value) and isinstance(value, int) and value >= low):
            self.error(f"'{key}' must be an integer >= {low}, got {value!r}", self.value_loc(key))
            return default
        if key in self.d and value > _INT64_MAX:
            self.error(f"'{key}' must be at most {_INT64_MAX}, got {value!r}", self.value_loc(key))
            return default
        return value

    def number(self, key: str, default: Any, *, low: float | None = None,
               high: float | None = None, what: str = "a number") -> Any:
        """A number, optionally with ``low < value`` (exclusive) or ``low <= value < high``."""
        value = self.d.get(key, default)
        if key not in self.d:
            return default
        ok = is_finite(value)
        if ok and low is not None and high is None:
            ok = value > low
        if ok and high is not None:
            ok = (low is None or low <= value) and value < high
        if not ok:
            self.error(f"'{key}' must be {what}, got {value!r}", self.value_loc(key))
            return default
        return float(value)

    def string(self, key: str, default: Any, choices: Sequence[str] = ()) -> Any:
        value = self.d.get(key, default)
        if key not in self.d:
            return default
        if not isinstance(value, str):
            self.error(f"'{key}' must be a string, got {value!r}", self.value_loc(key))
            return default
        if choices and value not in choices:
            self.error(f"unknown {key} '{value}'{did_you_mean(value, choices)} "
                       f"({key}s: {', '.join(choices)})", self.value_loc(key))
            return default
        return value

    def mapping(self, key: str, shape: str) -> Any:
        """The nested mapping at ``key`` (None if absent or wrong; ``shape`` shows the form)."""
        value = self.d.get(key)
        if value is not None and not isinstance(value, dict):
            self.error(f"'{key}' must be a mapping like {shape}, got {value!r}",
                       self.value_loc(key))
            return None
        return value

    def nested(self, key: str) -> "SectionFields":
        """The fields of the nested mapping at ``key`` (located at ``key`` if it has no marks)."""
        return SectionFields(self.d[key], f"'{key}'", self.errors, self.value_loc(key))


def item_loc(items: Any, i: int, fallback: SourceLocation | None) -> SourceLocation | None:
    """The location of item ``i`` of a located list (``fallback`` for a plain one)."""
    locs = getattr(items, "item_locs", None)
    return locs[i] if locs else getattr(items, "loc", None) or fallback
