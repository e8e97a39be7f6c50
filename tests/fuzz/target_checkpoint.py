"""Fuzz target: checkpoints (``flowgrad eval --checkpoint`` and ``flowgrad train --resume``).

The seeds are real checkpoints: a tiny graph (dense, batch norm with running statistics,
dropout drawing from the plan's generator, Adam's buffers, early stopping's best params)
trained for one epoch through the CLI, one checkpoint saved at the end of the epoch and one by
Ctrl-C in the middle of it.  Mutations edit what resuming reads — the JSON metadata (keys
dropped, values of the wrong type or range, generator states, format and version), params
(missing, extra, reshaped, of another dtype, NaN), optimizer state (wrong shape, unknown leaf,
step count), the ``.npy`` headers and data inside the archive — re-zipped with valid CRCs so
they reach the checks behind the zip's; then truncation and byte-wise edits.

Which command a case runs is decided by its bytes (a CRC), so the corpus replays the same one.
"""
from __future__ import annotations

import io
import json
import pathlib
import random
import signal
import tempfile
import zlib

import numpy as np

from tests.fuzz import harness
from tests.fuzz.target_data_file import edit_data, edit_header, npy, npz, unzip

NAME = "checkpoint"
SUFFIX = ".npz"

GRAPH = """
flowgrad: 1
name: tiny
inputs: {x: {shape: [4]}, label: {shape: [], dtype: int64}}
params:
  W1: {shape: [4, 6], init: {kind: he_normal}}
  gamma: {shape: [6], init: {kind: constant, value: 1.0}}
  beta: {shape: [6], init: {kind: zeros}}
  mean: {shape: [6], init: {kind: zeros}, trainable: false}
  var: {shape: [6], init: {kind: constant, value: 1.0}, trainable: false}
  W2: {shape: [6, 3], init: {kind: glorot_uniform}}
  b2: {shape: [3], init: {kind: zeros}}
nodes:
  fc1: {op: dense, in: {x: x, W: W1}}
  bn: {op: batch_norm, in: {x: fc1, scale: gamma, bias: beta, mean: mean, var: var}}
  h1: {op: relu, in: bn}
  drop: {op: dropout, in: h1, ratio: 0.2}
  logits: {op: dense, in: {x: drop, W: W2, b: b2}}
  loss: {op: softmax_cross_entropy, in: {logits: logits, labels: label}}
outputs: [logits, loss]
train:
  optimizer: {kind: adam, lr: 0.01}
  schedule: {kind: cosine}
  epochs: 1
  batch_size: 8
  validation_split: 0.2
  early_stopping: {monitor: val_loss, patience: 3}
"""

_SEEDS: list[bytes] = []


def files(workdir: str) -> tuple[str, str]:
    """Write the tiny graph and its data (40 samples, 3 classes) to ``workdir``."""
    folder = pathlib.Path(workdir)
    graph, data = folder / "tiny.yaml", folder / "tiny.npz"
    graph.write_text(GRAPH)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 4)).astype(np.float32)
    np.savez(data, x=x, y=np.argmax(x[:, :3], axis=1))
    return str(graph), str(data)


def seeds() -> list[bytes]:
    if not _SEEDS:
        with tempfile.TemporaryDirectory() as folder:
            graph, data = files(folder)
            outcome = harness.run_cli(["train", graph, "--data", data, "--out", folder,
                                       "--no-progress"])
            assert outcome.rc == 0, outcome.stderr
            _SEEDS.append(_repeatable(pathlib.Path(folder, "checkpoint.npz").read_bytes()))
            _SEEDS.append(_repeatable(_interrupted(graph, data, folder)))
    return list(_SEEDS)


def _repeatable(checkpoint: bytes) -> bytes:
    """The checkpoint without what changes from run to run (the zip's timestamps, the
    epochs' durations), so every process mutates the same bytes."""
    members, _ = unzip(checkpoint)
    meta = json.loads(str(np.load(io.BytesIO(members["#meta"]))))
    for row in meta["history"]:
        row["seconds"] = 0.0
    members["#meta"] = npy(np.asarray(json.dumps(meta)))
    return npz(members)


def _interrupted(graph: str, data: str, folder: str) -> bytes:
    """A checkpoint written by Ctrl-C after the second step of the first epoch (of the
    training part of the data, as ``flowgrad train`` splits it)."""
    import flowgrad
    from flowgrad.data import split
    from flowgrad.train import Trainer, TrainingInterrupted

    def press_ctrl_c(trainer):
        if trainer.step == 2:
            signal.raise_signal(signal.SIGINT)

    trainer = Trainer(flowgrad.compile(flowgrad.load(graph)), callbacks=[press_ctrl_c])
    train, _ = split(flowgrad.load_data(data), trainer.config.test_split,
                     seed=trainer.config.seed)
    path = str(pathlib.Path(folder) / "interrupted.npz")
    try:
        trainer.fit(train, checkpoint=path)
    except TrainingInterrupted:
        pass
    return pathlib.Path(path).read_bytes()


def argv(path: str, workdir: str) -> list[str]:
    graph, data = files(workdir)
    if zlib.crc32(pathlib.Path(path).read_bytes()) % 3 == 0:
        return ["eval", graph, "--checkpoint", path, "--data", data]
    return ["train", graph, "--data", data, "--epochs", "2", "--resume", path, "--out",
            str(pathlib.Path(workdir) / "run"), "--no-progress"]


# -- mutations -----------------------------------------------------------------------------

JUNK = [-1, 0, 1, 1.5, -0.0, 2 ** 63, 2 ** 70, 1e308, float("nan"), "x", "", None, True, [],
        {}, [1, 2], {"a": 1}, [[[]]]]
META_KEYS = ["epoch", "step", "batch_in_epoch", "epochs", "batch_size", "samples", "sums",
             "history", "rng", "epoch_rng", "plan_rng", "early", "optimizer_kind", "format",
             "version", "graph", "dtype"]


def edit_meta(meta: dict, rng: random.Random) -> str:
    kind = rng.randrange(7)
    key = rng.choice(META_KEYS)
    if kind == 0:
        meta.pop(key, None)
    elif kind == 1:
        meta[key] = rng.choice(JUNK)
    elif kind == 2:
        state = meta.get(rng.choice(["rng", "plan_rng", "epoch_rng"])) or {}
        where = state.get("state", {}) if rng.random() < 0.6 else state
        field = rng.choice(list(where) or ["state"])
        where[field] = rng.choice(JUNK + ["MT19937", "PCG64DXSM", -5, 2 ** 128, 2 ** 200])
    elif kind == 3:
        part = meta.get(rng.choice(["early", "sums"])) or {}
        if part:
            part[rng.choice(list(part))] = rng.choice(JUNK)
    elif kind == 4:
        rows = meta.get("history") or [{}]
        rows[0][rng.choice(list(rows[0]) or ["loss"])] = rng.choice(JUNK)
        meta["history"] = rows
    elif kind == 5:
        meta[rng.choice(["epoch", "step", "batch_in_epoch"])] = rng.choice(
            [1, 2, 3, 5, 99, 10 ** 9, 2 ** 62])
    else:
        text = json.dumps(meta)
        return rng.choice([text[:rng.randrange(len(text))], "[]", "1", "null", "{", "NaN",
                           "[" * 100000, text.replace('"', "'", 3)])
    return json.dumps(meta)


def edit_array(value: np.ndarray, rng: random.Random) -> np.ndarray | bytes:
    kind = rng.randrange(7)
    if kind == 0:
        return value.T if value.ndim > 1 else value.reshape(1, -1)
    if kind == 1:
        return value.astype(rng.choice([np.float64, np.float16, np.int32, np.bool_, np.uint8]))
    if kind == 2:
        value = value.astype(np.float32)
        if value.size:
            value.flat[rng.randrange(value.size)] = rng.choice([np.nan, np.inf, 1e38])
        return value
    if kind == 3:
        return value.reshape(-1)[:max(0, value.size - 1)]
    if kind == 4:
        return np.zeros(value.shape + (2,), value.dtype)
    if kind == 5:
        return np.asarray(rng.choice([-3, 7, 2 ** 40, 1.5, 0]))
    return np.array(["text"] * max(1, value.size))


def mutate(data: bytes, rng: random.Random) -> bytes:
    if rng.random() < 0.15:
        return harness.byte_mutation(data, rng)
    members, _ = unzip(data)
    names = [n for n in members if n != "#meta"]
    kind = rng.randrange(8)
    name = rng.choice(names)
    if kind <= 1:
        meta = json.loads(str(np.load(io.BytesIO(members["#meta"]))))
        members["#meta"] = npy(np.asarray(edit_meta(meta, rng)))
    elif kind == 2:
        value = np.load(io.BytesIO(members[name]))
        edited = edit_array(value, rng)
        members[name] = edited if isinstance(edited, bytes) else npy(edited)
    elif kind == 3:
        del members[rng.choice(names + ["#meta"])]
    elif kind == 4:
        group = rng.choice(["params", "optimizer", "best", "paramz", ""])
        leaf = rng.choice(["W1", "W9", "mean", "#steps", "W1/m", "W9/m", "b2/v", "x"])
        members[f"{group}/{leaf}" if group else leaf] = npy(rng.choice(
            [np.zeros((4, 6), np.float32), np.zeros(3, np.float32), np.asarray(1.0)]))
    elif kind == 5:
        members[name] = edit_header(members[name], rng)
    elif kind == 6:
        members[name] = edit_data(members[name], rng)
    else:
        return npz(members)[:rng.randrange(1, len(data))]
    return npz(members)
