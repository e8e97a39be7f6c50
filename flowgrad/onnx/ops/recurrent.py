"""Recurrent layers (flowgrad.ops.recurrent): LSTM, GRU and RNN, one op each.

The flowgrad ops take ONNX's inputs, outputs and attributes unchanged, so both directions are
a copy of the attributes; ONNX's ints become the ops' bools (``input_forget``,
``linear_before_reset``).  Opset 1's ``output_sequence`` is ignored: ``Y`` is always computed,
and a model that does not read it simply leaves it unused.
"""
from __future__ import annotations

from ...errors import FlowgradError
from ..translations import Translations

T = Translations("recurrent")

_COMMON = ("hidden_size", "direction", "layout", "activations", "activation_alpha",
           "activation_beta", "clip")
_OPS = {"LSTM": ("lstm", _COMMON + ("input_forget",)),
        "GRU": ("gru", _COMMON + ("linear_before_reset",)),
        "RNN": ("rnn", _COMMON)}
#: how each attribute is read (checked accessors of flowgrad.onnx.access)
_READERS = {"hidden_size": "int", "direction": "string", "layout": "int",
            "activations": "strings", "activation_alpha": "floats", "activation_beta": "floats",
            "clip": "float", "input_forget": "bool", "linear_before_reset": "bool"}
_PORTS = ("X", "W", "R")


def _importer(op_type: str, names: tuple[str, ...]):
    def handler(b, a, ins):
        attrs = {k: getattr(a, _READERS[k])(k) for k in names if k in a}
        required = [ins.need(i, port) for i, port in enumerate(_PORTS)]
        return b.final(op_type, required + list(ins[len(_PORTS):]), **attrs)
    handler.__doc__ = f"ONNX node -> flowgrad '{op_type}' (same inputs, outputs, attributes)"
    return handler


def _exporter(onnx_type: str, names: tuple[str, ...]):
    def exporter(c) -> None:
        op = c.op
        if op.hidden_size is None:
            raise FlowgradError(f"node '{c.name}': ONNX's {onnx_type} needs hidden_size; set "
                                f"the op's 'hidden_size' attribute to export it")
        attrs = {}
        for name in names:
            value = getattr(op, name)
            if value is None or value is False or (name == "direction" and value == "forward") \
                    or (name == "layout" and value == 0):
                continue
            attrs[name] = (list(value) if isinstance(value, tuple)
                           else int(value) if isinstance(value, bool) else value)
        c.node(onnx_type, c.ins, c.outs, **attrs)
    exporter.__doc__ = f"flowgrad op -> ONNX '{onnx_type}'"
    return exporter


for _onnx_type, (_op_type, _names) in _OPS.items():
    T.imports(_onnx_type)(_importer(_op_type, _names))
    T.exports(_op_type)(_exporter(_onnx_type, _names))
