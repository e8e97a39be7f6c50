"""Quantization (flowgrad.ops.quant): QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear,
MatMulInteger, ConvInteger, QLinearMatMul and QLinearConv, and onnxruntime's ``com.microsoft``
QGemm, QLinearAdd, QLinearMul, QLinearGlobalAveragePool, QLinearAveragePool, QLinearConcat
and QLinearLeakyRelu (what its QOperator quantization writes) and DynamicQuantizeLSTM (what its
``quantize_dynamic`` makes of an LSTM), each one flowgrad op with the node's inputs, outputs
and attributes.  A DynamicQuantizeLSTM gets ``straight_through`` like QuantizeLinear, and its
stored weight zero points are checked at load (onnxruntime's kernel reads one per direction).

Every version of QuantizeLinear / DequantizeLinear (10 to 28) is one translation: the later
versions only add attributes (``axis`` 13, ``saturate`` 19, ``block_size`` and
``output_dtype`` 21, ``precision`` 23), which the node's schema check has already allowed or
refused for the model's opset.  ONNX names element types by number; the flowgrad ops take
numpy names, and a type numpy lacks (float8, int4, int2, bfloat16...) is refused by name.

**Straight-through quantization.**  ``quantize_linear`` is forward-only unless its
``straight_through`` attribute is set.  An imported model gets it on every QuantizeLinear
when loaded with ``flowgrad.load(model, straight_through=True)`` (the importer sets
``Builder.straight_through``; ``flowgrad train --straight-through`` on the command line); the
attribute is flowgrad's and is not exported.

The scales and zero points of the forward-only integer ops (QLinearConv, QLinearMatMul, the
com.microsoft ops) are
declared ``static``: an initializer read only there is a constant, not a trainable param (it
could not be trained through an integer op anyway); a value computed at run time is still
taken as an input.
"""
from __future__ import annotations

from onnx import TensorProto

from ...errors import FlowgradError
from ...ops.quant import zero_point_problem
from ..builder import ImportProblem
from ..translations import Translations, node_exporter, node_importer
from .conv import WINDOW

T = Translations("quant")

#: ONNX element types of quantized values flowgrad holds
QUANT_TYPES = {TensorProto.UINT8: "uint8", TensorProto.INT8: "int8",
               TensorProto.UINT16: "uint16", TensorProto.INT16: "int16"}
#: ONNX float types of dequantized values / division precision flowgrad holds
FLOAT_TYPES = {TensorProto.FLOAT: "float32", TensorProto.FLOAT16: "float16",
               TensorProto.DOUBLE: "float64"}
_BY_NAME = {name: code for table in (QUANT_TYPES, FLOAT_TYPES) for code, name in table.items()}


def _type_attr(a, name: str, table: dict) -> str | None:
    """An element-type attribute as a numpy name; an ImportProblem for a type flowgrad cannot
    hold (float8, 4- and 2-bit, bfloat16) or one the op does not take."""
    code = a.int(name, 0)
    if not code:
        return None
    if code not in table:
        label = TensorProto.DataType.Name(code) if code in TensorProto.DataType.values() \
            else str(code)
        raise ImportProblem(f"{name} {label} is not supported: flowgrad holds "
                            f"{', '.join(table.values())} here (numpy has no float8, 4-bit, "
                            "2-bit or bfloat16 type)")
    return table[code]


@T.imports("QuantizeLinear", since=10)
def quantize_linear(b, a, ins):
    """-> quantize_linear; straight-through when the model is loaded with that option."""
    attrs = dict(axis=a.int("axis", 1), block_size=a.int("block_size", 0),
                 output_dtype=_type_attr(a, "output_dtype", QUANT_TYPES),
                 precision=_type_attr(a, "precision", FLOAT_TYPES),
                 saturate=a.bool("saturate", True))
    if getattr(b, "straight_through", False):
        attrs["straight_through"] = True
    return b.final("quantize_linear", [ins.need(0, "x"), ins.need(1, "y_scale"), ins.opt(2)],
                   **attrs)


@T.imports("DequantizeLinear", since=10)
def dequantize_linear(b, a, ins):
    """-> dequantize_linear."""
    return b.final("dequantize_linear", [ins.need(0, "x"), ins.need(1, "x_scale"), ins.opt(2)],
                   axis=a.int("axis", 1), block_size=a.int("block_size", 0),
                   output_dtype=_type_attr(a, "output_dtype", FLOAT_TYPES))


def _layout_attrs(op) -> tuple[dict, int]:
    """The ONNX attributes of a quantize/dequantize op and the opset they need."""
    attrs, opset = {}, 10
    if op.axis != 1:
        attrs["axis"], opset = op.axis, 13
    if op.block_size:
        attrs["block_size"], opset = op.block_size, 21
    return attrs, opset


@T.exports("quantize_linear")
def _quantize_linear(c):
    attrs, opset = _layout_attrs(c.op)
    has_zero_point = len(c.ins) > 2 and c.ins[2]
    if c.op.output_dtype and not has_zero_point:
        attrs["output_dtype"], opset = _BY_NAME[c.op.output_dtype], 21
    if c.op.precision:
        attrs["precision"], opset = _BY_NAME[c.op.precision], 23
    if not c.op.saturate:
        attrs["saturate"], opset = 0, max(opset, 19)
    c.node("QuantizeLinear", c.ins, c.outs, opset=opset, **attrs)


@T.exports("dequantize_linear")
def _dequantize_linear(c):
    attrs, opset = _layout_attrs(c.op)
    if c.op.output_dtype:
        attrs["output_dtype"], opset = _BY_NAME[c.op.output_dtype], 23
    c.node("DequantizeLinear", c.ins, c.outs, opset=opset, **attrs)


T.same("DynamicQuantizeLinear", "dynamic_quantize_linear", since=11)
T.same("MatMulInteger", "matmul_integer", since=10)
T.same("ConvInteger", "conv_integer", attrs=WINDOW + ("group",), since=10)
T.imports("QLinearMatMul", since=10, static=(1, 2, 4, 5, 6, 7))(
    node_importer("qlinear_matmul"))
T.exports("qlinear_matmul")(node_exporter("QLinearMatMul"))
T.imports("QLinearConv", since=10, static=(1, 2, 4, 5, 6, 7))(
    node_importer("qlinear_conv", WINDOW + ("group",)))
T.exports("qlinear_conv")(node_exporter("QLinearConv", WINDOW + ("group",)))

#: onnxruntime's contrib domain, where its QOperator quantization puts QGemm
MICROSOFT = "com.microsoft"
T.imports("QGemm", domain=MICROSOFT, static=(1, 2, 4, 5, 7, 8))(
    node_importer("qgemm", ("alpha", "transA", "transB")))
T.exports("qgemm")(node_exporter("QGemm", ("alpha", "transA", "transB"), domain=MICROSOFT))
T.imports("QLinearAdd", domain=MICROSOFT, static=(1, 2, 4, 5, 6, 7))(
    node_importer("qlinear_add"))
T.exports("qlinear_add")(node_exporter("QLinearAdd", domain=MICROSOFT))
T.imports("QLinearGlobalAveragePool", domain=MICROSOFT, static=(1, 2, 3, 4))(
    node_importer("qlinear_global_average_pool", ("channels_last",)))
T.exports("qlinear_global_average_pool")(
    node_exporter("QLinearGlobalAveragePool", ("channels_last",), domain=MICROSOFT))


@T.imports("QLinearConcat", domain=MICROSOFT)
def qlinear_concat(b, a, ins):
    """-> qlinear_concat (Y_scale, Y_zero_point, then (X, X_scale, X_zero_point) triples)."""
    values = list(ins)
    if len(values) < 5 or (len(values) - 2) % 3 or any(v is None for v in values):
        raise ImportProblem(f"QLinearConcat takes Y_scale, Y_zero_point and then one (X, "
                            f"X_scale, X_zero_point) triple per tensor, all present; the node "
                            f"has {len(values)} input(s)")
    return b.final("qlinear_concat", values, axis=a.int("axis"))


T.exports("qlinear_concat")(node_exporter("QLinearConcat", ("axis",), domain=MICROSOFT))
T.imports("QLinearLeakyRelu", domain=MICROSOFT, static=(1, 2, 3, 4))(
    node_importer("qlinear_leaky_relu", ("alpha",)))
T.exports("qlinear_leaky_relu")(
    node_exporter("QLinearLeakyRelu", ("alpha",), domain=MICROSOFT))
T.imports("QLinearMul", domain=MICROSOFT, static=(1, 2, 4, 5, 6, 7))(
    node_importer("qlinear_mul"))
T.exports("qlinear_mul")(node_exporter("QLinearMul", domain=MICROSOFT))

_AVG_POOL = WINDOW + ("ceil_mode", "count_include_pad", "channels_last")
T.imports("QLinearAveragePool", domain=MICROSOFT, static=(1, 2, 3, 4))(
    node_importer("qlinear_average_pool", _AVG_POOL))
T.exports("qlinear_average_pool")(
    node_exporter("QLinearAveragePool", _AVG_POOL, domain=MICROSOFT))

#: DynamicQuantizeLSTM's attributes: LSTM's without layout (onnxruntime's op has none)
_QLSTM_ATTRS = {"hidden_size": "int", "direction": "string", "activations": "strings",
                "activation_alpha": "floats", "activation_beta": "floats", "clip": "float",
                "input_forget": "bool"}


@T.imports("DynamicQuantizeLSTM", domain=MICROSOFT, static=(1, 2, 8, 9, 10, 11))
def dynamic_quantize_lstm(b, a, ins):
    """-> dynamic_quantize_lstm (same inputs, outputs and attributes); straight-through when
    the model is loaded with that option."""
    attrs = {k: getattr(a, reader)(k) for k, reader in _QLSTM_ATTRS.items() if k in a}
    if getattr(b, "straight_through", False):
        attrs["straight_through"] = True
    values = [ins.need(0, "X"), ins.need(1, "W"), ins.need(2, "R")] + [ins.opt(i)
                                                                       for i in range(3, 8)]
    values += [ins.need(8, "W_scale"), ins.need(9, "W_zero_point"), ins.need(10, "R_scale"),
               ins.need(11, "R_zero_point")]
    for value, what in ((values[9], "W_zero_point"), (values[11], "R_zero_point")):
        if value.initial is not None or value.is_const:     # stored: refuse it at load
            problem = zero_point_problem(b.static(value, what))
            if problem:
                raise ImportProblem(f"{what}: {problem}")
    return b.final("dynamic_quantize_lstm", values, **attrs)


@T.exports("dynamic_quantize_lstm")
def _dynamic_quantize_lstm(c):
    op = c.op
    if op.hidden_size is None:
        raise FlowgradError(f"node '{c.name}': DynamicQuantizeLSTM needs hidden_size; set "
                            "the op's 'hidden_size' attribute to export it")
    attrs = {}
    for name in _QLSTM_ATTRS:
        value = getattr(op, name)
        if value is None or value is False or (name == "direction" and value == "forward"):
            continue
        attrs[name] = (list(value) if isinstance(value, tuple)
                       else int(value) if isinstance(value, bool) else value)
    c.node("DynamicQuantizeLSTM", c.ins, c.outs, domain=MICROSOFT, **attrs)
