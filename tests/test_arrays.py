"""The one reader of array files: what it reads exactly, and every damaged file it refuses
with one located message (file, array) instead of a traceback or a huge allocation."""
from __future__ import annotations

import io
import re
import zipfile

import numpy as np
import pytest

from flowgrad.arrays import MAX_BYTES_ENV, read_array, read_arrays, read_csv, read_npy
from flowgrad.errors import FlowgradError


def npy_bytes(array, **kwargs) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, **kwargs)
    return buf.getvalue()


def write_zip(path, members: dict[str, bytes], method=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", method) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return str(path)


def with_header(raw: bytes, header: str) -> bytes:
    """``raw`` (a version-1 .npy) with its header dict replaced."""
    length = int.from_bytes(raw[8:10], "little")
    encoded = header.encode("latin1")
    return raw[:8] + len(encoded).to_bytes(2, "little") + encoded + raw[10 + length:]


def refused(match: str, call, *args, **kwargs) -> str:
    with pytest.raises(FlowgradError, match=match) as e:
        call(*args, **kwargs)
    return str(e.value)


def test_reads_exactly_what_numpy_wrote(tmp_path):
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    f = np.asfortranarray(np.arange(6.0).reshape(2, 3))
    arrays = {"x": x, "f": f, "b": np.array([True, False]), "i": np.array([-1, 2], np.int16),
              "empty": np.zeros((0, 5))}
    for name, save in (("s.npz", np.savez), ("c.npz", np.savez_compressed)):
        save(tmp_path / name, **arrays)
        got = read_arrays(tmp_path / name)
        assert got.keys() == arrays.keys()
        for k, v in arrays.items():
            assert got[k].dtype == v.dtype and np.array_equal(got[k], v), k
        assert got["x"].flags.writeable
    np.save(tmp_path / "f.npy", f)
    assert np.array_equal(read_npy(tmp_path / "f.npy"), f)
    assert list(read_arrays(tmp_path / "f.npy")) == ["f"]
    np.savez(tmp_path / "one.npz", only=x)
    assert np.array_equal(read_array(tmp_path / "one.npz"), x)
    np.savez(tmp_path / "meta.npz", text=np.asarray("{}"), w=x)
    assert str(read_arrays(tmp_path / "meta.npz", text={"text"})["text"]) == "{}"


def test_damaged_archives_are_refused(tmp_path):
    np.savez(tmp_path / "good.npz", x=np.arange(100.0), y=np.arange(100))
    raw = (tmp_path / "good.npz").read_bytes()
    bad = tmp_path / "bad.npz"
    for cut in (0, 10, len(raw) // 2, len(raw) - 10):
        bad.write_bytes(raw[:cut])
        refused(r"bad.npz: cannot read data: (not a .npz archive|the archive is corrupt)",
                read_arrays, bad, "data")
    flipped = bytearray(raw)
    flipped[200] ^= 0x10                  # inside x's data: the CRC-32 no longer matches
    bad.write_bytes(bytes(flipped))
    refused(r"Bad CRC-32 for file 'x.npy'", read_arrays, bad)
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    refused("not a .npz archive", read_arrays, bad)
    refused(r"missing.npz: checkpoint does not exist", read_arrays, tmp_path / "missing.npz",
            "checkpoint")


def test_unsafe_and_non_numeric_arrays_are_refused(tmp_path):
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    refused("holds Python objects, which would need unpickling", read_npy, tmp_path / "o.npy")
    members = {"x.npy": npy_bytes(np.array([1, "a"], dtype=object), allow_pickle=True)}
    refused(r"z.npz: array 'x': holds Python objects", read_arrays,
            write_zip(tmp_path / "z.npz", members))
    for value, kind in ((np.array(["a", "b"]), "text"), (np.array([b"a"]), "bytes"),
                        (np.zeros(2, dtype=[("a", "f4")]), "structured"),
                        (np.zeros(2, dtype="V4"), "structured"),
                        (np.zeros(2, complex), "complex")):
        np.savez(tmp_path / "s.npz", v=value)
        refused(rf"s.npz: array 'v': has dtype .* \({kind}.*numbers are needed",
                read_arrays, tmp_path / "s.npz")


def test_headers_are_checked_before_any_data_is_read(tmp_path, monkeypatch):
    raw = npy_bytes(np.zeros((2, 3), np.float32))
    cases = {
        "(2000000, 3000000, 1000)": r"declares shape \(2000000, 3000000, 1000\) of float32 "
                                    r"\(24000000000000000 bytes\), more than the limit",
        "(2, 4)": r"\(32 bytes of data\) but 24 bytes follow it: the file is truncated",
        "(2, 2)": r"\(16 bytes of data\) but 24 bytes follow it",
        "(-2, 3)": r"shape \(-2, 3\) is not a tuple of non-negative integers",
        "[2, 3]": r"shape \[2, 3\] is not a tuple",
    }
    for shape, message in cases.items():
        header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}"
        (tmp_path / "h.npy").write_bytes(with_header(raw, header))
        refused(message, read_npy, tmp_path / "h.npy")
        members = {"w.npy": with_header(raw, header)}
        refused(r"h.npz: array 'w': .*" + message, read_arrays,
                write_zip(tmp_path / "h.npz", members))
    for header, message in (
            ("{'descr': '<f4', 'fortran_order': 'no', 'shape': (2, 3)}", "fortran_order"),
            ("{'descr': 'zz', 'fortran_order': False, 'shape': (2, 3)}", "unknown dtype"),
            ("{'descr': '<f4', 'shape': (2, 3)}", "exactly the keys"),
            ("__import__('os').system('echo hi')", "not a Python literal"),
            ("{" * 400, "not a Python literal")):
        (tmp_path / "h.npy").write_bytes(with_header(raw, header))
        refused(r"h.npy: not a valid .npy array \(.*" + message, read_npy, tmp_path / "h.npy")
    (tmp_path / "v.npy").write_bytes(raw[:6] + b"\x07\x00" + raw[8:])
    refused("unknown format version 7", read_npy, tmp_path / "v.npy")
    (tmp_path / "t.npy").write_bytes(raw[:9])
    refused("truncated header", read_npy, tmp_path / "t.npy")
    monkeypatch.setenv(MAX_BYTES_ENV, "16")
    np.save(tmp_path / "big.npy", np.zeros(5))
    refused(rf"40 bytes\), more than the limit of 16 \({MAX_BYTES_ENV} raises it\)", read_npy,
            tmp_path / "big.npy")


def test_a_zip_directory_that_lies_about_sizes_is_refused(tmp_path):
    members = {"x.npy": npy_bytes(np.zeros(1000))}
    path = write_zip(tmp_path / "z.npz", members)
    raw = bytearray(open(path, "rb").read())
    central = raw.rindex(b"PK\x01\x02")
    raw[central + 24:central + 28] = (10 ** 9).to_bytes(4, "little")   # uncompressed size
    (tmp_path / "z.npz").write_bytes(bytes(raw))
    refused(r"z.npz: (array 'x': the zip directory declares 1000000000 bytes|cannot read)",
            read_arrays, tmp_path / "z.npz")


def test_one_array_per_input_file(tmp_path):
    np.savez(tmp_path / "two.npz", a=np.zeros(2), b=np.zeros(2))
    refused(r"two.npz: holds 2 arrays \(a, b\); give one .npy file", read_array,
            tmp_path / "two.npz")


def test_csv_tables(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b,label\n1,2,0\n3,4.5,1\n")
    assert read_csv(path).tolist() == [[1, 2, 0], [3, 4.5, 1]]
    path.write_text("1,2,0\n3,4,1\n")
    assert read_csv(path).shape == (2, 3)
    for text, message in (("a,b\n1,x\n", "could not convert string 'x'"),
                          ("1,2,3\n4,5\n", "number of columns changed"),
                          ("", "holds no rows"), ("a,b,c\n", "holds no rows")):
        path.write_text(text)
        refused(re.escape(str(path)) + ": .*" + message, read_csv, path)
    path.write_bytes(b"1,2\n\xff\xfe,3\n")
    refused("not UTF-8 text", read_csv, path)
