"""Helpers shared by subcommands: the common arguments and the rules for files a command
writes.

Output paths follow one convention in every command: a missing folder is created (as
``train --out`` and ``demo --out`` always did), and an existing file is never replaced unless
the user passes ``--force`` — a typo must not cost anyone their work.  Bad flag values are
:class:`FlowgradError`\\ s naming the flag (exit 1); only a value argparse cannot parse at all
(``--steps x``) is a usage error (exit 2).
"""
from __future__ import annotations

import argparse
import math
import os

from ..errors import FlowgradError


def add_graph_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("graph", metavar="GRAPH", help="a .yaml graph or an .onnx model")


def add_dtype_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                        help="floating-point precision of the run (default float32)")


def add_force_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")


def add_dask_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """``--workers N`` and ``--cluster ADDR``: where ``what`` (e.g. "train data-parallel")
    runs on Dask (``flowgrad[distributed]``)."""
    parser.add_argument("--workers", type=int, metavar="N",
                        help=f"{what} on N Dask workers (a local cluster of N processes unless "
                             "--cluster; needs flowgrad[distributed])")
    parser.add_argument("--cluster", metavar="ADDR",
                        help=f"{what} on the Dask scheduler at ADDR, e.g. tcp://head:8786 (also "
                             "FLOWGRAD_CLUSTER)")


def add_checkpoint_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", metavar="CKPT",
                        help="load the trained params of this `flowgrad train` checkpoint "
                             "(checkpoint.npz) into the graph first")


def output_file(path: str, flag: str, force: bool) -> str:
    """Make ``path`` ready to be written: refuse a folder, and an existing file without
    ``--force``; create a missing parent folder.  ``flag`` names the option the path came
    from ('' for a positional argument)."""
    where = f"{flag} {path}" if flag else path
    if os.path.isdir(path):
        raise FlowgradError(f"{where}: is a folder; give a file name")
    if os.path.exists(path) and not force:
        raise FlowgradError(f"{where}: the file exists; pass --force to overwrite it")
    folder = os.path.dirname(path)
    if folder:
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:
            raise FlowgradError(f"{where}: cannot create the folder '{folder}': "
                                f"{e.strerror}") from None
    return path


def at_least(flag: str, value: int | None, low: int) -> None:
    """Refuse an integer flag below ``low``."""
    if value is not None and value < low:
        raise FlowgradError(f"{flag}: must be at least {low}, got {value}")


def finite_range(flag: str, pair: list[float] | None) -> None:
    """Refuse a ``LOW HIGH`` pair that is not finite or not increasing."""
    if pair is None:
        return
    low, high = pair
    if not (math.isfinite(low) and math.isfinite(high)):
        raise FlowgradError(f"{flag}: LOW and HIGH must be finite numbers, got {low:g} {high:g}")
    if not low < high:
        raise FlowgradError(f"{flag}: LOW must be below HIGH, got {low:g} {high:g}")


def add_shape_argument(parser: argparse.ArgumentParser, purpose: str) -> None:
    parser.add_argument("--shape", action="append", default=[], metavar="NAME=D,D,...",
                        help=f"the whole shape of input NAME for {purpose}, where the graph "
                             "leaves dims free (e.g. --shape x=1,3,48,192); repeatable")


def input_shapes(graph, items: list[str]) -> dict[str, tuple[int, ...]]:
    """``--shape NAME=D,D,...`` as ``{input: shape}``, checked against the graph's inputs: the
    name is an input (or an alias of one), the rank is the input's, and dims the graph fixes
    are given as they are."""
    shapes = {}
    for item in items:
        name, sep, dims = item.partition("=")
        try:
            shape = tuple(int(d) for d in dims.split(","))
        except ValueError:
            shape = ()
        if not sep or not name or not shape or min(shape) < 1:
            raise FlowgradError(f"--shape expects NAME=D,D,... with positive sizes, got '{item}'")
        ref = graph.aliases.get(name, name)
        if ref not in graph.inputs:
            raise FlowgradError(f"--shape {name}: the graph has no input '{name}' (inputs: "
                                f"{', '.join(graph.inputs)})")
        declared = graph.spec_of(ref).shape
        if len(shape) != len(declared) or any(d is not None and d != s
                                               for d, s in zip(declared, shape)):
            raise FlowgradError(f"--shape {name}: {list(shape)} does not fit the input's "
                                f"declared shape {dims_text(declared)}")
        shapes[ref] = shape
    return shapes


def dims_text(shape) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def with_shape_hint(error, graph, shapes: dict | None, purpose: str):
    """``error`` (an OpError from running ``graph`` on random inputs) with, when inputs with
    free dims were fed the size 2 — which a model's own windows and strides may not take —
    how to give real sizes, in the same message; else ``error`` itself."""
    from ..errors import OpError
    free = [n for n in graph.inputs if n not in (shapes or {})
            and None in graph.spec_of(n).shape[1:]]
    if not free or len(error.diagnostics) != 1:
        return error
    first = error.diagnostics[0]
    hint = "; ".join(f"input '{n}' is {dims_text(graph.spec_of(n).shape)}" for n in free)
    return OpError(f"{first.message} ({purpose} fed 2 for every free dim: {hint}; "
                   f"give real sizes with --shape {free[0]}=D,D,...)",
                   node=first.node, loc=first.loc)
