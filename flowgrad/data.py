"""Data for training: the embedded digits or the user's ``.npz`` / ``.npy`` / ``.csv`` files.

A dataset is its features ``x`` (leading batch axis), its labels ``y`` (class indices, or float
targets for a regression loss; ``None`` for unlabelled data) and, from an ``.npz``, every array
of the file by name, so a graph with several inputs takes each from the array named after it.
The trainer feeds them to the graph's inputs; :func:`fit_to_input` reshapes flat features to
the input's shape, so the same data trains an MLP (64 features) and a CNN (1×8×8 images).
Splits and mini-batch orders come from seeded generators, so an experiment is repeatable bit
for bit.

Files are read through :mod:`flowgrad.arrays`, which refuses a damaged file with a message
naming it (and the array); labels are checked here for what every use needs (one axis, no NaN)
and by the trainer against the graph (class indices in range, or float targets).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .arrays import check_finite, check_ndim, fail, read_arrays, read_csv, read_npy
from .errors import FlowgradError
from .graph import Graph
from .op import Spec, format_shape, prod

X_KEYS = ("x", "X", "data", "features", "images", "inputs")
Y_KEYS = ("y", "Y", "labels", "label", "target", "targets")


@dataclass
class Dataset:
    """Features and labels (``y`` may be None for unlabelled data); ``name`` is for messages;
    ``arrays`` holds a file's arrays by name (``x`` and ``y`` among them), for graphs whose
    inputs are named after them.  ``x`` is None when no array is recognisably the features:
    the graph's input names must then pick them.  Every array holds the same samples."""

    x: np.ndarray | None
    y: np.ndarray | None
    name: str = "data"
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        named = dict(self.arrays)
        for label, value in (("the features", self.x), ("the labels", self.y)):
            if value is not None and not any(value is a for a in self.arrays.values()):
                named[label] = value
        if not named:
            raise FlowgradError(f"{self.name}: no arrays")
        for key, value in named.items():
            if np.ndim(value) == 0:
                raise FlowgradError(f"{self.name}: {_label(key)}: is a single value, not one "
                                    "value per sample")
        counts = {k: len(v) for k, v in named.items()}
        first = next(iter(counts))
        for key, n in counts.items():
            if n != counts[first]:
                raise FlowgradError(f"{self.name}: {_label(key)}: has {n} samples but "
                                    f"{_label(first)} has {counts[first]}; every array of a "
                                    "data file holds the same samples")

    def __len__(self) -> int:
        return len(next(v for v in (self.x, self.y, *self.arrays.values()) if v is not None))

    def subset(self, index: np.ndarray) -> "Dataset":
        taken: dict[int, np.ndarray] = {}

        def take(value: np.ndarray | None) -> np.ndarray | None:
            if value is None:
                return None
            if id(value) not in taken:          # x and y are also in arrays: slice once
                taken[id(value)] = value[index]
            return taken[id(value)]

        return Dataset(take(self.x), take(self.y), self.name,
                       {k: take(v) for k, v in self.arrays.items()})


def _label(key: str) -> str:
    return key if key.startswith("the ") else f"array '{key}'"


def load_data(spec: str, registry: Any = None) -> Dataset:
    """A data set by name (``"digits"``, embedded) or a file by its suffix, through the
    registered data loaders (``flowgrad_register_data_loaders``); built in:

    * ``.npz``: features under one of ``x, X, data, features, images, inputs`` and labels under
      one of ``y, Y, labels, label, target, targets`` (or exactly two arrays: features, labels);
      an array named after a graph input feeds that input (``Dataset.arrays``).
    * ``.npy``: a 2-d array whose last column is the label (a class index or a float target).
    * ``.csv``: numbers separated by commas, last column the label; a header line is skipped.

    A damaged file, non-numeric arrays, labels with NaN or of the wrong rank, arrays with
    different numbers of samples: a :class:`FlowgradError` naming the file and the array.
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
    arrays = read_arrays(path, "data file")
    if not arrays:
        raise fail(path, None, "the archive holds no arrays")
    xk = next((k for k in X_KEYS if k in arrays), None)
    yk = next((k for k in Y_KEYS if k in arrays), None)
    if xk is None and yk is None and len(arrays) == 2:
        xk, yk = list(arrays)
    y = None if yk is None else _labels(arrays[yk], path, yk)
    if yk is not None:
        arrays[yk] = y
    return Dataset(None if xk is None else arrays[xk], y, path, arrays)


def _from_table(table: np.ndarray, path: str) -> Dataset:
    if table.ndim != 2 or table.shape[1] < 2:
        raise fail(path, None, f"expected a table with features then a label column, got "
                               f"shape {table.shape}")
    return Dataset(table[:, :-1].astype(np.float32), _labels(table[:, -1], path, None), path)


def _labels(y: np.ndarray, path: str, key: str | None) -> np.ndarray:
    """Labels as every use needs them: one axis (or two: one-hot or vector targets), no NaN;
    whole-number floats become int64 class indices, other floats stay targets."""
    what = "the labels" if key is not None else "the label column"
    check_ndim(y, (1, 2), path, key, what)
    check_finite(y, path, key, what)
    if y.dtype.kind == "f" and y.ndim == 1 and np.all(np.mod(y, 1) == 0) \
            and np.all(np.abs(y) < 2.0 ** 53):
        y = y.astype(np.int64)
    return y


#: the built-in loaders, registered by :mod:`flowgrad.builtins` like a plugin's
BUILTIN_LOADERS: dict[str, Callable[[str], Dataset]] = {
    "digits": _digits,
    ".npz": _from_npz,
    ".npy": lambda path: _from_table(read_npy(path, "data file"), path),
    ".csv": lambda path: _from_table(read_csv(path, "data file"), path),
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


def fit_to_input(x: np.ndarray, spec: Spec, name: str, where: str = "the data's") -> np.ndarray:
    """Reshape an array to the shape of graph input ``name`` (batch axis kept); ``where``
    names the array in the message."""
    want = spec.shape[1:]
    if x.shape[1:] == tuple(want) or None in want:
        return x
    if prod(x.shape[1:]) == prod(want):
        return x.reshape((len(x),) + tuple(want))
    raise FlowgradError(f"{where} samples have shape {x.shape[1:]}, but input '{name}' takes "
                        f"{format_shape(spec.shape)} (N is the batch)")


def bind_inputs(graph: Graph, data: Dataset, needed: Sequence[str], features: str | None,
                labels: str | None, classes: int | None = None) -> dict[str, np.ndarray]:
    """The array feeding each graph input in ``needed``, checked once for the whole data set.

    An input takes the array of ``data`` named after it; otherwise the ``features`` input takes
    ``data.x`` and the ``labels`` input ``data.y``.  Integer inputs need whole numbers (cast
    to the input's dtype); the labels input, when integer, needs class indices in
    ``[0, classes)`` (``classes`` None: only >= 0) and, when float (regression targets),
    finite values.  Each refusal names the file and the array.
    """
    bound = {}
    for name in needed:
        if name in data.arrays:
            array = data.arrays[name]
        elif name == features and data.x is not None:
            array = data.x
        elif name == labels and data.y is not None:
            array = data.y
        else:
            raise FlowgradError(_unfed(data, name, features, labels))
        key = next((k for k, v in data.arrays.items() if v is array), None)
        where = f"{data.name}: " + (f"array '{key}'" if key is not None else
                                    "the label column" if array is data.y else "the features")
        spec = graph.spec_of(name)
        if spec.dtype.kind in "iu":
            array = _whole_numbers(array, spec.dtype, name == labels, classes, where)
        elif name == labels:
            check_finite(array, data.name, key, "the targets")
        bound[name] = fit_to_input(array, spec, name, f"{where}: its")
    return bound


def _unfed(data: Dataset, name: str, features: str | None, labels: str | None) -> str:
    files = f"arrays in the file: {', '.join(data.arrays)}" if data.arrays else "no named arrays"
    if name == labels:
        return (f"{data.name}: input '{name}' takes labels, but the data has none (name an "
                f"array '{name}' or one of {', '.join(Y_KEYS)}; {files})")
    if name == features:
        return (f"{data.name}: input '{name}' takes the features, but the data has no array "
                f"named '{name}' nor one of {', '.join(X_KEYS)} ({files})")
    return f"{data.name}: input '{name}' needs an array named '{name}' ({files})"


def _whole_numbers(array: np.ndarray, dtype: np.dtype, is_labels: bool, classes: int | None,
                   where: str) -> np.ndarray:
    """``array`` cast to integer ``dtype`` after checking it holds only whole numbers in
    range (class indices, for the labels)."""
    if not array.size:
        return array.astype(dtype)
    flat = array.reshape(len(array), -1)
    if array.dtype.kind == "f":
        bad = ~np.isfinite(flat) | (np.mod(flat, 1) != 0)
        if bad.any():
            sample, column = np.argwhere(bad)[0]
            raise FlowgradError(f"{where}: holds {float(flat[sample, column]):g} at sample "
                                f"{sample}, but the input takes whole numbers (class labels "
                                "are 0..C-1; for a regression target, make the input a float "
                                "input)")
    top = np.iinfo(dtype).max if classes is None else classes - 1
    bottom = 0 if is_labels else np.iinfo(dtype).min
    bad = (flat < bottom) | (flat > top)
    if bad.any():
        sample, column = np.argwhere(bad)[0]
        value = float(flat[sample, column])
        raise FlowgradError(f"{where}: holds {value:g} at sample {sample}, " + (
            f"but the classes are 0..{top}" if is_labels else f"outside {dtype}")
            + (" (a negative label would pick a class from the end)"
               if is_labels and value < 0 else ""))
    return array.astype(dtype, copy=False)
