"""Checkpoints: one ``.npz`` holding everything a run needs to continue bit for bit.

Contents: params (trainable and state, e.g. batch-norm running statistics), the optimizer's
buffers and step count, and a JSON ``meta`` record (epoch, position inside the epoch, the RNG
states of the shuffler and of the plan's random ops, history, early-stopping state, the run's
length, batch size and number of samples).  Arrays are stored with their exact dtype and JSON
keeps the generators' integer states exactly, so a resumed run repeats the same floating-point
operations as an uninterrupted one.

Writing is atomic: the file is written to a temporary name in the same directory (mode 0600,
like the checkpoint it becomes: weights are nobody else's business), flushed to disk, then
renamed over the target, so a crash (or a second Ctrl-C) never leaves a truncated checkpoint.
A temporary file left by a process that was killed mid-save is removed by the next save in that
folder.

Reading goes through :mod:`flowgrad.arrays` (never unpickles; a damaged file is refused), and
everything is checked before anything is used: :func:`load_checkpoint` the container (JSON
metadata, ``GROUP/NAME`` entries), :func:`check_params` the params against a plan, and
:func:`check_training_state` what resuming needs — each refusal names the file and the key.
"""
from __future__ import annotations

import glob
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from .arrays import fail, read_arrays
from .errors import FlowgradError

FORMAT = "flowgrad-checkpoint"
VERSION = 1
META = "#meta"
TMP_PREFIX, TMP_SUFFIX = ".ckpt-", ".npz.tmp"


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
    flat[META] = np.asarray(json.dumps(record))
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    remove_stale_temporaries(directory)
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{os.getpid()}-", suffix=TMP_SUFFIX,
                               dir=directory)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **flat)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def remove_stale_temporaries(directory: str) -> list[str]:
    """Delete the temporary files of saves that never finished (their process is gone) in
    ``directory``; a save in progress in another live process is left alone."""
    removed = []
    for tmp in glob.glob(os.path.join(glob.escape(directory), f"{TMP_PREFIX}*{TMP_SUFFIX}")):
        pid = os.path.basename(tmp)[len(TMP_PREFIX):].partition("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
            continue
        try:
            os.unlink(tmp)
            removed.append(tmp)
        except FileNotFoundError:      # another process cleaned it first
            pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:            # someone else's process: alive
        return True
    return True


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`: a readable archive of numeric
    ``GROUP/NAME`` arrays and a JSON metadata record of this format and version."""
    path = os.fspath(path)
    flat = read_arrays(path, "checkpoint", text={META})
    if META not in flat:
        raise fail(path, None, "not a flowgrad checkpoint (no metadata record '#meta'); give a "
                               "checkpoint.npz written by flowgrad train")
    record = flat.pop(META)
    if record.dtype.kind != "U" or record.ndim != 0:
        raise fail(path, META, f"must be one JSON string, got {record.dtype} {record.shape}")
    try:
        meta = json.loads(str(record))
    except (ValueError, RecursionError) as e:
        raise fail(path, META, f"is not valid JSON ({e}); the checkpoint is damaged: use "
                               "another one or train again") from None
    if not isinstance(meta, dict):
        raise fail(path, META, f"must be a JSON object, got {type(meta).__name__}")
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise fail(path, META, f"unsupported checkpoint format {meta.get('format')!r} version "
                               f"{meta.get('version')!r} (this flowgrad reads {FORMAT!r} "
                               f"version {VERSION})")
    arrays: dict[str, dict[str, np.ndarray]] = {}
    for key, value in flat.items():
        group, slash, name = key.partition("/")
        if not slash or not group or not name:
            raise fail(path, key, "is not a checkpoint entry (GROUP/NAME, e.g. params/W1); the "
                                  "file was not written by flowgrad")
        arrays.setdefault(group, {})[name] = value
    return Checkpoint(arrays, meta)


def check_params(checkpoint: Checkpoint, params: Mapping[str, np.ndarray], path: str,
                 group: str = "params", exact_dtype: bool = False) -> None:
    """Refuse params that do not fit a plan's: missing or unknown names, other shapes, values
    that are not finite floats (or, with ``exact_dtype``, not the plan's dtype)."""
    saved = checkpoint.arrays.get(group, {})
    missing = sorted(set(params) - set(saved))
    extra = sorted(set(saved) - set(params))
    if missing or extra:
        raise FlowgradError(f"{path}: the checkpoint does not fit this graph"
                            + (f"; missing {group}: {', '.join(missing)}" if missing else "")
                            + (f"; unknown {group}: {', '.join(extra)}" if extra else "")
                            + " (was it trained from another graph?)")
    for name, value in params.items():
        key, have = f"{group}/{name}", saved[name]
        if have.shape != value.shape:
            raise fail(path, key, f"has shape {have.shape} in the checkpoint but {value.shape} in "
                                  "the graph (was it trained from another graph?)")
        if have.dtype.kind != value.dtype.kind or exact_dtype and have.dtype != value.dtype:
            raise fail(path, key, f"has dtype {have.dtype} in the checkpoint but the run uses "
                                  f"{value.dtype}" + (" (resume with the --dtype it was trained "
                                                      "with)" if exact_dtype else ""))
        if have.dtype.kind == "f" and not np.all(np.isfinite(have)):
            raise fail(path, key, "holds NaN or infinity: the checkpoint was saved from a "
                                  "diverged run or is damaged; use an earlier one")


def load_params(plan: Any, path: str) -> Checkpoint:
    """Load a checkpoint's params into a plan (after checking they fit); return the checkpoint.

    A saved name that is an alias of one of the plan's params counts as that param: a
    checkpoint trained on an imported ONNX model (keys ``params/0.weight``) loads into the
    model's YAML conversion, which declares ``0_weight`` and keeps ``0.weight`` as an alias."""
    checkpoint = load_checkpoint(path)
    _by_node(checkpoint, plan)
    check_params(checkpoint, plan.params, path)
    plan.load_state_dict(checkpoint.params)
    return checkpoint


def _by_node(checkpoint: Checkpoint, plan: Any) -> None:
    """Key the checkpoint's params by the plan's param names where a saved name is an alias of
    one (see :func:`load_params`); other names are left for :func:`check_params` to report."""
    saved, graph = checkpoint.arrays.get("params"), getattr(plan, "graph", None)
    if not saved or graph is None or all(name in plan.params for name in saved):
        return
    renamed = {}
    for name, value in saved.items():
        if name not in plan.params:
            try:
                node = graph.leaf(name)
            except KeyError:
                node = name
            if node in plan.params and node not in saved and node not in renamed:
                name = node
        renamed[name] = value
    checkpoint.arrays["params"] = renamed


# -- what resuming needs -------------------------------------------------------------------

def _count(v: Any) -> bool:
    return type(v) is int and v >= 0


def _number(v: Any) -> bool:
    """A JSON number arithmetic with floats can use (no 400-digit integers)."""
    return type(v) is float or type(v) is int and abs(v) < 2 ** 53


def _rng_state(v: Any) -> bool:
    """Whether ``v`` is a state numpy's default bit generator accepts."""
    if not isinstance(v, dict):
        return False
    try:
        np.random.default_rng(0).bit_generator.state = v
    except (TypeError, ValueError, KeyError, OverflowError):
        return False
    return True


def _numbers(v: Any) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) and _number(x) for k, x in v.items())


def _sums(v: Any) -> bool:
    """The running sums of an unfinished epoch: finite numbers, and the count ``n``."""
    return _numbers(v) and all(math.isfinite(x) for x in v.values()) \
        and (not v or _count(v.get("n")))


def _history(v: Any) -> bool:
    """One row per epoch: its number, and finite numbers (what the curves plot)."""
    return isinstance(v, list) and all(
        _numbers(row) and type(row.get("epoch")) is int and row["epoch"] > 0
        and all(math.isfinite(x) for x in row.values()) for row in v)


def _early(v: Any) -> bool:
    return (isinstance(v, dict) and (v.get("best") is None or _number(v.get("best")))
            and _count(v.get("bad_epochs")) and isinstance(v.get("stopped"), bool))


#: the metadata :meth:`flowgrad.train.Trainer.save` writes: key -> (check, what it must be)
TRAINING_META: dict[str, tuple[Callable[[Any], bool], str]] = {
    "epoch": (_count, "a non-negative integer"),
    "step": (_count, "a non-negative integer"),
    "batch_in_epoch": (_count, "a non-negative integer"),
    "epochs": (lambda v: _count(v) and v > 0, "a positive integer"),
    "batch_size": (lambda v: _count(v) and v > 0, "a positive integer"),
    "samples": (_count, "a non-negative integer"),
    "sums": (_sums, "an object of finite numbers with the count 'n'"),
    "history": (_history, "a list of rows {epoch: integer >= 1, name: finite number...}"),
    "rng": (_rng_state, "a numpy generator state"),
    "epoch_rng": (lambda v: v is None or _rng_state(v), "null or a numpy generator state"),
    "plan_rng": (_rng_state, "a numpy generator state"),
    "early": (_early, "an object {best: number or null, bad_epochs: integer >= 0, stopped: "
                      "true or false}"),
    "optimizer_kind": (lambda v: isinstance(v, str), "a string"),
}


def check_training_state(checkpoint: Checkpoint, params: Mapping[str, np.ndarray],
                         leaves: Mapping[str, np.ndarray], path: str) -> None:
    """Everything resuming reads, checked before any of it is used: the params (exact dtype),
    the metadata of :data:`TRAINING_META`, the optimizer's buffers (one per known trainable
    leaf, of its shape, finite) and step count, and the early-stopping best params."""
    check_params(checkpoint, params, path, exact_dtype=True)
    meta = checkpoint.meta
    for key, (ok, what) in TRAINING_META.items():
        if key not in meta:
            raise _meta_fail(path, key, "is missing: the checkpoint is damaged, or was "
                                        "not written by this version of flowgrad's trainer")
        if not ok(meta[key]):
            raise _meta_fail(path, key, f"must be {what}, got {_short(meta[key])}")
    if meta["batch_in_epoch"] and meta["epoch_rng"] is None:
        raise _meta_fail(path, "epoch_rng", "is null, but the checkpoint stopped inside an "
                                            "epoch, whose order it needs")
    if "best" in checkpoint.arrays:
        check_params(checkpoint, params, path, group="best", exact_dtype=True)
    _check_optimizer(checkpoint.arrays.get("optimizer", {}), leaves, meta["step"], path)


def _check_optimizer(state: Mapping[str, np.ndarray], leaves: Mapping[str, np.ndarray],
                     step: int, path: str) -> None:
    steps = state.get("#steps")
    if steps is None or steps.ndim != 0 or steps.dtype.kind not in "iu" or int(steps) != step:
        raise fail(path, "optimizer/#steps", f"must be the integer {step} (the steps taken), "
                                             f"got {_short(steps)}")
    buffers: dict[str, set[str]] = {}
    for key, value in state.items():
        if key == "#steps":
            continue
        leaf, slash, buffer = key.rpartition("/")
        where = f"optimizer/{key}"
        if not slash or leaf not in leaves:
            raise fail(path, where, "is state for no trainable param of this graph (trainable: "
                                    f"{', '.join(leaves) or 'none'})")
        if value.shape != leaves[leaf].shape:
            raise fail(path, where, f"has shape {value.shape}, but param '{leaf}' has "
                                    f"{leaves[leaf].shape}: the checkpoint is damaged")
        if value.dtype.kind != "f" or not np.all(np.isfinite(value)):
            raise fail(path, where, f"must hold finite floats (got {value.dtype}"
                                    f"{'' if value.dtype.kind != 'f' else ' with NaN or inf'})")
        buffers.setdefault(leaf, set()).add(buffer)
    every = set().union(*buffers.values())
    for leaf, names in buffers.items():        # every updated leaf has the same buffers
        if names != every:
            raise fail(path, f"optimizer/{leaf}/{min(every - names)}",
                       "is missing, while other params have it: the checkpoint is incomplete")


def _meta_fail(path: str, key: str, problem: str) -> FlowgradError:
    return FlowgradError(f"{path}: metadata '{key}' (in '{META}'): {problem}")


def _short(value: Any) -> str:
    text = repr(value.tolist() if isinstance(value, np.ndarray) else value)
    return text if len(text) <= 60 else text[:57] + "..."

