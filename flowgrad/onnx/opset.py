"""Which import translation serves an ONNX op at a model's opset version.

A translation is registered for ``(domain, op_type)`` with the opset version ``since`` from
which it applies; for a model importing opset *v* the highest ``since <= v`` is chosen, as onnx's
reference evaluator does.  Only versions whose semantics differ need their own translation
(e.g. Reshape-1 takes ``shape`` as an attribute, Reshape-5 as an input).

A handler is ``handler(b, attrs, inputs) -> list[Value]``: ``b`` is the
:class:`~flowgrad.onnx.builder.Builder`, ``attrs`` the node's attributes
(:class:`~flowgrad.onnx.access.Attrs`: typed, checked readers such as ``attrs.int("axis", 1)``,
and a mapping of decoded values), ``inputs`` one :class:`~flowgrad.onnx.builder.Value` (or
``None`` for an omitted optional input) per ONNX input (:class:`~flowgrad.onnx.access.Inputs`:
``inputs.need(i, "X")``, ``inputs.opt(i)``).  It returns one value per ONNX output (``None``
for an output it does not produce).
"""
from __future__ import annotations

from typing import Mapping

from .translations import ImportTranslation

Versions = dict[tuple[str, str], list[ImportTranslation]]


def by_op(table: Mapping[tuple[str, str, int], ImportTranslation]) -> Versions:
    """``{(domain, op_type): [translation, ...]}`` by ascending ``since``, from the registry's
    ``onnx_import`` table."""
    out: Versions = {}
    for (domain, op_type, _), record in sorted(table.items()):
        out.setdefault((domain, op_type), []).append(record)
    return out


def pick(versions: Versions, domain: str, op_type: str, version: int) -> ImportTranslation | None:
    """The translation with the highest ``since <= version``, or None."""
    best = None
    for record in versions.get((domain, op_type), ()):
        if record.since <= version:
            best = record
    return best
