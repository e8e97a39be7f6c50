"""Helpers shared by subcommands: loading a graph and reading ``NAME=FILE`` feeds."""
from __future__ import annotations

import argparse
import os

import numpy as np

from ..errors import FlowgradError


def add_graph_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("graph", metavar="GRAPH", help="a .yaml graph or an .onnx model")


def add_dtype_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                        help="floating-point precision of the run (default float32)")


def read_array(path: str) -> np.ndarray:
    """Read a .npy file, or a single-array .npz file."""
    if not os.path.exists(path):
        raise FlowgradError(f"input file '{path}' does not exist")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise FlowgradError(f"cannot read '{path}' as a .npy/.npz array: {e}") from None
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            if len(data.files) != 1:
                raise FlowgradError(f"'{path}' holds {len(data.files)} arrays "
                                    f"({', '.join(data.files)}); pass one .npy per input")
            return data[data.files[0]]
    return data


def parse_feeds(items: list[str]) -> dict[str, np.ndarray]:
    feeds = {}
    for item in items:
        name, eq, path = item.partition("=")
        if not eq or not name or not path:
            raise FlowgradError(f"--input expects NAME=FILE.npy, got '{item}'")
        feeds[name] = read_array(path)
    return feeds
