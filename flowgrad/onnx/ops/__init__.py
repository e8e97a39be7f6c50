"""The built-in ONNX translations, one module per op family (mirroring :mod:`flowgrad.ops`),
each holding the import and the export of its ops side by side in a
:class:`~flowgrad.onnx.translations.Translations` table.

:mod:`flowgrad.builtins` registers them through the ``flowgrad_register_onnx`` hook, as a
plugin registers its own.  To add an op, edit its family's module (see docs/onnx.md, "Adding
an ONNX op").
"""
from __future__ import annotations

import importlib

from ..translations import Translations

#: the family modules, in the order their tables are registered
FAMILIES = ("activations", "elementwise", "linalg", "conv", "pool", "norm", "shape",
            "indexing", "reduce", "resample", "tensor", "losses", "recurrent", "control",
            "detection", "quant", "attention", "signal")


def all_translations() -> list[Translations]:
    """Every family's table, in :data:`FAMILIES` order."""
    return [importlib.import_module(f"{__name__}.{family}").T for family in FAMILIES]
