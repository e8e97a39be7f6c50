"""A table of ONNX translations: import (ONNX node -> flowgrad ops) and export (flowgrad op ->
ONNX nodes) of one op family, side by side.

Each family module of :mod:`flowgrad.onnx.ops` fills one :class:`Translations`, and so does a
plugin for its own ops; both hand it to the registry through the ``flowgrad_register_onnx``
hook (``onnx.add(T)``).  Keeping the two directions in one place means a new op is one edit::

    T = Translations("activations")

    @T.imports("LeakyRelu")                 # also since=, domain=, static=, state=
    def leaky_relu(b, a, ins):              # b: the Builder, a: Attrs, ins: Inputs
        return b.final("leaky_relu", [ins.need(0, "X")], alpha=a.float("alpha", 0.01))

    @T.exports("leaky_relu")                # flowgrad op type(s)
    def _leaky_relu(c):                     # c: the export context (flowgrad.onnx.export)
        c.node("LeakyRelu", c.ins, c.outs, alpha=c.op.alpha)

    T.same("Relu", "relu")                  # both directions of a one-to-one op at once

An import handler is ``handler(b, attrs, inputs) -> list[Value]`` (see
:mod:`flowgrad.onnx.opset`); an exporter is ``exporter(ctx) -> None``
(see :class:`flowgrad.onnx.export._Ctx`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

Handler = Callable
Exporter = Callable


def canonical_domain(domain: str) -> str:
    """ONNX spells its standard domain both ``""`` and ``"ai.onnx"``; flowgrad uses ``""``."""
    return "" if domain in ("", "ai.onnx") else domain


@dataclass(frozen=True)
class ImportTranslation:
    """How flowgrad imports ``(domain, op_type)`` from opset ``since`` on.

    ``static``: input positions whose value is needed at load time (shapes, axes, pads...): an
    initializer read only there is a constant, not a param.  ``state``: input positions holding
    running statistics: an initializer read only there is a non-trainable param.  ``partial``:
    why the translation covers only part of the op (such ops are not claimed by the
    conformance report), empty when it covers all of it.
    """

    domain: str
    op_type: str
    since: int
    handler: Handler
    static: frozenset[int] = frozenset()
    state: frozenset[int] = frozenset()
    partial: str = ""


class Translations:
    """The import and export translations of one op family (or one plugin); see the module
    docstring.  ``label`` names the table in listings and error messages."""

    def __init__(self, label: str):
        self.label = label
        self._imports: dict[tuple[str, str, int], ImportTranslation] = {}
        self._exports: dict[str, Exporter] = {}

    def __repr__(self) -> str:
        return f"<Translations {self.label!r}: {len(self._imports)} imports, " \
               f"{len(self._exports)} exports>"

    @property
    def importers(self) -> tuple[ImportTranslation, ...]:
        return tuple(self._imports.values())

    @property
    def exporters(self) -> tuple[tuple[str, Exporter], ...]:
        """``(flowgrad op type, exporter)`` pairs."""
        return tuple(self._exports.items())

    def imports(self, *op_types: str, since: int = 1, domain: str = "",
                static: Iterable[int] = (), state: Iterable[int] = (),
                partial: str = "") -> Callable[[Handler], Handler]:
        """Decorate the import handler of ONNX ``op_types`` from opset ``since`` on."""
        def register(handler: Handler) -> Handler:
            for op_type in op_types:
                record = ImportTranslation(canonical_domain(domain), op_type, since, handler,
                                           frozenset(static), frozenset(state), partial)
                key = (record.domain, op_type, since)
                if key in self._imports:
                    raise ValueError(f"{self.label}: {op_type} (domain {domain or 'ai.onnx'}, "
                                     f"opset {since}) is imported twice")
                self._imports[key] = record
            return handler
        return register

    def exports(self, *op_types: str) -> Callable[[Exporter], Exporter]:
        """Decorate the exporter of flowgrad ``op_types``."""
        def register(exporter: Exporter) -> Exporter:
            for op_type in op_types:
                if op_type in self._exports:
                    raise ValueError(f"{self.label}: flowgrad op '{op_type}' is exported twice")
                self._exports[op_type] = exporter
            return exporter
        return register

    def same(self, onnx_type: str, op_type: str, attrs: Sequence[str] = (),
             since: int = 1) -> None:
        """A flowgrad op that is one ONNX op: same inputs, outputs and attribute names
        ``attrs`` (absent ONNX attributes take the flowgrad op's default, which must be
        ONNX's)."""
        self.imports(onnx_type, since=since)(node_importer(op_type, attrs))
        self.exports(op_type)(node_exporter(onnx_type, attrs))


def node_importer(op_type: str, attrs: Sequence[str] = ()) -> Handler:
    """An import handler adding flowgrad op ``op_type`` on the node's inputs, with the ONNX
    attributes ``attrs`` that the node sets (ONNX has no booleans: an int becomes the bool a
    flowgrad ``bool`` attribute wants)."""
    def handler(b, a, ins):
        declared = b.registry.get(op_type).attrs
        return b.final(op_type, list(ins), **{
            k: a.bool(k) if declared[k].kind == "bool" else a[k] for k in attrs if k in a})
    handler.__doc__ = f"ONNX node -> flowgrad '{op_type}'"
    return handler


def node_exporter(onnx_type: str, attrs: Sequence[str] = (), domain: str = "") -> Exporter:
    """An exporter writing one ONNX ``onnx_type`` node with the op's attributes ``attrs``
    (those set: None and empty tuples are left out)."""
    def exporter(c) -> None:
        c.node(onnx_type, c.ins, c.outs, domain=domain, **_op_attrs(c.op, attrs))
    exporter.__doc__ = f"flowgrad op -> ONNX '{onnx_type}'"
    return exporter


def _op_attrs(op, names: Sequence[str]) -> dict:
    """The op's attributes ``names`` that are set, as ONNX node attributes (tuples as lists,
    bools as ints)."""
    out = {}
    for name in names:
        value = getattr(op, name)
        if value is None or (isinstance(value, tuple) and not value):
            continue
        if isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, bool):
            value = int(value)
        out[name] = value
    return out
