"""Fuzz target: training data files (``flowgrad train GRAPH --data FILE``).

A case is one data file in one of three formats, tagged by its first line (``npz``, ``npy`` or
``csv``; :func:`argv` writes the rest as ``data.<format>``), so a mutant keeps its format and
the corpus replays it as the same kind of file.  The seeds are 24 of the embedded digits, as
an ``.npz`` (stored and compressed), a ``.npy`` table and a ``.csv`` with a header.
:func:`seeds` also trains once on a seed, so that what a process pays once (importing
matplotlib for the curves, compiling kernels) is not charged to the first mutant's 10 s.

Mutations are mostly structural, re-zipped with valid CRCs so they reach the checks behind
the zip's: ``.npy`` header edits (shape, dtype, fortran_order, version, header length),
truncated or padded array data, labels that are NaN, negative, out of range, fractional or of
the wrong rank, features of the wrong size, count or dtype, renamed, missing and extra
arrays; then damaged zips and csv text; and, as the fallback, byte-wise edits.
"""
from __future__ import annotations

import io
import pathlib
import random
import re
import tempfile
import zipfile

import numpy as np

from tests.fuzz import harness

NAME = "data_file"
SUFFIX = ".data"
GRAPH = str(pathlib.Path(__file__).resolve().parents[2] / "graphs" / "digits_mlp.yaml")
FORMATS = ("npz", "npy", "csv")

_SEEDS: list[bytes] = []


def seeds() -> list[bytes]:
    if not _SEEDS:
        from flowgrad.data import load_data
        digits = load_data("digits").subset(np.arange(24))
        x, y = digits.x, digits.y
        table = np.column_stack([x, y]).astype(np.float32)
        csv = "\n".join([",".join(f"p{i}" for i in range(64)) + ",label"]
                        + [",".join(f"{v:g}" for v in row) for row in table]) + "\n"
        _SEEDS.extend([tag("npz", npz({"x": x, "y": y})),
                       tag("npz", npz({"images": (x * 16).astype(np.uint8).reshape(-1, 8, 8),
                                       "labels": y.astype(np.uint8)}, compressed=True)),
                       tag("npy", npy(table)),
                       tag("csv", csv.encode())])
        with tempfile.TemporaryDirectory() as folder:
            warm = harness.run_cli(argv(harness.write_case(_SEEDS[0], SUFFIX, folder), folder))
            assert warm.rc == 0, warm.stderr
    return list(_SEEDS)


def tag(fmt: str, payload: bytes) -> bytes:
    return fmt.encode() + b"\n" + payload


def untag(data: bytes) -> tuple[str, bytes]:
    """The format and the file's bytes; an unknown tag (a byte-wise mutant's) reads as csv."""
    head, _, payload = data.partition(b"\n")
    fmt = head.decode("latin1")
    return (fmt, payload) if fmt in FORMATS else ("csv", data)


def argv(path: str, workdir: str) -> list[str]:
    fmt, payload = untag(pathlib.Path(path).read_bytes())
    data = pathlib.Path(workdir) / f"data.{fmt}"
    data.write_bytes(payload)
    return ["train", GRAPH, "--data", str(data), "--epochs", "1", "--batch-size", "8",
            "--out", str(pathlib.Path(workdir) / "run"), "--no-progress"]


# -- building files ------------------------------------------------------------------------

def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def npz(members: dict[str, np.ndarray | bytes], compressed: bool = False) -> bytes:
    """A zip of ``.npy`` members (arrays, or raw bytes standing for a mutated member)."""
    buf = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w", method) as z:
        for name, value in members.items():     # a fixed time: the same bytes every run
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            z.writestr(info, value if isinstance(value, bytes) else npy(value), method)
    return buf.getvalue()


def unzip(payload: bytes) -> tuple[dict[str, bytes], bool]:
    with zipfile.ZipFile(io.BytesIO(payload)) as z:
        infos = z.infolist()
        members = {i.filename.removesuffix(".npy"): z.read(i) for i in infos}
    return members, any(i.compress_type != zipfile.ZIP_STORED for i in infos)


def load_npy(raw: bytes) -> np.ndarray:
    return np.load(io.BytesIO(raw), allow_pickle=False)


# -- .npy header and data edits ------------------------------------------------------------

_DESCRS = ["'<U8'", "'|S4'", "'|V8'", "'|O'", "'<c16'", "'>f4'", "'|b1'", "'<i8'", "'<f2'",
           "'<M8[s]'", "[('a', '<f4')]", "'<f4', 'x'", "'zz'", "'<f4'", "'<u1'", "'<f8'", "3",
           "('<f4', (2,))"]
_SHAPES = ["()", "(0,)", "(24,)", "(24, 64)", "(24, 65)", "(12, 128)", "(-1, 64)",
           "(2147483648, 64)", "(99999999999, 99999999)", "(24, 8, 8)", "(24, 1, 8, 8)",
           "(24.0, 64)", "[24, 64]", "(24, None)", "(18446744073709551616,)", "'24'"]


def edit_header(raw: bytes, rng: random.Random) -> bytes:
    """One edit of a ``.npy`` member's header: a field, the length prefix or the version."""
    if len(raw) < 10:
        return raw
    major = raw[6]
    size = 2 if major == 1 else 4
    length = int.from_bytes(raw[8:8 + size], "little")
    header = raw[8 + size:8 + size + length].decode("latin1")
    body = raw[8 + size + length:]
    kind = rng.randrange(7)
    if kind == 0:
        header = re.sub(r"'descr': [^,]+(\([^)]*\))?,", f"'descr': {rng.choice(_DESCRS)},",
                        header, count=1)
    elif kind == 1:
        header = re.sub(r"'shape': \([^)]*\)", f"'shape': {rng.choice(_SHAPES)}", header)
    elif kind == 2:
        header = header.replace("False", rng.choice(["True", "1", "None", "'no'"]), 1)
    elif kind == 3:
        header = re.sub(r"'(descr|fortran_order|shape)'", rng.choice(["'x'", "'shape'", ""]),
                        header, count=1)
    elif kind == 4:
        header = rng.choice(["", "{}", "[1, 2]", "{'descr': '<f4'}", "a" * 200, header[:-5],
                             "{" * 500])
    elif kind == 5:
        return raw[:6] + bytes([rng.choice([0, 2, 3, 4, 255]), 0]) + raw[8:]
    else:
        length = rng.choice([0, 1, length - 1, length + 7, 65535, 70000 if size == 4 else 3])
        return raw[:8] + length.to_bytes(size, "little") + raw[8 + size:]
    encoded = header.encode("latin1")
    return raw[:8] + len(encoded).to_bytes(size, "little") + encoded + body


def edit_data(raw: bytes, rng: random.Random) -> bytes:
    """Truncate, pad or flip the data after the header (the CRC is made to match again)."""
    kind = rng.randrange(3)
    at = rng.randrange(len(raw)) if raw else 0
    if kind == 0:
        return raw[:at]
    if kind == 1:
        return raw + bytes(rng.randrange(1, 64))
    buf = bytearray(raw)
    if buf:
        buf[at] ^= 1 << rng.randrange(8)
    return bytes(buf)


# -- value edits: labels and features ------------------------------------------------------

def edit_labels(y: np.ndarray, rng: random.Random) -> np.ndarray:
    y = y.astype(np.float64)
    i = rng.randrange(len(y)) if len(y) else 0
    kind = rng.randrange(10)
    if kind == 0 and len(y):
        y[i] = float("nan")
    elif kind == 1 and len(y):
        y[i] = -1
    elif kind == 2 and len(y):
        y[i] = rng.choice([10, 11, 255, 2 ** 31, 2 ** 63, 1e300, float("inf")])
    elif kind == 3 and len(y):
        y[i] = 0.5
    elif kind == 4:
        return y[:-rng.randint(1, 3)]
    elif kind == 5:
        return y.reshape(-1, 1) if rng.random() < 0.5 else np.stack([y, y], axis=1)
    elif kind == 6:
        return y.astype(rng.choice([np.int8, np.uint8, np.bool_, np.float16, np.int32]))
    elif kind == 7:
        return np.asarray(y[0] if len(y) else 0.0)
    elif kind == 8:
        return y[:0]
    with np.errstate(invalid="ignore"):
        return y.astype(np.int64)


def edit_features(x: np.ndarray, rng: random.Random) -> np.ndarray:
    kind = rng.randrange(9)
    if kind == 0:
        return x[:, :-1] if x.ndim == 2 else x.reshape(len(x), -1)[:, :-1]
    if kind == 1:
        return x[:-1]
    if kind == 2:
        x = x.astype(np.float32)
        x.flat[rng.randrange(x.size)] = rng.choice([np.nan, np.inf, -np.inf, 3e38])
        return x
    if kind == 3:
        return x.reshape(-1)
    if kind == 4:
        return x[:0]
    if kind == 5:
        return x.astype(rng.choice([np.int64, np.bool_, np.float16, np.float64, np.uint8]))
    if kind == 6:
        return np.asfortranarray(x.reshape(len(x), -1))
    if kind == 7:
        return x.reshape((len(x),) + (1, 8, 8)) if x.size == len(x) * 64 else x
    return x * 1e30


# -- per format ----------------------------------------------------------------------------

def mutate_npz(payload: bytes, rng: random.Random) -> bytes:
    members, compressed = unzip(payload)
    names = list(members)
    kind = rng.randrange(8)
    name = rng.choice(names)
    if kind == 0:
        members[name] = edit_header(members[name], rng)
    elif kind == 1:
        members[name] = edit_data(members[name], rng)
    elif kind == 2:
        label = names[-1]
        members[label] = npy(edit_labels(load_npy(members[label]), rng))
    elif kind == 3:
        members[names[0]] = npy(edit_features(load_npy(members[names[0]]), rng))
    elif kind == 4:
        del members[name]
    elif kind == 5:
        members[rng.choice(["extra", "x", "label", "y", "inputs", "w"])] = rng.choice([
            npy(np.arange(24.0)), npy(np.asarray(3.0)), npy(np.array(["a"] * 24)),
            npy(np.zeros((24, 64), np.float32)), b"not an array"])
    elif kind == 6:
        members = {rng.choice(["a", "b", "X", "Y", "data", "target", "features"]) if k == name
                   else k: v for k, v in members.items()}
    else:
        return harness.byte_mutation(payload, rng)
    if kind < 2 and rng.random() < 0.3:
        return npz(members, compressed)[:-rng.randrange(1, 40)]
    return npz(members, compressed)


def mutate_npy(payload: bytes, rng: random.Random) -> bytes:
    kind = rng.randrange(5)
    if kind == 0:
        return edit_header(payload, rng)
    if kind == 1:
        return edit_data(payload, rng)
    table = load_npy(payload)
    if kind == 2:
        y = edit_labels(table[:, -1], rng)
        return npy(np.column_stack([table[:, :-1], y]) if y.shape == table[:, -1].shape
                   else table[:, :-1])
    if kind == 3:
        return npy(rng.choice([table[:, :2], table[:, :1], table.reshape(-1), table[None],
                               table.astype(np.float16), table.T, table[:0]]))
    return harness.byte_mutation(payload, rng)


_CSV_TOKENS = ["", "nan", "-1", "10", "0.5", "1e400", "abc", '"1"', "1,2", "\xff", "\x00",
               "1;2", " ", "9" * 40, "inf", "-inf", "1_0"]


def mutate_csv(payload: bytes, rng: random.Random) -> bytes:
    lines = payload.decode("utf-8").splitlines()
    kind = rng.randrange(6)
    row = rng.randrange(len(lines))
    cells = lines[row].split(",")
    if kind == 0:
        cells[-1] = rng.choice(_CSV_TOKENS)
    elif kind == 1:
        cells[rng.randrange(len(cells))] = rng.choice(_CSV_TOKENS)
    elif kind == 2:
        del cells[rng.randrange(len(cells))]
    elif kind == 3:
        lines = lines[:row]
    elif kind == 4:
        lines.insert(row, rng.choice(["", "#", ",,,", "a,b", lines[0]]))
    else:
        return harness.byte_mutation(payload, rng)
    if kind < 3:
        lines[row] = ",".join(cells)
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")


def mutate(data: bytes, rng: random.Random) -> bytes:
    fmt, payload = untag(data)
    if rng.random() < 0.15:
        return tag(fmt, harness.byte_mutation(payload, rng))
    mutated = {"npz": mutate_npz, "npy": mutate_npy, "csv": mutate_csv}[fmt](payload, rng)
    return tag(fmt, mutated)
