"""The numbers of a graph file, checked before anything is made from them.

YAML reads any integer exactly (``10**400`` too) and any float, ``.nan`` and ``.inf``
included; numpy then fails on them in its own words (``OverflowError``, ``scale < 0``,
``MemoryError: Unable to allocate 149. GiB``) or silently makes NaN weights.  So the builder
asks here first: a shape is a list of positive integers below :data:`MAX_DIM`, a number is
finite, and the params of a file together fit in :data:`MAX_PARAM_BYTES` — refused, naming
the biggest, before a single one is allocated.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

#: the largest size of one axis, and the most axes (numpy's own limit is 64): every product
#: of a shape's sizes then stays far inside what a float can print
MAX_DIM = 2**31 - 1
MAX_RANK = 32
#: the params of one file may hold at most this many bytes, as initialized (float64): 134M
#: values, a few seconds of drawing random numbers, and room left in a 2 GiB process
MAX_PARAM_BYTES = 1 << 30
#: one sample of an input may hold at most this many bytes (as float64)
MAX_SAMPLE_BYTES = 2 << 30
#: bytes per value of an initialized param (initializers draw in float64)
PARAM_ITEMSIZE = 8


def is_number(value: Any) -> bool:
    """An int or float, but not a bool (YAML's ``true`` is no number)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_finite(value: Any) -> bool:
    """A number that converts to a finite float (``10**400`` does not: it overflows)."""
    if not is_number(value):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def is_shape(value: Any) -> bool:
    """A list of at most :data:`MAX_RANK` positive integers, each at most :data:`MAX_DIM`
    (``[]``: a scalar)."""
    return isinstance(value, list) and len(value) <= MAX_RANK and all(
        type(v) is int and 0 < v <= MAX_DIM for v in value)         # type(True) is bool


def nbytes(shape: tuple[int, ...], itemsize: int = PARAM_ITEMSIZE) -> int:
    return math.prod(shape) * itemsize


def size_text(count: int) -> str:
    """``count`` bytes for a reader: ``74.5 GiB``, ``3.0 MiB``, ``512 bytes``."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:.3g} {unit}"
    return f"{count} bytes"


def finite_array(value: Any) -> np.ndarray | None:
    """``value`` (a number or nested rectangular list of numbers) as a float64 array; None
    if it is none, or holds a value no float64 holds (``1e400``, ``.nan``, ``10**400``)."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        return None
    return array if np.isfinite(array).all() else None
