"""Gradient-check cases, one module per op family: each defines ``CASES = {op type: [Case]}``.

``tests/test_op_gradients.py`` runs every case and checks that every registered op has one.
"""
from __future__ import annotations

import importlib
import pkgutil

from flowgrad.testing import Case


def all_cases() -> dict[str, list[Case]]:
    merged: dict[str, list[Case]] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for op_type, cases in module.CASES.items():
            if op_type in merged:
                raise ValueError(f"cases for '{op_type}' are defined in two modules")
            merged[op_type] = list(cases)
    return merged
