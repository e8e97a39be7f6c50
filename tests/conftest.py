"""Shared fixtures; the session summary reports the largest finite-difference error seen."""
from __future__ import annotations

import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
GRAPHS = ROOT / "graphs"

#: a six-channel conv layer on 3×8×8 images, and quick render settings: the graph the layer
#: renders are tested on, locally and on Dask
SIX_CHANNEL_CONV = """
flowgrad: 1
name: six_channels
inputs: {x: {shape: [3, 8, 8]}}
params:
  K: {shape: [6, 3, 3, 3], init: {kind: he_normal, seed: 2}}
nodes:
  conv: {op: conv, in: {x: x, W: K}}
  act: {op: relu, in: conv}
outputs: [act]
"""
LAYER_OPTIONS = dict(steps=3, penalties={"l2": 1.0}, seed=5)

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
