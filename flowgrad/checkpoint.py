"""Checkpoints: one ``.npz`` holding everything a run needs to continue bit for bit.

Contents: params (trainable and state, e.g. batch-norm running statistics), the optimizer's
buffers and step count, and a JSON ``meta`` record (epoch, position inside the epoch, the RNG
states of the shuffler and of the plan's random ops, history, early-stopping state).  Arrays
are stored with their exact dtype and JSON keeps the generators' integer states exactly, so a
resumed run repeats the same floating-point operations as an uninterrupted one.

Writing is atomic: the file is written to a temporary name in the same directory, flushed to
disk, then renamed over the target, so a crash (or a second Ctrl-C) never leaves a truncated
checkpoint.  Loading never unpickles (``allow_pickle=False``).
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from .errors import FlowgradError

FORMAT = "flowgrad-checkpoint"
VERSION = 1


@dataclass
class Checkpoint:
    """What a checkpoint file holds: ``arrays`` by group (``params``, ``optimizer``, ...) and
    ``meta``, a JSON-compatible dict."""

    arrays: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def params(self) -> dict[str, np.ndarray]:
        return self.arrays.get("params", {})


def save_checkpoint(path: str | os.PathLike, arrays: Mapping[str, Mapping[str, np.ndarray]],
                    meta: Mapping[str, Any]) -> None:
    """Write ``arrays`` (group -> name -> array) and ``meta`` to ``path`` atomically."""
    path = os.fspath(path)
    flat: dict[str, np.ndarray] = {}
    for group, values in arrays.items():
        if "/" in group:
            raise ValueError(f"checkpoint group names may not contain '/': {group!r}")
        for name, value in values.items():
            flat[f"{group}/{name}"] = np.asarray(value)
    record = {"format": FORMAT, "version": VERSION, **meta}
    flat["#meta"] = np.asarray(json.dumps(record))
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".ckpt-", suffix=".npz.tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **flat)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`."""
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            flat = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        raise FlowgradError(f"{path}: cannot read checkpoint: {e}") from None
    if "#meta" not in flat:
        raise FlowgradError(f"{path}: not a flowgrad checkpoint (no metadata record)")
    meta = json.loads(str(flat.pop("#meta")))
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise FlowgradError(f"{path}: unsupported checkpoint format {meta.get('format')!r} "
                            f"version {meta.get('version')!r}")
    arrays: dict[str, dict[str, np.ndarray]] = {}
    for key, value in flat.items():
        group, _, name = key.partition("/")
        arrays.setdefault(group, {})[name] = value
    return Checkpoint(arrays, meta)


def check_params(checkpoint: Checkpoint, params: Mapping[str, np.ndarray], path: str) -> None:
    """Raise if the checkpoint's params do not match a plan's names and shapes."""
    saved = checkpoint.params
    missing = sorted(set(params) - set(saved))
    extra = sorted(set(saved) - set(params))
    if missing or extra:
        raise FlowgradError(f"{path}: the checkpoint does not fit this graph"
                            + (f"; missing params: {', '.join(missing)}" if missing else "")
                            + (f"; unknown params: {', '.join(extra)}" if extra else ""))
    for name, value in params.items():
        if saved[name].shape != value.shape:
            raise FlowgradError(f"{path}: param '{name}' has shape {saved[name].shape} in the "
                                f"checkpoint but {value.shape} in the graph")


def load_params(plan: Any, path: str) -> Checkpoint:
    """Load a checkpoint's params into a plan (after checking they fit); return the checkpoint."""
    checkpoint = load_checkpoint(path)
    check_params(checkpoint, plan.params, path)
    plan.load_state_dict(checkpoint.params)
    return checkpoint
