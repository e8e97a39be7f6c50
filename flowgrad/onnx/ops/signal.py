"""Signal processing (flowgrad.ops.signal): DFT, STFT, the Hann/Hamming/Blackman windows and
MelWeightMatrix.  The windows and the filter bank depend only on load-time values, so they
import as constants, computed by flowgrad's own ops; DFT and STFT need their lengths, steps
and axis at load time too (they fix the output's shape)."""
from __future__ import annotations

import numpy as np
from onnx import helper

from ...errors import AttrError
from ...op import Context
from ..access import scalar
from ..builder import ImportProblem, check_size
from ..tensors import DTYPES, check_elem_type
from ..translations import Translations

T = Translations("signal")


def _static_int(b, value, what: str, default=None):
    if value is None:
        return default
    return scalar(b.static(value, what), what, int)


def _dtype(a, allowed) -> str:
    elem = a.int("output_datatype", 1)
    why = check_elem_type(elem)
    if why:
        raise ImportProblem(f"'output_datatype' {why}")
    name = DTYPES[elem].name
    if name not in allowed:
        raise ImportProblem(f"'output_datatype' is {name}; use one of {', '.join(allowed)}")
    return name


def _folded(b, op_type: str, **attrs):
    """The constant flowgrad's ``op_type`` (an op without inputs) computes from ``attrs``."""
    try:
        op = b.registry.get(op_type)(**attrs)
        (value,) = op.forward(Context(grad_enabled=False))
    except (AttrError, ValueError) as e:
        raise ImportProblem(str(e)) from None
    return [b.const(value)]


def _window(kind: str):
    def handler(b, a, ins):
        size = _static_int(b, ins.need(0, "size"), "window size")
        check_size((max(size, 0),), np.float64, "the window")
        dtype = _dtype(a, b.registry.get("window").attrs["dtype"].choices)
        return _folded(b, "window", kind=kind, size=size, periodic=a.bool("periodic", True),
                       dtype=dtype)
    return handler


for _onnx, _kind in (("HannWindow", "hann"), ("HammingWindow", "hamming"),
                     ("BlackmanWindow", "blackman")):
    T.imports(_onnx, since=17, static=(0,))(_window(_kind))


@T.exports("window")
def _export_window(c):
    onnx_type = {"hann": "HannWindow", "hamming": "HammingWindow",
                 "blackman": "BlackmanWindow"}[c.op.kind]
    c.node(onnx_type, [c.const(np.asarray(c.op.size, np.int64))], c.outs, opset=17,
           periodic=int(c.op.periodic),
           output_datatype=helper.np_dtype_to_tensor_dtype(np.dtype(c.op.dtype)))


@T.imports("MelWeightMatrix", since=17, static=(0, 1, 2, 3, 4))
def mel_weight_matrix(b, a, ins):
    names = ("num_mel_bins", "dft_length", "sample_rate", "lower_edge_hertz",
             "upper_edge_hertz")
    values = [b.static(ins.need(i, n), n) for i, n in enumerate(names)]
    attrs = {n: scalar(v, n, int) for n, v in zip(names[:3], values[:3])}
    attrs.update({n: scalar(v, n) for n, v in zip(names[3:], values[3:])})
    check_size((max(attrs["dft_length"], 0) // 2 + 1, max(attrs["num_mel_bins"], 0)),
               np.float64, "the mel weight matrix")
    return _folded(b, "mel_weight_matrix", dtype=_dtype(a, ("float16", "float32", "float64")),
                   **attrs)


@T.exports("mel_weight_matrix")
def _export_mel(c):
    op = c.op
    ins = [c.const(np.asarray(op.num_mel_bins, np.int64)),
           c.const(np.asarray(op.dft_length, np.int64)),
           c.const(np.asarray(op.sample_rate, np.int64)),
           c.const(op.lower_edge_hertz, np.float32),
           c.const(op.upper_edge_hertz, np.float32)]
    c.node("MelWeightMatrix", ins, c.outs, opset=17,
           output_datatype=helper.np_dtype_to_tensor_dtype(np.dtype(op.dtype)))


def _dft(b, a, ins, axis):
    attrs = {"axis": axis, "inverse": a.bool("inverse", False),
             "onesided": a.bool("onesided", False)}
    length = _static_int(b, ins.opt(1), "DFT dft_length")
    if length is not None:
        attrs["length"] = length
    return b.final("dft", [ins.need(0, "input")], **attrs)


@T.imports("DFT", since=17, static=(1,))
def dft_17(b, a, ins):
    return _dft(b, a, ins, a.int("axis", 1))


@T.imports("DFT", since=20, static=(1, 2))
def dft_20(b, a, ins):
    return _dft(b, a, ins, _static_int(b, ins.opt(2), "DFT axis", -2))


@T.exports("dft")
def _export_dft(c):
    length = c.const(np.asarray(c.op.length, np.int64)) if c.op.length is not None else ""
    c.node("DFT", [c.ins[0], length, c.const(np.asarray(c.op.axis, np.int64))], c.outs,
           opset=20, inverse=int(c.op.inverse), onesided=int(c.op.onesided))


@T.imports("STFT", since=17, static=(1, 3))
def stft(b, a, ins):
    attrs = {"frame_step": _static_int(b, ins.need(1, "frame_step"), "STFT frame_step"),
             "onesided": a.bool("onesided", True)}
    frame_length = _static_int(b, ins.opt(3), "STFT frame_length")
    if frame_length is not None:
        attrs["frame_length"] = frame_length
    return b.final("stft", [ins.need(0, "signal"), ins.opt(2)], **attrs)


@T.exports("stft")
def _export_stft(c):
    window = c.ins[1] if len(c.ins) > 1 and c.ins[1] else ""
    length = (c.const(np.asarray(c.op.frame_length, np.int64))
              if c.op.frame_length is not None else "")
    c.node("STFT", [c.ins[0], c.const(np.asarray(c.op.frame_step, np.int64)), window, length],
           c.outs, opset=17, onesided=int(c.op.onesided))
