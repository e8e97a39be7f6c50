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


#: (cases, largest error, where) from each pytest-xdist worker, gathered by the controller
_FROM_WORKERS: list[tuple[int, float, str]] = []


def pytest_sessionfinish(session):
    """On a pytest-xdist worker, hand the worker's finite-difference summary to the
    controller, which prints the session summary (the workers' own output is not shown)."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None and _FD_ERRORS:
        workeroutput["fd_errors"] = (len(_FD_ERRORS), *max(_FD_ERRORS))


@pytest.hookimpl(optionalhook=True)             # a pytest-xdist hook (absent with -p no:xdist)
def pytest_testnodedown(node, error):
    summary = getattr(node, "workeroutput", {}).get("fd_errors")
    if summary:
        _FROM_WORKERS.append(tuple(summary))


def pytest_terminal_summary(terminalreporter):
    parts = _FROM_WORKERS + ([(len(_FD_ERRORS), *max(_FD_ERRORS))] if _FD_ERRORS else [])
    if parts:
        _, worst, where = max(parts, key=lambda part: part[1])
        terminalreporter.write_line(
            f"finite-difference checks: {sum(p[0] for p in parts)} cases, largest absolute "
            f"error {worst:.2e} ({where})")


os.environ.setdefault("MPLBACKEND", "Agg")
