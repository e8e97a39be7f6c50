"""The one reader of array files: ``.npz`` archives, ``.npy`` arrays and ``.csv`` tables.

Every array flowgrad reads from disk — checkpoints, training data, ``flowgrad run -i`` feeds, a
YAML graph's ``weights:`` — comes through here, because these files arrive from outside and
``np.load`` trusts them: a header may declare petabytes (numpy allocates before it reads), a
zip may be truncated or bit-flipped, an array may hold pickled objects or text.  This module
reads the ``.npy`` header itself and checks it *before* any data is read:

* the dtype is a number (bool, int, float), unless the caller names the key as text; object
  arrays are refused outright (``allow_pickle`` is never on), as are structured (void) dtypes;
* the shape × itemsize is exactly the data the file (or the archive member) holds, and at most
  :data:`MAX_BYTES` (``FLOWGRAD_MAX_ARRAY_BYTES`` raises it for a larger data set);
* a zip member is read to its end, so its CRC-32 is checked: a flipped bit is an error, never a
  silently different weight.

Each refusal is one :class:`~flowgrad.errors.FlowgradError` naming the file, the array inside
an archive, what is wrong and what to do.  :func:`check_finite` and :func:`check_ndim` are the
value checks callers add where NaN or a wrong rank cannot be.
"""
from __future__ import annotations

import ast
import os
import struct
import warnings
import zipfile
import zlib
from typing import BinaryIO, Collection

import numpy as np

from .errors import FlowgradError

#: the most bytes one file's arrays may declare, unless FLOWGRAD_MAX_ARRAY_BYTES says more
MAX_BYTES = 1 << 30
MAX_BYTES_ENV = "FLOWGRAD_MAX_ARRAY_BYTES"

#: what zipfile and zlib raise for a damaged archive: a bad or truncated directory, a bad
#: CRC, a damaged deflate stream, an unknown compression method, an "encrypted" flag bit
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError,
               RuntimeError, ValueError, struct.error, OverflowError)

_MAGIC = b"\x93NUMPY"
_NUMBERS = "biuf"


def max_bytes() -> int:
    """The size bound in force: :data:`MAX_BYTES`, or ``$FLOWGRAD_MAX_ARRAY_BYTES``."""
    value = os.environ.get(MAX_BYTES_ENV, "").strip()
    if not value:
        return MAX_BYTES
    try:
        return int(float(value))
    except ValueError:
        raise FlowgradError(f"{MAX_BYTES_ENV}={value!r}: expected a number of bytes") from None


def fail(path: str, key: str | None, problem: str) -> FlowgradError:
    """The located error: ``PATH: array 'KEY': PROBLEM`` (no key for a whole file)."""
    where = f"{path}: array '{key}'" if key is not None else path
    return FlowgradError(f"{where}: {problem}")


def read_arrays(path: str | os.PathLike, what: str = "file", text: Collection[str] = ()
                ) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` archive, by name (a ``.npy`` file gives ``{stem: array}``).

    ``what`` says what the file is for (``"checkpoint"``, ``"data file"``...), in messages;
    ``text`` names the keys that may hold a string instead of numbers (a checkpoint's
    metadata record).
    """
    path = os.fspath(path)
    if path.lower().endswith(".npy"):
        return {os.path.splitext(os.path.basename(path))[0]: read_npy(path, what)}
    _check_exists(path, what)
    if not zipfile.is_zipfile(path):
        raise fail(path, None, f"cannot read {what}: not a .npz archive (no zip directory: the "
                               "file is truncated, damaged or of another kind); write it again "
                               "with numpy.savez")
    limit = max_bytes()
    arrays: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            declared = sum(m.file_size for m in members)
            if declared > limit:
                raise fail(path, None, f"the archive declares {declared} bytes of arrays, more "
                                       f"than the limit of {limit} ({MAX_BYTES_ENV} raises it)")
            for member in members:
                key = member.filename.removesuffix(".npy")
                _check_member(member, os.path.getsize(path), path, key)
                with archive.open(member) as f:
                    arrays[key] = _read_member(f, path, key, member.file_size,
                                               key in text)
    except FlowgradError:
        raise
    except _ZIP_ERRORS as e:
        raise fail(path, None, f"cannot read {what}: the archive is corrupt or truncated "
                               f"({type(e).__name__}: {e}); write it again") from None
    return arrays


def read_npy(path: str | os.PathLike, what: str = "file") -> np.ndarray:
    """The numeric array of a ``.npy`` file, its header checked against the file's size."""
    path = os.fspath(path)
    _check_exists(path, what)
    with open(path, "rb") as f:
        return _read_member(f, path, None, os.fstat(f.fileno()).st_size, False)


def read_array(path: str | os.PathLike, what: str = "file") -> np.ndarray:
    """One array: a ``.npy`` file, or an ``.npz`` archive holding exactly one array."""
    path = os.fspath(path)
    if path.lower().endswith(".npy"):
        return read_npy(path, what)
    arrays = read_arrays(path, what)
    if len(arrays) != 1:
        raise fail(path, None, f"holds {len(arrays)} arrays ({', '.join(arrays) or 'none'}); "
                               "give one .npy file (or a .npz with one array) per input")
    return next(iter(arrays.values()))


def read_csv(path: str | os.PathLike, what: str = "file") -> np.ndarray:
    """A 2-d float table of comma-separated numbers; a first line that is not numbers is a
    header and skipped."""
    path = os.fspath(path)
    _check_exists(path, what)
    limit = max_bytes()
    if os.path.getsize(path) > limit:
        raise fail(path, None, f"{os.path.getsize(path)} bytes, more than the limit of {limit} "
                               f"({MAX_BYTES_ENV} raises it)")
    try:
        with open(path, encoding="utf-8") as f:
            first = f.readline()
        try:
            [float(v) for v in first.strip().split(",")]
            skip = 0
        except ValueError:
            skip = 1
        with warnings.catch_warnings():     # numpy warns about an empty file: refused below
            warnings.simplefilter("ignore", UserWarning)
            table = np.loadtxt(path, delimiter=",", skiprows=skip, ndmin=2, encoding="utf-8")
    except UnicodeDecodeError as e:
        raise fail(path, None, f"cannot read {what}: not UTF-8 text (byte {e.start}); save it "
                               "as a UTF-8 .csv") from None
    except ValueError as e:
        raise fail(path, None, f"cannot read {what} as comma-separated numbers: {e}") from None
    if table.size == 0:
        raise fail(path, None, f"the {what} holds no rows of numbers")
    return table


def check_finite(array: np.ndarray, path: str, key: str | None, what: str) -> None:
    """Refuse NaN or infinity where ``what`` (e.g. "labels") cannot hold them; names the
    first sample."""
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        first = int(np.argwhere(~np.isfinite(array))[0][0])
        raise fail(path, key, f"{what} hold NaN or infinity (first at sample {first}); fix or "
                              "drop those samples")


def check_ndim(array: np.ndarray, ndims: Collection[int], path: str, key: str | None,
               what: str) -> None:
    """Refuse an array whose number of axes is not one of ``ndims``."""
    if array.ndim not in ndims:
        want = " or ".join(str(n) for n in sorted(ndims))
        raise fail(path, key, f"{what} must have {want} axes, got shape {array.shape}")


def _check_exists(path: str, what: str) -> None:
    if not os.path.isfile(path):
        raise FlowgradError(f"{path}: {what} does not exist" if not os.path.exists(path) else
                            f"{path}: {what} is not a file")


def _check_member(member: zipfile.ZipInfo, file_size: int, path: str, key: str) -> None:
    """Refuse sizes in the zip directory that its data cannot back, before reading: a stored
    member holds exactly its size, a deflated one at most 1032 times its compressed size
    (deflate's bound), and no member more than the file."""
    stored = member.compress_type == zipfile.ZIP_STORED
    if (member.compress_size > file_size
            or stored and member.file_size != member.compress_size
            or member.file_size > 1032 * member.compress_size + 64):
        raise fail(path, key, f"the zip directory declares {member.file_size} bytes from "
                              f"{member.compress_size} stored: the archive is damaged; write "
                              "it again")


def _read_member(f: BinaryIO, path: str, key: str | None, size: int, text: bool
                 ) -> np.ndarray:
    """Read one ``.npy`` stream of ``size`` bytes: header first, checked, then exactly the
    data it declares (and the end of the stream, so a zip member's CRC is verified)."""
    dtype, shape, fortran, offset = _read_header(f, path, key)
    if dtype.hasobject:
        raise fail(path, key, "holds Python objects, which would need unpickling (never done "
                              "for safety); save numeric arrays")
    if dtype.kind not in _NUMBERS and not (text and dtype.kind == "U"):
        raise fail(path, key, f"has dtype {dtype} ({_kind_name(dtype)}), but numbers are "
                              "needed; save it as a bool, int or float array")
    count = 1
    for n in shape:
        count *= n
    nbytes = count * dtype.itemsize
    limit = max_bytes()
    if nbytes > limit:
        raise fail(path, key, f"the header declares shape {shape} of {dtype} ({nbytes} bytes), "
                              f"more than the limit of {limit} ({MAX_BYTES_ENV} raises it)")
    if offset + nbytes != size:
        raise fail(path, key, f"the header declares shape {shape} of {dtype} ({nbytes} bytes of "
                              f"data) but {size - offset} bytes follow it: the file is "
                              "truncated or damaged; write it again")
    data = bytearray(nbytes)
    view = memoryview(data)
    got = 0
    while got < nbytes:
        n = f.readinto(view[got:])
        if not n:
            raise fail(path, key, f"the data ends after {got} of {nbytes} bytes: the file is "
                                  "truncated; write it again")
        got += n
    if f.read(1):
        raise fail(path, key, "more data follows the array than its header declares")
    array = np.frombuffer(data, dtype=dtype, count=count)
    return array.reshape(shape[::-1]).T if fortran else array.reshape(shape)


def _read_header(f: BinaryIO, path: str, key: str | None
                 ) -> tuple[np.dtype, tuple[int, ...], bool, int]:
    """``(dtype, shape, fortran_order, data offset)`` from a ``.npy`` header, checked as
    ``numpy.lib.format`` would, without reading any data."""
    def bad(problem: str) -> FlowgradError:
        return fail(path, key, f"not a valid .npy array ({problem}); write it again with "
                               "numpy.save/savez")

    head = f.read(len(_MAGIC) + 2)
    if len(head) < len(_MAGIC) + 2 or head[:len(_MAGIC)] != _MAGIC:
        raise bad("no .npy magic number")
    major = head[len(_MAGIC)]
    if major not in (1, 2, 3):
        raise bad(f"unknown format version {major}")
    size_format = "<H" if major == 1 else "<I"
    raw = f.read(struct.calcsize(size_format))
    if len(raw) < struct.calcsize(size_format):
        raise bad("truncated header")
    length = struct.unpack(size_format, raw)[0]
    if length > 65536:
        raise bad(f"a header of {length} bytes")
    header = f.read(length)
    if len(header) < length:
        raise bad("truncated header")
    try:
        fields = ast.literal_eval(header.decode("utf-8" if major == 3 else "latin1"))
    except (SyntaxError, ValueError, UnicodeDecodeError, MemoryError, RecursionError):
        raise bad("the header is not a Python literal") from None
    if not isinstance(fields, dict) or set(fields) != {"descr", "fortran_order", "shape"}:
        raise bad("the header needs exactly the keys descr, fortran_order, shape")
    shape, fortran = fields["shape"], fields["fortran_order"]
    if not isinstance(shape, tuple) or not all(type(n) is int and n >= 0 for n in shape):
        raise bad(f"shape {shape!r} is not a tuple of non-negative integers")
    if not isinstance(fortran, bool):
        raise bad(f"fortran_order {fortran!r} is not true or false")
    try:
        dtype = np.lib.format.descr_to_dtype(fields["descr"])
    except (TypeError, ValueError, KeyError, SyntaxError, RecursionError):
        raise bad(f"unknown dtype {fields['descr']!r}") from None
    return dtype, shape, fortran, len(_MAGIC) + 2 + struct.calcsize(size_format) + length


def _kind_name(dtype: np.dtype) -> str:
    return {"U": "text", "S": "bytes", "V": "structured or raw bytes", "c": "complex",
            "M": "dates", "m": "time spans"}.get(dtype.kind, "not numbers")
