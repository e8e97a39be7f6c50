"""Data for training: the embedded digits or the user's ``.npz`` / ``.npy`` / ``.csv`` files.

A dataset is two arrays, features ``x`` (leading batch axis) and integer labels ``y`` (or
``None``).  The trainer feeds them to the graph's inputs; :func:`fit_to_input` reshapes flat
features to the input's shape, so the same data trains an MLP (64 features) and a CNN
(1×8×8 images).  Splits and mini-batch orders come from seeded generators, so an experiment is
repeatable bit for bit.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from .errors import FlowgradError
from .op import Spec, format_shape, prod

X_KEYS = ("x", "X", "data", "features", "images", "inputs")
Y_KEYS = ("y", "Y", "labels", "label", "target", "targets")


@dataclass
class Dataset:
    """Features and labels (``y`` may be None for unlabelled data); ``name`` is for messages."""

    x: np.ndarray
    y: np.ndarray | None
    name: str = "data"

    def __post_init__(self) -> None:
        if self.y is not None and len(self.y) != len(self.x):
            raise FlowgradError(f"{self.name}: {len(self.x)} samples but {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.x)

    def subset(self, index: np.ndarray) -> "Dataset":
        return Dataset(self.x[index], None if self.y is None else self.y[index], self.name)


def load_data(spec: str, registry: Any = None) -> Dataset:
    """A data set by name (``"digits"``, embedded) or a file by its suffix, through the
    registered data loaders (``flowgrad_register_data_loaders``); built in:

    * ``.npz``: features under one of ``x, X, data, features, images, inputs`` and labels under
      one of ``y, Y, labels, label, target, targets`` (or exactly two arrays: features, labels).
    * ``.npy``: a 2-d array whose last column is the integer label.
    * ``.csv``: numbers separated by commas, last column the label; a header line is skipped.
    """
    if registry is None:
        from .plugins import default_registry
        registry = default_registry()
    loaders = registry.table("data_loader")
    names = sorted(n for n in loaders if not n.startswith("."))
    suffixes = sorted(n for n in loaders if n.startswith("."))
    if spec in loaders and not spec.startswith("."):
        return loaders[spec](spec)
    if not os.path.exists(spec):
        raise FlowgradError(f"data '{spec}' not found: give a data set name "
                            f"({', '.join(names)}) or a path to a {', '.join(suffixes)} file")
    ext = os.path.splitext(spec)[1].lower()
    if ext not in loaders:
        raise FlowgradError(f"{spec}: unsupported data format '{ext}' (use "
                            f"{', '.join(suffixes)}, or load a plugin that reads it)")
    try:
        return loaders[ext](spec)
    except (ValueError, OSError) as e:
        raise FlowgradError(f"{spec}: cannot read: {e}") from None


def _digits(spec: str) -> Dataset:
    from .datasets import load_digits
    return Dataset(*load_digits(), name="digits")


def _from_npz(path: str) -> Dataset:
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    xk = next((k for k in X_KEYS if k in arrays), None)
    yk = next((k for k in Y_KEYS if k in arrays), None)
    if xk is None and len(arrays) == 2:
        xk, yk = list(arrays)
    if xk is None:
        raise FlowgradError(f"{path}: no features found; name them one of {', '.join(X_KEYS)} "
                            f"(arrays in the file: {', '.join(arrays) or 'none'})")
    return Dataset(arrays[xk], None if yk is None else _labels(arrays[yk], path), path)


def _read_csv(path: str) -> np.ndarray:
    with open(path, encoding="utf-8") as f:
        first = f.readline()
    try:
        [float(v) for v in first.strip().split(",")]
        skip = 0
    except ValueError:
        skip = 1
    return np.loadtxt(path, delimiter=",", skiprows=skip, ndmin=2)


def _from_table(table: np.ndarray, path: str) -> Dataset:
    if table.ndim != 2 or table.shape[1] < 2:
        raise FlowgradError(f"{path}: expected a table with features then a label column, got "
                            f"shape {table.shape}")
    return Dataset(table[:, :-1].astype(np.float32), _labels(table[:, -1], path), path)


def _labels(y: np.ndarray, path: str) -> np.ndarray:
    if y.dtype.kind == "f":
        if not np.all(np.mod(y, 1) == 0):
            raise FlowgradError(f"{path}: labels must be integers (class indices)")
        y = y.astype(np.int64)
    return y


#: the built-in loaders, registered by :mod:`flowgrad.builtins` like a plugin's
BUILTIN_LOADERS: dict[str, Callable[[str], Dataset]] = {
    "digits": _digits,
    ".npz": _from_npz,
    ".npy": lambda path: _from_table(np.load(path, allow_pickle=False), path),
    ".csv": lambda path: _from_table(_read_csv(path), path),
}


def split(data: Dataset, fraction: float, seed: int = 0) -> tuple[Dataset, Dataset]:
    """Hold out ``fraction`` of the samples (a seeded permutation): ``(kept, held_out)``."""
    if not 0 <= fraction < 1:
        raise FlowgradError(f"a split fraction must be in [0, 1), got {fraction}")
    order = np.random.default_rng(seed).permutation(len(data))
    n_out = int(round(len(data) * fraction))
    return data.subset(np.sort(order[n_out:])), data.subset(np.sort(order[:n_out]))


def batches(n: int, batch_size: int, rng: np.random.Generator | None) -> Iterator[np.ndarray]:
    """Index arrays of consecutive mini-batches; shuffled by ``rng`` (None: in order)."""
    order = np.arange(n) if rng is None else rng.permutation(n)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def fit_to_input(x: np.ndarray, spec: Spec, name: str) -> np.ndarray:
    """Reshape features to the shape of graph input ``name`` (batch axis kept)."""
    want = spec.shape[1:]
    if x.shape[1:] == tuple(want) or None in want:
        return x
    if prod(x.shape[1:]) == prod(want):
        return x.reshape((len(x),) + tuple(want))
    raise FlowgradError(f"the data's samples have shape {x.shape[1:]}, but input '{name}' takes "
                        f"{format_shape(spec.shape)} (N is the batch)")
