"""Fuzz target: ONNX models keeping their initializers in an external data file.

A case is one file bundling the model, its data files and symlinks (:func:`pack`); ``argv``
unpacks it into the case's folder and runs ``flowgrad check --no-gradients`` on the model
there.  Mutation
edits what the model says about its external data — offsets and lengths (negative, fractional,
huge, past the end), locations (NUL, ``..``, absolute, missing, a symlink out of the folder),
checksums, repeated or unknown keys — and the data file itself (truncated, extended, gone), so
the loader's promise is exercised: a message for every mistake, and nothing read from outside
the model's folder.
"""
from __future__ import annotations

import functools
import glob
import json
import os
import random

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.fuzz import harness

NAME = "external_data"
SUFFIX = ".fgxd"

DATA_FILE = "weights.bin"
_MAGIC = b"FGXD1\n"
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_GRAPHS = ("xor", "ffnn_seed", "logistic_reg", "digits_mlp", "parity", "matrix_calculus",
           "branch_merge")


def pack(model: bytes, files: dict[str, bytes], links: dict[str, str]) -> bytes:
    """One case: a JSON header (sizes, symlinks), then the model's bytes, then each file's."""
    header = {"model": len(model), "files": {n: len(d) for n, d in files.items()},
              "links": links}
    return _MAGIC + json.dumps(header).encode() + b"\n" + model + b"".join(files.values())


def unpack(data: bytes) -> tuple[bytes, dict[str, bytes], dict[str, str]]:
    """The inverse of :func:`pack`; a damaged case is all model, no files."""
    try:
        head, _, body = data[len(_MAGIC):].partition(b"\n")
        header = json.loads(head) if data.startswith(_MAGIC) else None
        model = body[:int(header["model"])]
        files, at = {}, int(header["model"])
        for name, size in header["files"].items():
            files[str(name)] = body[at:at + int(size)]
            at += int(size)
        links = {str(k): str(v) for k, v in header["links"].items()}
        return model, files, links
    except (ValueError, TypeError, KeyError, AttributeError):
        return data, {}, {}


@functools.cache
def seeds() -> list[bytes]:
    import flowgrad
    from flowgrad.onnx.export import export_onnx
    models = [export_onnx(flowgrad.load(os.path.join(_ROOT, "graphs", f"{g}.yaml")))
              for g in _GRAPHS]
    data = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")
    for path in sorted(glob.glob(os.path.join(data, "pytorch-converted", "*", "model.onnx")))[:6]:
        models.append(onnx.load(path))
    models.append(_constant_model())
    return [externalize(m) for m in models]


def _constant_model() -> onnx.ModelProto:
    """A Constant node whose tensor attribute (not an initializer) is external."""
    value = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "c")
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["c"], value=value),
         helper.make_node("Add", ["x", "c"], ["y"])], "constant",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def externalize(model: onnx.ModelProto) -> bytes:
    """Move every initializer (and Constant tensor) into :data:`DATA_FILE`, 16-byte aligned."""
    tensors = list(model.graph.initializer) + [a.t for n in model.graph.node
                                               for a in n.attribute if a.type == a.TENSOR]
    blob = bytearray()
    for tensor in tensors:
        raw = numpy_helper.to_array(tensor).tobytes()
        blob += b"\0" * (-len(blob) % 16)
        offset = len(blob)
        blob += raw
        for field in ("raw_data", "float_data", "int32_data", "int64_data", "double_data",
                      "uint64_data"):
            tensor.ClearField(field)
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", DATA_FILE), ("offset", str(offset)),
                           ("length", str(len(raw)))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
    return pack(model.SerializeToString(), {DATA_FILE: bytes(blob)}, {})


def argv(path: str, workdir: str) -> list[str]:
    with open(path, "rb") as f:
        model, files, links = unpack(f.read())
    for name, content in files.items():
        _write(workdir, name, content)
    for name, target in links.items():
        where = os.path.join(workdir, os.path.basename(name) or "link")
        if not os.path.lexists(where):
            os.symlink(target, where)
    model_path = os.path.join(workdir, "model.onnx")
    with open(model_path, "wb") as f:
        f.write(model)
    return ["--no-autoload", "check", "--no-gradients", model_path]  # the boundary: loading


def _write(workdir: str, name: str, content: bytes) -> None:
    """Write one bundled file, only ever inside the case's folder."""
    where = os.path.join(workdir, os.path.basename(name.replace("\0", "")) or "data")
    if not os.path.lexists(where):
        with open(where, "wb") as f:
            f.write(content)


# -- mutation --------------------------------------------------------------------------------

ODD_NUMBERS = ["-1", "-0", "0", "1", "1.5", "abc", "", " 1", "+4", "0x10", "1e3", "٣",
               "99999999999999999999999", str(2**63), str(2**64), str(2**31), "3\x00"]
ODD_LOCATIONS = ["", "../weights.bin", "/etc/hostname", "/etc/passwd", "weights.bin\x00.txt",
                 "sub/../weights.bin", "missing.bin", "link.bin", ".", "..", "./weights.bin",
                 "C:\\weights.bin", "\\\\server\\share\\w.bin", "weights.bin/", "model.onnx",
                 "~/weights.bin", "/proc/self/environ", "/dev/zero", "a" * 300, "%s%n"]
LINK_TARGETS = ["/etc/hostname", "../outside.bin", "weights.bin", "/dev/zero", "/proc/self/mem",
                "link.bin", "."]


def mutate(data: bytes, rng: random.Random) -> bytes:
    model_bytes, files, links = unpack(data)
    if rng.random() < 0.1:
        return harness.byte_mutation(data, rng)
    model = onnx.ModelProto()
    try:
        model.ParseFromString(model_bytes)
    except Exception:  # noqa: BLE001 - an already damaged model: bytes only
        return pack(harness.byte_mutation(model_bytes, rng), files, links)
    for _ in range(rng.choice((1, 1, 2, 3))):
        rng.choice(MUTATIONS)(model, files, links, rng)
    out = model.SerializeToString()
    if rng.random() < 0.08:
        out = harness.byte_mutation(out, rng, 1)
    return pack(out, files, links)


def _external(model) -> list[TensorProto]:
    tensors = list(model.graph.initializer) + [a.t for n in model.graph.node
                                               for a in n.attribute if a.type == a.TENSOR]
    return [t for t in tensors if t.data_location == TensorProto.EXTERNAL] or tensors


def _entry(model, rng, key: str):
    tensors = _external(model)
    if not tensors:
        return None
    tensor = rng.choice(tensors)
    for entry in tensor.external_data:
        if entry.key == key:
            return entry
    entry = tensor.external_data.add()
    entry.key = key
    return entry


def odd_offset(model, files, links, rng):
    entry = _entry(model, rng, "offset")
    if entry is not None:
        entry.value = rng.choice(ODD_NUMBERS + [str(sum(map(len, files.values())))])


def odd_length(model, files, links, rng):
    entry = _entry(model, rng, "length")
    if entry is not None:
        entry.value = rng.choice(ODD_NUMBERS + [str(rng.randrange(1 << 12))])


def odd_location(model, files, links, rng):
    entry = _entry(model, rng, "location")
    if entry is not None:
        entry.value = rng.choice(ODD_LOCATIONS)


def odd_checksum(model, files, links, rng):
    entry = _entry(model, rng, "checksum")
    if entry is not None:
        entry.value = rng.choice(["", "0" * 40, "zz", "da39a3ee5e6b4b0d3255bfef95601890afd80709"])


def odd_keys(model, files, links, rng):
    tensors = _external(model)
    if tensors:
        tensor = rng.choice(tensors)
        if tensor.external_data and rng.random() < 0.5:
            tensor.external_data.add().CopyFrom(rng.choice(tensor.external_data))
        elif tensor.external_data and rng.random() < 0.5:
            del tensor.external_data[rng.randrange(len(tensor.external_data))]
        else:
            entry = tensor.external_data.add()
            entry.key, entry.value = rng.choice(["basepath", "", "LOCATION", "\x00"]), "x"


def odd_tensor(model, files, links, rng):
    """The declaration the data is checked against: dims, element type, where it lives."""
    tensors = _external(model)
    if not tensors:
        return
    tensor = rng.choice(tensors)
    kind = rng.randrange(4)
    if kind == 0 and tensor.dims:
        tensor.dims[rng.randrange(len(tensor.dims))] = rng.choice([0, -1, 2**40, 10**12, 3])
    elif kind == 1:
        tensor.data_type = rng.choice([0, 1, 7, 8, 16, 99, 11])
    elif kind == 2:
        tensor.data_location = TensorProto.DEFAULT
    else:
        tensor.raw_data = b"\1\2\3"


def odd_file(model, files, links, rng):
    """The data file: truncated, extended, emptied or gone."""
    if not files:
        files[DATA_FILE] = b""
        return
    name = rng.choice(sorted(files))
    content = files[name]
    kind = rng.randrange(4)
    if kind == 0:
        files[name] = content[:rng.randrange(len(content) + 1)]
    elif kind == 1:
        files[name] = content + bytes(rng.randrange(64))
    elif kind == 2:
        files[name] = b""
    else:
        del files[name]


def odd_link(model, files, links, rng):
    """A symlink in the folder (the data file itself replaced by one, or a new name)."""
    target = rng.choice(LINK_TARGETS)
    if rng.random() < 0.5 and DATA_FILE in files:
        del files[DATA_FILE]
        links[DATA_FILE] = target
    else:
        links["link.bin"] = target
        entry = _entry(model, rng, "location")
        if entry is not None:
            entry.value = "link.bin"


MUTATIONS = [odd_offset, odd_offset, odd_length, odd_length, odd_location, odd_location,
             odd_checksum, odd_keys, odd_tensor, odd_file, odd_file, odd_link]
