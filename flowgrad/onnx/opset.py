"""Which translation (handler) serves an ONNX op at a model's opset version.

A handler is registered for ``(domain, op_type)`` with the opset version ``since`` which it
implements; for a model importing opset *v* the highest ``since <= v`` is chosen, as onnx's
reference evaluator does.  Only versions whose semantics differ need their own handler (e.g.
Reshape-1 takes ``shape`` as an attribute, Reshape-5 as an input).

A handler is ``handler(b, attrs, inputs) -> list[Value]``: ``b`` is the
:class:`~flowgrad.onnx.builder.Builder`, ``attrs`` the node's attributes as Python values
(tensors as numpy arrays, strings decoded), ``inputs`` one :class:`~flowgrad.onnx.builder.Value`
(or ``None`` for an omitted optional input) per ONNX input.  It returns one value per ONNX output
(``None`` for an output it does not produce).
"""
from __future__ import annotations

from typing import Callable, Iterable

Handler = Callable

#: ``(domain, op_type) -> [(since, handler)]`` for the built-in translations
HANDLERS: dict[tuple[str, str], list[tuple[int, Handler]]] = {}

#: ``(domain, op_type) -> ONNX input positions whose value is needed at load time``: shapes,
#: axes, pads, scales...  An initializer read only at such positions is a constant, not a param.
STATIC_INPUTS: dict[tuple[str, str], frozenset[int]] = {}

#: input positions that hold running statistics: initializers there become non-trainable params
STATE_INPUTS: dict[tuple[str, str], frozenset[int]] = {("", "BatchNormalization"): frozenset({3, 4})}


def onnx_op(*op_types: str, since: int = 1, domain: str = "",
            static: Iterable[int] = ()) -> Callable[[Handler], Handler]:
    """Register the decorated function as the handler of ``op_types`` from opset ``since``."""
    def register(fn: Handler) -> Handler:
        for op_type in op_types:
            entries = HANDLERS.setdefault((domain, op_type), [])
            entries.append((since, fn))
            entries.sort(key=lambda e: e[0])
            if static:
                STATIC_INPUTS[(domain, op_type)] = frozenset(static)
        return fn
    return register


def pick(table: dict[tuple[str, str], list[tuple[int, Handler]]], domain: str, op_type: str,
         version: int) -> Handler | None:
    """The handler with the highest ``since <= version``, or None."""
    best = None
    for since, fn in table.get((domain, op_type), ()):
        if since <= version:
            best = fn
    return best


def versions(table, domain: str, op_type: str) -> list[int]:
    return [since for since, _ in table.get((domain, op_type), ())]
