"""Shared fixtures; the session summary reports the largest finite-difference error seen."""
from __future__ import annotations

import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
GRAPHS = ROOT / "graphs"

_FD_ERRORS: list[tuple[float, str]] = []


@pytest.fixture
def fd_errors():
    return _FD_ERRORS


@pytest.fixture
def graphs_dir() -> pathlib.Path:
    return GRAPHS


def pytest_terminal_summary(terminalreporter):
    if _FD_ERRORS:
        worst, where = max(_FD_ERRORS)
        terminalreporter.write_line(
            f"finite-difference checks: {len(_FD_ERRORS)} cases, largest absolute error "
            f"{worst:.2e} ({where})")


os.environ.setdefault("MPLBACKEND", "Agg")
