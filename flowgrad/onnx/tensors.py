"""Checking an ONNX tensor before anything is allocated for it.

A TensorProto declares an element type and dims, and carries its data (raw bytes or a typed
list).  A hostile or truncated file can declare an unknown type, negative dims, a trillion
elements over a few bytes, or raw data of the wrong length; ``numpy_helper.to_array`` would
then fail deep inside numpy, or try to allocate the declared size.  :func:`check_tensor`
compares the declaration with the data using integer arithmetic only, and bounds the size, so
a tensor is converted (:func:`to_array`) only once it is known to fit.
"""
from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

#: the most bytes one model's tensors (or one value's static shape) may take; over it a model
#: is refused at load time, before allocating anything
MAX_BYTES = 2 << 30

#: element types flowgrad computes with, and their numpy dtypes (bfloat16, the float8 and
#: 4-bit types, strings and complex numbers have no dtype flowgrad's ops support)
DTYPES = {TensorProto.FLOAT: np.dtype(np.float32), TensorProto.DOUBLE: np.dtype(np.float64),
          TensorProto.FLOAT16: np.dtype(np.float16), TensorProto.INT8: np.dtype(np.int8),
          TensorProto.INT16: np.dtype(np.int16), TensorProto.INT32: np.dtype(np.int32),
          TensorProto.INT64: np.dtype(np.int64), TensorProto.UINT8: np.dtype(np.uint8),
          TensorProto.UINT16: np.dtype(np.uint16), TensorProto.UINT32: np.dtype(np.uint32),
          TensorProto.UINT64: np.dtype(np.uint64), TensorProto.BOOL: np.dtype(np.bool_)}

#: the typed field holding each element type's data when there is no raw_data
_FIELD = {TensorProto.FLOAT: "float_data", TensorProto.DOUBLE: "double_data",
          TensorProto.INT64: "int64_data", TensorProto.UINT32: "uint64_data",
          TensorProto.UINT64: "uint64_data"}


def type_name(elem_type: int) -> str:
    """``FLOAT``, ``BFLOAT16``... or ``unknown element type 99``."""
    try:
        return TensorProto.DataType.Name(elem_type)
    except ValueError:
        return f"unknown element type {elem_type}"


def check_elem_type(elem_type: int) -> str | None:
    """Why ``elem_type`` cannot be used, or None."""
    if elem_type in DTYPES:
        return None
    if elem_type == TensorProto.UNDEFINED:
        return "has no element type"
    return (f"has element type {type_name(elem_type)}, which flowgrad cannot compute with "
            f"(supported: {', '.join(type_name(t) for t in DTYPES)})")


def size_text(nbytes: int) -> str:
    """``3.0 GiB``, ``512 B``; astronomically large sizes as powers of two."""
    if nbytes >= 1 << 80:
        return f"about 2**{nbytes.bit_length() - 1} bytes"
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if nbytes >= 1 << shift:
            return f"{nbytes / (1 << shift):.1f} {unit}"
    return f"{nbytes} B"


def check_dims(dims, what: str) -> tuple[list[str], int]:
    """``(problems, element count)`` of declared dims (negative dims are problems)."""
    bad = [int(d) for d in dims if d < 0]
    if bad:
        return [f"{what} has negative dims {list(dims)}; dims are sizes (>= 0)"], 0
    return [], math.prod(int(d) for d in dims)


def declared_bytes(tensor: TensorProto) -> int:
    """The bytes ``tensor`` would take once loaded (0 when its type or dims are invalid)."""
    dtype = DTYPES.get(tensor.data_type)
    if dtype is None or any(d < 0 for d in tensor.dims):
        return 0
    return math.prod(int(d) for d in tensor.dims) * dtype.itemsize


def check_tensor(tensor: TensorProto, what: str) -> list[str]:
    """Every problem of ``tensor`` (named ``what`` in the messages), without allocating it."""
    why = check_elem_type(tensor.data_type)
    if why:
        return [f"{what} {why}"]
    problems, count = check_dims(tensor.dims, what)
    if problems:
        return problems
    dtype = DTYPES[tensor.data_type]
    nbytes = count * dtype.itemsize
    if nbytes > MAX_BYTES:
        return [f"{what} declares {count} elements ({size_text(nbytes)}), over flowgrad's bound "
                f"of {size_text(MAX_BYTES)} per model; its dims {list(tensor.dims)} are probably "
                "wrong"]
    if tensor.data_location == TensorProto.EXTERNAL:
        return [f"{what} keeps its data in an external file that was not read; load the "
                "model from its path (or pass base_dir=)"]
    if tensor.HasField("raw_data"):
        have = len(tensor.raw_data)
        if have != nbytes:
            return [f"{what} has {have} bytes of raw data, but its dims {list(tensor.dims)} "
                    f"and type {type_name(tensor.data_type)} need {nbytes}; the file is "
                    "truncated or the dims are wrong"]
        return []
    field = _FIELD.get(tensor.data_type, "int32_data")
    have = len(getattr(tensor, field))
    if have != count:
        return [f"{what} holds {have} values in {field}, but its dims {list(tensor.dims)} "
                f"need {count}; the file is truncated or the dims are wrong"]
    return []


def to_array(tensor: TensorProto) -> np.ndarray:
    """The array of a tensor that passed :func:`check_tensor`."""
    return numpy_helper.to_array(tensor)


def check_value_info(info: onnx.ValueInfoProto, what: str) -> list[str]:
    """Problems of a graph input's declared tensor type: element type, dims, size."""
    if info.type.WhichOneof("value") != "tensor_type":
        return []
    tt = info.type.tensor_type
    why = check_elem_type(tt.elem_type)
    if why:
        return [f"{what} {why}"]
    dims = [d.dim_value for d in tt.shape.dim if d.HasField("dim_value")]
    problems, count = check_dims(dims, what)
    if problems:
        return problems
    nbytes = count * DTYPES[tt.elem_type].itemsize
    if nbytes > MAX_BYTES:
        return [f"{what} declares a shape of {count} elements ({size_text(nbytes)}) per "
                f"batch, over flowgrad's bound of {size_text(MAX_BYTES)}; fix its dims"]
    return []
