"""Shared fixtures; the session summary reports the largest finite-difference error seen."""
from __future__ import annotations

import os
import pathlib

import numpy as np
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


def _float_bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.dtype(f"u{a.itemsize}"))


#: whether this numpy's ``maximum`` hands back a NaN operand's own bits (numpy 2.4 on x86
#: does; a build that returns a canonical NaN would make kernels that keep the payload differ
#: from it in the payload only)
NUMPY_KEEPS_NAN_PAYLOADS = bool(
    _float_bits(np.maximum(np.array([0x7FC00403], np.uint32).view(np.float32), 0))[0]
    == 0x7FC00403)


def assert_same_bits(got: np.ndarray, want: np.ndarray, err_msg: str = "") -> None:
    """``got`` has ``want``'s bits — signed zeros included — and its NaNs where ``want`` has
    them, with their payloads when this numpy keeps payloads (:data:`NUMPY_KEEPS_NAN_PAYLOADS`)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, want.dtype,
                                                                   got.shape, want.shape)
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan, err_msg=f"{err_msg}: NaN positions")
    keep = slice(None) if NUMPY_KEEPS_NAN_PAYLOADS else ~nan
    np.testing.assert_array_equal(_float_bits(got)[keep], _float_bits(want)[keep],
                                  err_msg=err_msg)

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
