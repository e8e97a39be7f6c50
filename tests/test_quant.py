"""Quantization (flowgrad/ops/quant.py, flowgrad/onnx/ops/quant.py) beyond the node tests:

* every op against onnxruntime on what the node tests leave out, bit for bit on integer
  outputs: ties (round half to even), saturation, 16-bit types, per-axis and blocked layouts,
  per-channel weights, signed and unsigned operands, groups, strides, pads and biases;
* whole quantized models: a small float CNN (conv + relu + max pool + gemm) quantized by
  onnxruntime's own ``quantize_static`` in QDQ and QOperator formats (QOperator's Gemm becomes
  ``com.microsoft`` QGemm, which flowgrad translates), int8 and uint8 activations, per tensor
  and per channel, and by ``quantize_dynamic`` (DynamicQuantizeLinear + ConvInteger /
  MatMulInteger): every integer value of the model equal to onnxruntime's, every float value
  within float32 rounding;
* the float parts stay differentiable: the straight-through estimator of ``quantize_linear``
  (its formula, fake quantization's gradient of 1 inside the range and 0 outside, the LSQ
  scale gradient), the ``straight_through=True`` load option on a QDQ model (input gradients
  and fine-tuning), the clear error without it, and a YAML graph that trains through a
  straight-through quantizer;
* bad input gives one located error; the ops export back to ONNX that onnxruntime runs;
* onnxruntime's DynamicQuantizeLSTM (``quantize_dynamic`` of an LSTM) against onnxruntime run
  with one thread, within float32 rounding (its MLAS sigmoid/tanh): every direction,
  peepholes, lengths 0 to T, per-tensor and per-column, int8 and uint8 weights; full-range
  int8 weights differ only by onnxruntime's AVX2 pair saturation (shown by copying it); its
  straight-through gradients are the float lstm's.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import flowgrad
from flowgrad.data import Dataset
from flowgrad.errors import FlowgradError
from flowgrad.onnx.export import export_onnx
from flowgrad.op import Context
from flowgrad.ops.quant import DequantizeLinear, QuantizeLinear
from flowgrad.train import Trainer

ort = pytest.importorskip("onnxruntime")

ONNX_TYPES = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float16): TensorProto.FLOAT16,
              np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int8): TensorProto.INT8,
              np.dtype(np.uint16): TensorProto.UINT16, np.dtype(np.int16): TensorProto.INT16,
              np.dtype(np.int32): TensorProto.INT32}


def node_model(op_type, feeds, consts, n_out=1, opset=21, domain="", **attrs):
    """A model of one node: ``feeds`` are graph inputs (their arrays say shape and type),
    ``consts`` initializers, inputs in the order given (None: an empty optional input)."""
    names, inits, inputs = [], [], []
    for name, value in list(feeds.items()) + list(consts.items()):
        names.append("" if value is None else name)
    for name, value in feeds.items():
        inputs.append(helper.make_tensor_value_info(name, ONNX_TYPES[value.dtype], value.shape))
    for name, value in consts.items():
        if value is not None:
            inits.append(numpy_helper.from_array(np.asarray(value), name))
    outs = [f"y{i}" for i in range(n_out)]
    node = helper.make_node(op_type, names, outs, domain=domain, **attrs)
    graph = helper.make_graph([node], "one", inputs,
                              [helper.make_value_info(o, onnx.TypeProto()) for o in outs], inits)
    opsets = [helper.make_opsetid("", opset)] + (
        [helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(graph, opset_imports=opsets, ir_version=10)


def ort_run(model, feeds, optimize=True):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def flowgrad_run(model, feeds, **load):
    graph = flowgrad.load(model, dynamic_batch=False, **load)
    plan = flowgrad.compile(graph)
    meta = graph.meta["onnx"]
    by_onnx = {v: k for k, v in meta["inputs"].items()}
    refs = [meta["outputs"][vi.name] for vi in model.graph.output]
    out = plan.forward({by_onnx[k]: v for k, v in feeds.items()}, outputs=refs)
    return [out[r] for r in refs]


def assert_same(model, feeds, float_atol=0.0, int_slack=0.0):
    """flowgrad's outputs equal onnxruntime's: integer ones exactly, float ones to
    ``float_atol`` (0: exactly as well).  ``int_slack`` > 0 allows that fraction of an
    integer output's values to be one step apart (and no more than one)."""
    expected = ort_run(model, feeds)
    got = flowgrad_run(model, feeds)
    for i, (e, g) in enumerate(zip(expected, got)):
        assert g.dtype == e.dtype and g.shape == e.shape, (i, g.dtype, e.dtype, g.shape, e.shape)
        if e.dtype.kind in "iu" or float_atol == 0:
            bad = np.flatnonzero(g != e)
            if e.dtype.kind in "iu" and int_slack:
                steps = np.abs(g.astype(np.int64) - e.astype(np.int64))
                assert steps.max() <= 1 and bad.size <= int_slack * e.size, (
                    f"output {i}: {bad.size} of {e.size} values differ, by up to {steps.max()}")
                continue
            assert bad.size == 0, (f"output {i}: {bad.size} of {e.size} values differ, first "
                                   f"at {bad[0]}: {g.flat[bad[0]]} vs onnxruntime "
                                   f"{e.flat[bad[0]]}")
        else:
            np.testing.assert_allclose(g, e, rtol=0, atol=float_atol)


RNG = np.random.default_rng(0)


def ties(shape, scale, low=-300, high=300):
    """float32 values on the half-integer grid of ``scale`` (x / scale = k + 0.5, exactly),
    mixed with arbitrary ones: where rounding half to even and half away differ."""
    k = RNG.integers(low, high, size=shape) + 0.5
    x = (k * scale).astype(np.float32)
    mix = RNG.random(shape) < 0.3
    x[mix] = (RNG.standard_normal(mix.sum()) * scale * 40).astype(np.float32)
    return x


def ints(shape, dtype):
    info = np.iinfo(dtype)
    return RNG.integers(info.min, int(info.max) + 1, size=shape).astype(dtype)


def weights(shape, dtype):
    """Integer weights onnxruntime multiplies exactly on every x86 CPU: full-range uint8, and
    int8 within [-64, 64).  Without AVX-VNNI, MLAS multiplies uint8 by int8 with
    ``vpmaddubsw``, which saturates a pair of products at the int16 limit (2 * 255 * 127 >
    32767), so a full-range int8 operand gives onnxruntime a clipped accumulator (its
    quantizer's ``reduce_range`` exists for this).  flowgrad computes the exact value ONNX
    defines: :func:`test_integer_products_are_exact_where_onnxruntime_saturates`."""
    if np.dtype(dtype) == np.int8:
        return RNG.integers(-64, 64, size=shape).astype(np.int8)
    return ints(shape, dtype)


# -- QuantizeLinear / DequantizeLinear --------------------------------------------------------

@pytest.mark.parametrize("dtype", ["uint8", "int8", "uint16", "int16"])
def test_quantize_per_tensor_ties_and_saturation(dtype):
    x = ties((6, 50), 0.25, low=-70000, high=70000)     # far beyond every range, and ties
    zp = np.asarray(3 if np.dtype(dtype).kind == "i" else 130, dtype)
    assert_same(node_model("QuantizeLinear", {"x": x},
                           {"s": np.float32(0.25), "zp": zp}), {"x": x})


@pytest.mark.parametrize("zp", [np.uint8(10), np.int8(-3)])
def test_quantize_non_finite_values_as_onnxruntime(zp):
    """inf and huge values saturate; NaN becomes the lowest value, as onnxruntime's clamp
    (max then min) makes it."""
    x = np.array([[np.nan, np.inf, -np.inf, 1.0, -1e30, 1e30]], np.float32)
    assert_same(node_model("QuantizeLinear", {"x": x}, {"s": np.float32(0.1), "zp": zp}),
                {"x": x})


def test_quantize_per_axis_and_default_uint8():
    x = ties((2, 4, 5), 0.5)
    s = np.asarray([0.5, 0.25, 1.0, 2.0], np.float32)
    zp = np.asarray([-3, 0, 7, 100], np.int8)
    assert_same(node_model("QuantizeLinear", {"x": x}, {"s": s, "zp": zp}, axis=1), {"x": x})
    assert_same(node_model("QuantizeLinear", {"x": x}, {"s": np.float32(0.5)}), {"x": x})


@pytest.mark.parametrize("axis,block", [(1, 2), (-1, 3), (0, 4)])
def test_quantize_and_dequantize_blocked(axis, block):
    x = ties((4, 6, 5), 0.125)
    shape = list(x.shape)
    shape[axis] = -(-shape[axis] // block)
    s = (2.0 ** RNG.integers(-4, 1, size=shape)).astype(np.float32)
    zp = ints(shape, np.int8) // 4
    assert_same(node_model("QuantizeLinear", {"x": x}, {"s": s, "zp": zp}, axis=axis,
                           block_size=block), {"x": x})
    q = ints(x.shape, np.int8)
    assert_same(node_model("DequantizeLinear", {"q": q}, {"s": s, "zp": zp}, axis=axis,
                           block_size=block), {"q": q})


@pytest.mark.parametrize("dtype", ["uint8", "int8", "uint16", "int16", "int32"])
def test_dequantize_matches_onnxruntime(dtype):
    q = ints((3, 4, 5), np.dtype(dtype))
    s = RNG.uniform(0.01, 0.1, size=4).astype(np.float32)
    consts = {"s": s} if dtype == "int32" else {"s": s, "zp": ints((4,), np.dtype(dtype))}
    assert_same(node_model("DequantizeLinear", {"q": q}, consts, axis=1), {"q": q})


def test_dequantize_output_dtype_float16():
    q = ints((3, 4), np.uint8)
    model = node_model("DequantizeLinear", {"q": q}, {"s": np.float32(0.013),
                                                      "zp": np.uint8(7)},
                       opset=23, output_dtype=TensorProto.FLOAT16)
    (got,) = flowgrad_run(model, {"q": q})
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, ((q.astype(np.float32) - 7) * np.float32(0.013))
                                  .astype(np.float16))


@pytest.mark.parametrize("case", ["spread", "positive", "negative", "zeros", "tiny"])
def test_dynamic_quantize_matches_onnxruntime(case):
    x = {"spread": RNG.standard_normal((7, 9)) * 3, "positive": RNG.uniform(0.5, 9, (7, 9)),
         "negative": -RNG.uniform(0.1, 2, (7, 9)), "zeros": np.zeros((7, 9)),
         "tiny": RNG.standard_normal((7, 9)) * 1e-6}[case].astype(np.float32)
    assert_same(node_model("DynamicQuantizeLinear", {"x": x}, {}, n_out=3, opset=11), {"x": x})


# -- integer products and convolutions --------------------------------------------------------

@pytest.mark.parametrize("a_type,b_type", [(np.uint8, np.uint8), (np.uint8, np.int8),
                                           (np.int8, np.int8)])
def test_matmul_integer_matches_onnxruntime(a_type, b_type):
    a = ints((2, 5, 7), a_type)
    b = weights((7, 3), b_type)
    consts = {"b": b, "a_zp": a_type(9), "b_zp": weights((3,), b_type)}
    assert_same(node_model("MatMulInteger", {"a": a}, consts, opset=10), {"a": a})


@pytest.mark.parametrize("a_type,b_type,per_column", [(np.uint8, np.uint8, False),
                                                      (np.uint8, np.int8, True),
                                                      (np.int8, np.int8, True)])
def test_qlinear_matmul_matches_onnxruntime(a_type, b_type, per_column):
    a = ints((4, 6, 9), a_type)
    b = weights((9, 5), b_type)
    b_scale = (RNG.uniform(0.001, 0.01, 5) if per_column else RNG.uniform(0.001, 0.01, ())
               ).astype(np.float32)
    b_zp = (np.zeros(5, b_type) if per_column else b_type(2))
    consts = {"a_s": np.float32(0.031), "a_zp": a_type(5), "b": b, "b_s": b_scale,
              "b_zp": b_zp, "y_s": np.float32(0.05), "y_zp": a_type(-4 if a_type is np.int8
                                                                   else 120)}
    assert_same(node_model("QLinearMatMul", {"a": a}, consts, opset=10), {"a": a})


CONV_GEOMETRIES = [
    dict(),
    dict(pads=[1, 1, 1, 1], strides=[2, 2]),
    dict(pads=[0, 1, 2, 1], dilations=[2, 1], group=2),
    dict(auto_pad="SAME_UPPER", group=4),                 # depthwise
]


@pytest.mark.parametrize("geometry", CONV_GEOMETRIES, ids=lambda g: ",".join(g) or "plain")
@pytest.mark.parametrize("x_type,w_type,per_channel", [(np.uint8, np.uint8, False),
                                                       (np.uint8, np.int8, True),
                                                       (np.int8, np.int8, True)])
def test_qlinear_conv_matches_onnxruntime(geometry, x_type, w_type, per_channel):
    group = geometry.get("group", 1)
    x = ints((2, 4, 7, 6), x_type)
    w = weights((8, 4 // group, 3, 3), w_type)
    w_scale = (RNG.uniform(0.001, 0.005, 8) if per_channel else np.asarray(0.003)
               ).astype(np.float32)
    w_zp = np.zeros(8, w_type) if per_channel else w_type(0 if w_type is np.int8 else 128)
    consts = {"x_s": np.float32(0.02), "x_zp": x_type(7), "w": w, "w_s": w_scale,
              "w_zp": w_zp, "y_s": np.float32(0.07),
              "y_zp": x_type(-10 if x_type is np.int8 else 100),
              "B": RNG.integers(-3000, 3000, 8).astype(np.int32)}
    assert_same(node_model("QLinearConv", {"x": x}, consts, opset=10, **geometry), {"x": x})


@pytest.mark.parametrize("geometry", CONV_GEOMETRIES[:3], ids=lambda g: ",".join(g) or "plain")
def test_conv_integer_matches_onnxruntime(geometry):
    group = geometry.get("group", 1)
    x = ints((2, 4, 7, 6), np.uint8)
    w = ints((6, 4 // group, 3, 2), np.uint8)
    consts = {"w": w, "x_zp": np.uint8(11), "w_zp": np.uint8(120)}
    assert_same(node_model("ConvInteger", {"x": x}, consts, opset=10, **geometry), {"x": x})


def test_qgemm_matches_onnxruntime():
    a = ints((5, 6), np.uint8)
    consts = {"a_s": np.float32(0.02), "a_zp": np.uint8(128), "b": weights((4, 6), np.int8),
              "b_s": RNG.uniform(0.001, 0.01, 4).astype(np.float32), "b_zp": np.zeros(4, np.int8),
              "c": RNG.integers(-900, 900, 4).astype(np.int32)}
    requantized = {**consts, "y_s": np.float32(0.04), "y_zp": np.uint8(100)}
    for attrs in ({"transB": 1}, {"transB": 1, "alpha": 0.5}):
        for c in (consts, requantized):
            assert_same(node_model("QGemm", {"a": a}, c, opset=13, domain="com.microsoft",
                                   **attrs), {"a": a})


def test_integer_products_are_exact_where_onnxruntime_saturates():
    """Full-range uint8 x int8: flowgrad's MatMulInteger and ConvInteger accumulators are the
    exact integers (numpy int64 reference), which onnxruntime's AVX2 kernel may clip.  Small
    sums run in one float32 product (every partial sum below 2**24), large ones in slices of
    the inner axis whose float32 products are added in float64: both paths."""
    for k in (64, 1024, 1031):              # 255 * 128 * k: below / above 2**24 (2, 3 slices)
        a = ints((6, k), np.uint8)
        b = ints((k, 5), np.int8)
        model = node_model("MatMulInteger", {"a": a}, {"b": b, "a_zp": np.uint8(3)}, opset=10)
        (got,) = flowgrad_run(model, {"a": a})
        np.testing.assert_array_equal(got, (a.astype(np.int64) - 3) @ b.astype(np.int64))
    for c in (8, 64):
        x = ints((1, c, 5, 5), np.uint8)
        w = ints((2, c, 3, 3), np.int8)
        model = node_model("ConvInteger", {"x": x}, {"w": w}, opset=10)
        (got,) = flowgrad_run(model, {"x": x})
        X, W = x.astype(np.int64), w.astype(np.int64)
        ref = np.einsum("ncij,ocij->no", X[:, :, 1:4, 1:4], W)     # the centre position
        np.testing.assert_array_equal(got[:, :, 1, 1], ref)


@pytest.mark.parametrize("a_shape,b_shape", [((6, 1031), (1031, 5)), ((2, 6, 1031), (2, 1031, 5)),
                                             ((1031,), (1031, 4)), ((6, 1031), (1031,)),
                                             ((1, 1031), (1031, 7)), ((3, 1031), (1031, 7))])
@pytest.mark.parametrize("fill", ["extreme", "random", "small"])
def test_int_matmul_is_exact_on_every_path(a_shape, b_shape, fill):
    """Every path of the integer product gives the exact integers: the kernel (fewer than
    KERNEL_ROWS rows), one float32 product when the data's bound allows it (small values),
    slices added in float64 when it does not (the types' extremes: partial sums up to
    1031 * 252 * 128 > 2**24), constant or not."""
    from flowgrad.backend import CPUBackend
    from flowgrad.ops import quant as quant_ops
    rng = np.random.default_rng(len(a_shape) * 10 + len(b_shape))
    a = {"extreme": np.full(a_shape, 255), "small": rng.integers(0, 7, a_shape),
         "random": rng.integers(0, 256, a_shape)}[fill].astype(np.uint8)
    b = {"extreme": np.full(b_shape, -128), "small": rng.integers(-3, 4, b_shape),
         "random": rng.integers(-128, 128, b_shape)}[fill].astype(np.int8)
    b_zp = np.int8(-1) if len(b_shape) < 2 else rng.integers(-2, 3, b_shape[-1]).astype(np.int8)
    want = (a.astype(np.int64) - 3) @ (b.astype(np.int64) - b_zp)
    backend = CPUBackend(constants=[b])             # b as a plan's constant: prepared once
    for be in (quant_ops.DEFAULT, backend, backend):
        got = quant_ops._int_matmul(a, b, np.uint8(3), b_zp, be)
        np.testing.assert_array_equal(np.asarray(got, np.float64), want)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("a_shape,b_shape", [((3, 4, 5, 6), (3, 4, 5, 6)),
                                             ((3, 4, 5, 6), (1, 4, 1, 1)),
                                             ((4, 1, 1), (3, 4, 5, 6)), ((40,), (6, 40)),
                                             ((1,), (6, 40)), ((6, 40), ())])
def test_qlinear_add_and_mul_match_onnxruntime(dtype, a_shape, b_shape):
    """Random scales and zero points: a plain float64 formula misses onnxruntime's QLinearAdd
    on about 1 in 300 values here (its float32 fused multiply-adds round differently near
    halves)."""
    rng = np.random.default_rng(abs(hash((a_shape, b_shape))) % 2**32)
    info = np.iinfo(dtype)
    for _ in range(3):
        a, b = ints(a_shape, dtype), ints(b_shape, dtype)
        s = rng.uniform(0.005, 0.2, 3).astype(np.float32)
        z = [dtype(v) for v in rng.integers(info.min, int(info.max) + 1, 3)]
        consts = {"a_s": s[0], "a_zp": z[0], "b": b, "b_s": s[1], "b_zp": z[1], "c_s": s[2],
                  "c_zp": z[2]}
        for op_type in ("QLinearAdd", "QLinearMul"):
            assert_same(node_model(op_type, {"a": a}, consts, opset=13,
                                   domain="com.microsoft"), {"a": a})


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_qlinear_global_average_pool_matches_onnxruntime(dtype):
    x = ints((3, 5, 7, 9), dtype)
    consts = {"xs": np.float32(0.031), "xz": dtype(9), "ys": np.float32(0.011),
              "yz": dtype(100 if dtype is np.uint8 else -5)}
    assert_same(node_model("QLinearGlobalAveragePool", {"x": x}, consts, opset=13,
                           domain="com.microsoft"), {"x": x})


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_qlinear_concat_and_leaky_relu_match_onnxruntime(dtype):
    a, b = ints((2, 3, 4), dtype), ints((2, 5, 4), dtype)
    consts = {"ys": np.float32(0.05), "yz": dtype(3), "a_s": np.float32(0.0371),
              "a_z": dtype(7), "b": b, "b_s": np.float32(0.05), "b_z": dtype(3)}
    model = node_model("QLinearConcat", {}, {}, opset=13, domain="com.microsoft", axis=1)
    node = model.graph.node[0]
    node.input[:] = ["ys", "yz", "a", "a_s", "a_z", "b", "b_s", "b_z"]
    model.graph.input.append(helper.make_tensor_value_info("a", ONNX_TYPES[np.dtype(dtype)],
                                                           a.shape))
    model.graph.initializer.extend(numpy_helper.from_array(np.asarray(v), k)
                                   for k, v in consts.items())
    assert_same(model, {"a": a})
    x = ints((3, 50), dtype)
    for alpha in (0.01, 0.3):
        consts = {"xs": np.float32(0.0371), "xz": dtype(7), "ys": np.float32(0.021),
                  "yz": dtype(-20 if dtype is np.int8 else 100)}
        assert_same(node_model("QLinearLeakyRelu", {"x": x}, consts, opset=13,
                               domain="com.microsoft", alpha=alpha), {"x": x})


AVERAGE_POOLS = [dict(kernel_shape=[2, 2], strides=[2, 2]),
                 dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
                 dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1),
                 dict(kernel_shape=[3, 2], strides=[2, 2], ceil_mode=1),
                 dict(kernel_shape=[3, 3], strides=[2, 1], pads=[0, 1, 2, 1], ceil_mode=1,
                      count_include_pad=1),
                 dict(kernel_shape=[3, 3], auto_pad="SAME_UPPER", strides=[2, 2])]


@pytest.mark.parametrize("attrs", AVERAGE_POOLS, ids=lambda a: ",".join(f"{k}={v}" for k, v
                                                                    in a.items()))
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_qlinear_average_pool_matches_onnxruntime(dtype, attrs):
    x = ints((2, 3, 9, 8), dtype)
    consts = {"xs": np.float32(0.0371), "xz": dtype(7), "ys": np.float32(0.021),
              "yz": dtype(-20 if dtype is np.int8 else 100)}
    assert_same(node_model("QLinearAveragePool", {"x": x}, consts, opset=13,
                           domain="com.microsoft", **attrs), {"x": x})


# -- whole quantized models -------------------------------------------------------------------

def float_cnn() -> onnx.ModelProto:
    """conv 3x3 (1 -> 6) + relu + max pool 2 + flatten + gemm (96 -> 10), as exporters write
    it (opset 13, symbolic batch)."""
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in {
        "W1": rng.standard_normal((6, 1, 3, 3)) * 0.5, "b1": rng.standard_normal(6) * 0.1,
        "W2": rng.standard_normal((10, 96)) * 0.2, "b2": rng.standard_normal(10) * 0.1}.items()]
    nodes = [helper.make_node("Conv", ["x", "W1", "b1"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "W2", "b2"], ["y"], transB=1)]
    graph = helper.make_graph(
        nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def float_resnet() -> onnx.ModelProto:
    """A residual block: conv + relu, conv, add (the skip), relu, global average pool,
    flatten, gemm; onnxruntime's QOperator format makes it QLinearConv, QLinearAdd,
    QLinearGlobalAveragePool and QGemm."""
    rng = np.random.default_rng(9)
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in {
        "W1": rng.standard_normal((4, 1, 3, 3)) * 0.5, "b1": rng.standard_normal(4) * 0.1,
        "W2": rng.standard_normal((4, 4, 3, 3)) * 0.3, "b2": rng.standard_normal(4) * 0.1,
        "W3": rng.standard_normal((10, 4)) * 0.5, "b3": rng.standard_normal(10) * 0.1}.items()]
    nodes = [helper.make_node("Conv", ["x", "W1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "W2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c2", "r1"], ["s"]),
             helper.make_node("Relu", ["s"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "W3", "b3"], ["y"], transB=1)]
    graph = helper.make_graph(
        nodes, "resnet", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                        ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def float_branches() -> onnx.ModelProto:
    """Two convolution branches with leaky relu, concatenated, average-pooled and classified
    (as an Inception block): QOperator makes QLinearLeakyRelu, QLinearConcat and
    QLinearAveragePool of them."""
    rng = np.random.default_rng(12)
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in {
        "Wa": rng.standard_normal((3, 1, 3, 3)) * 0.5, "ba": rng.standard_normal(3) * 0.1,
        "Wb": rng.standard_normal((2, 1, 1, 1)), "bb": rng.standard_normal(2) * 0.1,
        "Wc": rng.standard_normal((10, 5)) * 0.5, "bc": rng.standard_normal(10) * 0.1}.items()]
    nodes = [helper.make_node("Conv", ["x", "Wa", "ba"], ["ca"], pads=[1, 1, 1, 1]),
             helper.make_node("LeakyRelu", ["ca"], ["la"], alpha=0.1),
             helper.make_node("Conv", ["x", "Wb", "bb"], ["cb"]),
             helper.make_node("LeakyRelu", ["cb"], ["lb"], alpha=0.2),
             helper.make_node("Concat", ["la", "lb"], ["cat"], axis=1),
             helper.make_node("AveragePool", ["cat"], ["avg"], kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("GlobalAveragePool", ["avg"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "Wc", "bc"], ["y"], transB=1)]
    graph = helper.make_graph(
        nodes, "branches", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                          ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def calibration(seed=2, batches=4):
    from onnxruntime.quantization import CalibrationDataReader

    rng = np.random.default_rng(seed)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"x": rng.standard_normal((8, 1, 8, 8)).astype(np.float32)}
                                 for _ in range(batches)])

        def get_next(self):
            return next(self.batches, None)
    return Reader()


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    """``make(kind, activations, per_channel)`` -> the quantized model (cached)."""
    from onnxruntime.quantization import (QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)
    folder = tmp_path_factory.mktemp("quant")
    sources = {"cnn": folder / "cnn.onnx", "resnet": folder / "resnet.onnx",
               "branches": folder / "branches.onnx"}
    onnx.save(float_cnn(), sources["cnn"])
    onnx.save(float_resnet(), sources["resnet"])
    onnx.save(float_branches(), sources["branches"])
    made = {}

    def make(kind, activations="int8", per_channel=False, model="cnn"):
        key = (kind, activations, per_channel, model)
        source = sources[model]
        if key not in made:
            out = folder / ("_".join(map(str, key)) + ".onnx")
            if kind == "dynamic":
                quantize_dynamic(str(source), str(out), weight_type=QuantType.QUInt8)
            else:
                quantize_static(
                    str(source), str(out), calibration(),
                    quant_format=QuantFormat.QDQ if kind == "qdq" else QuantFormat.QOperator,
                    activation_type=QuantType.QInt8 if activations == "int8"
                    else QuantType.QUInt8,
                    weight_type=QuantType.QInt8, per_channel=per_channel,
                    reduce_range=True)   # 7-bit weights: exact in onnxruntime (see weights())
            made[key] = onnx.load(str(out))
        return made[key]
    return make


def expose_all(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with every node output also a graph output, so each value is compared."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    have = {vi.name for vi in out.graph.output}
    for node in out.graph.node:
        for name in node.output:
            if name and name not in have:
                out.graph.output.append(onnx.ValueInfoProto(name=name))
                have.add(name)
    return out


def images(n=16, seed=3):
    return np.random.default_rng(seed).standard_normal((n, 1, 8, 8)).astype(np.float32)


STATIC = [("qoperator", "int8", False), ("qoperator", "uint8", True), ("qdq", "int8", False),
          ("qdq", "uint8", True)]


@pytest.mark.parametrize("kind,activations,per_channel", STATIC)
def test_statically_quantized_cnn_matches_onnxruntime(quantized, kind, activations,
                                                      per_channel):
    model = quantized(kind, activations, per_channel)
    ops = {(n.domain, n.op_type) for n in model.graph.node}
    if kind == "qoperator":
        assert {("", "QLinearConv"), ("com.microsoft", "QGemm")} <= ops
    else:
        assert ("", "QuantizeLinear") in ops and ("", "Conv") in ops
    x = images()
    if kind == "qoperator":
        # integer kernels on both sides: every value bit for bit, the logits included
        assert_same(model, {"x": x})
        assert_same(expose_all(model), {"x": x})
        return
    # QDQ: flowgrad runs the graph as written (DequantizeLinear -> float Conv/Gemm ->
    # QuantizeLinear); onnxruntime fuses each group into an integer kernel, or (optimizations
    # off) sums the float products in another order.  A float result within float32 rounding
    # of a rounding boundary then lands one quantization step apart: allowed for at most 1%
    # of the values (on SqueezeNet, quantized the same way: 56 of 2,000 logits); on these
    # inputs none does
    step = _output_scale(model)
    (expected,) = ort_run(model, {"x": x})
    (got,) = flowgrad_run(model, {"x": x})
    apart = np.abs(got - expected)
    assert apart.max() <= step * 1.0001 and (apart > 1e-5).mean() <= 0.01
    assert_same(expose_all(model), {"x": x}, float_atol=step * 1.0001, int_slack=0.01)


def _output_scale(model) -> float:
    """The scale of the DequantizeLinear producing the model's output."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    out = model.graph.output[0].name
    node = next(n for n in model.graph.node if out in n.output)
    assert node.op_type == "DequantizeLinear"
    return float(inits[node.input[1]])


@pytest.mark.parametrize("activations,per_channel", [("int8", False), ("uint8", True)])
def test_quantized_residual_block_matches_onnxruntime(quantized, activations, per_channel):
    """QOperator format with onnxruntime's com.microsoft QLinearAdd and
    QLinearGlobalAveragePool: every value bit for bit (floats too)."""
    model = quantized("qoperator", activations, per_channel, model="resnet")
    ops = {(n.domain, n.op_type) for n in model.graph.node}
    assert {("com.microsoft", "QLinearAdd"),
            ("com.microsoft", "QLinearGlobalAveragePool")} <= ops
    assert_same(expose_all(model), {"x": images(16, seed=10)})


@pytest.mark.parametrize("activations", ["int8", "uint8"])
def test_quantized_branches_match_onnxruntime(quantized, activations):
    """QOperator format with QLinearLeakyRelu, QLinearConcat and QLinearAveragePool: every
    value bit for bit."""
    model = quantized("qoperator", activations, False, model="branches")
    ops = {(n.domain, n.op_type) for n in model.graph.node}
    assert {("com.microsoft", "QLinearLeakyRelu"), ("com.microsoft", "QLinearConcat"),
            ("com.microsoft", "QLinearAveragePool")} <= ops
    assert_same(expose_all(model), {"x": images(16, seed=13)})


def test_dynamically_quantized_cnn_matches_onnxruntime(quantized):
    model = quantized("dynamic")
    ops = {n.op_type for n in model.graph.node}
    assert {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"} <= ops
    for n in (1, 16):
        assert_same(expose_all(model), {"x": images(n)}, float_atol=1e-5)


# -- straight-through estimator ---------------------------------------------------------------

def test_straight_through_gradient_formula():
    x = RNG.standard_normal((3, 4)) * 5
    scale = np.asarray([0.02, 0.05, 0.1, 0.03])
    zp = np.asarray([0, 10, -20, 5], np.int8)
    op = QuantizeLinear(axis=1, straight_through=True)
    assert op.differentiable and not QuantizeLinear().differentiable
    assert not QuantizeLinear.differentiable          # as `flowgrad ops` lists it
    ctx = Context()
    (q,) = op.forward(ctx, x, scale, zp)
    raw = np.rint(x / scale) + zp
    inside = (raw >= -128) & (raw <= 127)
    assert 0 < inside.sum() < inside.size            # both regions are exercised
    g = RNG.standard_normal(q.shape)
    ctx.needs_input_grad = (True, True, False)
    gx, gs, gz = op.backward(ctx, g)
    np.testing.assert_allclose(gx, np.where(inside, g / scale, 0))
    np.testing.assert_allclose(gs, (np.where(inside, -g * x / scale ** 2, 0)).sum(axis=0))
    assert gz is None


def test_fake_quantization_gradients_are_ste_and_lsq():
    """quantize (straight-through) then dequantize: dy/dx is 1 inside the range and 0 outside;
    dy/dscale is LSQ's round(x/s) - x/s inside and qmin - zp / qmax - zp outside."""
    x = np.random.default_rng(7).standard_normal(200) * 4
    s, zp = np.asarray(0.05), np.asarray(-10, np.int8)
    q_op, dq_op = QuantizeLinear(straight_through=True), DequantizeLinear()
    qc, dc = Context(), Context()
    (q,) = q_op.forward(qc, x, s, zp)
    (y,) = dq_op.forward(dc, q, s, zp)
    g = np.ones_like(y)
    dc.needs_input_grad = qc.needs_input_grad = (True, True, False)
    gq, gs_dq, _ = dq_op.backward(dc, g)
    gx, gs_q, _ = q_op.backward(qc, gq)
    raw = np.rint(x / s) + zp
    inside = (raw >= -128) & (raw <= 127)
    np.testing.assert_allclose(gx, inside.astype(float))
    assert 0 < inside.sum() < inside.size
    z = int(zp)
    lsq = np.where(inside, np.rint(x / s) - x / s, np.where(raw < -128, -128 - z, 127 - z))
    np.testing.assert_allclose(gs_q + gs_dq, lsq.sum(), rtol=1e-9)


def test_qdq_model_needs_straight_through_for_input_gradients(quantized):
    plan = flowgrad.compile(flowgrad.load(quantized("qdq", "int8", False)))
    out = plan.forward({"x": images(4)})
    y = plan.graph.meta["onnx"]["outputs"]["y"]
    with pytest.raises(FlowgradError, match=r"\(quantize_linear\) is forward-only.*"
                                            r"straight_through=True"):
        plan.backward({y: np.ones_like(out[y])}, wrt=["x"])


def test_straight_through_load_option_gives_exact_surrogate_gradients():
    """x -> QuantizeLinear -> DequantizeLinear -> MatMul(W): with straight_through=True the
    input gradient is (seed @ W.T) where x / s + zp rounds into int8's range, 0 elsewhere;
    the scale (unfrozen to train) gets the LSQ gradient."""
    rng = np.random.default_rng(5)
    s, zp = np.float32(0.05), np.int8(-20)
    W = rng.standard_normal((6, 3)).astype(np.float32)
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["d"]),
             helper.make_node("MatMul", ["d", "W"], ["y"])]
    graph = helper.make_graph(
        nodes, "fq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(v, k) for k, v in {"s": np.asarray(s), "zp": np.asarray(zp),
                                                    "W": W}.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    x = (rng.standard_normal((5, 6)) * 4).astype(np.float32)
    g = flowgrad.load(model, straight_through=True, unfreeze=["s"])
    plan = flowgrad.compile(g, dtype="float64")
    out = plan.forward({"x": x})
    seed = rng.standard_normal(out["y"].shape)
    grads = plan.backward({"y": seed}, wrt=["x"])
    raw = np.rint(x.astype(np.float64) / s) + zp
    inside = (raw >= -128) & (raw <= 127)
    assert 0 < inside.sum() < inside.size
    gd = seed @ W.T.astype(np.float64)
    np.testing.assert_allclose(grads["x"], np.where(inside, gd, 0), rtol=1e-6, atol=1e-9)
    z = int(zp)
    lsq = np.where(inside, np.rint(x / s) - x / s, np.where(raw < -128, -128 - z, 127 - z))
    np.testing.assert_allclose(grads["s"], (gd * lsq).sum(), rtol=1e-4)


def test_qdq_model_fine_tunes_with_straight_through(quantized):
    """onnxruntime's QDQ model of the CNN, loaded with
    straight_through=True and its scales unfrozen (the fine-tuning rules keep quantization
    parameters fixed by default): the weight scales train through DequantizeLinear's exact
    backward, the activation scales with the LSQ gradient, the gradients pass every quantizer
    and the loss falls.  (Its bias scales have shape (1,) and their zero points shape ():
    both per tensor, as onnxruntime writes them.)"""
    from flowgrad.train import add_classification_loss

    graph = add_classification_loss(flowgrad.load(quantized("qdq", "int8", False),
                                                  straight_through=True, unfreeze=["*_scale"]))
    trained = [p for p in graph.params if graph.is_trainable(p)]
    assert "W1_scale" in trained and "x_scale" in trained, trained
    plan = flowgrad.compile(graph)
    x = images(128, seed=6)
    labels = np.argmax(x.reshape(128, -1)[:, :10], axis=1).astype(np.int64)
    trainer = Trainer(plan, plan_config(graph))
    data = Dataset(x, labels, name="first-pixels")
    before = trainer.evaluate(data)["loss"]
    scales = plan.params["W1_scale"].copy()
    trainer.fit(data)
    after = trainer.evaluate(data)["loss"]
    assert after < 0.9 * before, (before, after)
    assert not np.array_equal(plan.params["W1_scale"], scales)


def plan_config(graph):
    from flowgrad.train_config import from_graph
    return from_graph(graph).replace(epochs=6, batch_size=16, lr=1e-4)


QAT_YAML = """
flowgrad: 1
name: qat
seed: 0
inputs: {x: {shape: [4]}, label: {shape: [], dtype: int64}}
params:
  W:  {shape: [4, 3], init: {kind: glorot_uniform}}
  sw: {init: {kind: value, value: 0.02}}
  sa: {init: {kind: value, value: 0.05}}
nodes:
  qw:     {op: quantize_linear, in: {x: W, scale: sw}, output_dtype: int8, straight_through: true}
  w:      {op: dequantize_linear, in: {x: qw, scale: sw}}
  qx:     {op: quantize_linear, in: {x: x, scale: sa}, output_dtype: int8, straight_through: true}
  xq:     {op: dequantize_linear, in: {x: qx, scale: sa}}
  logits: {op: matmul, in: [xq, w]}
  loss:   {op: softmax_cross_entropy, in: {logits: logits, labels: label}}
outputs: [logits, loss]
train:
  optimizer: {kind: adam, lr: 0.05}
  epochs: 15
  batch_size: 32
"""


def test_quantization_aware_training_from_yaml(tmp_path):
    """Weights and inputs fake-quantized to int8 with learned scales: the loss falls, the
    scales move, and the weights stay on the quantization grid when quantized."""
    path = tmp_path / "qat.yaml"
    path.write_text(QAT_YAML)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 4)).astype(np.float32)
    y = np.argmax(x[:, :3] + 0.5 * x[:, 3:], axis=1).astype(np.int64)
    plan = flowgrad.compile(flowgrad.load(str(path)))
    trainer = Trainer(plan)
    data = Dataset(x, y, name="argmax")
    before = trainer.evaluate(data)["loss"]
    sw_before = float(plan.params["sw"])
    trainer.fit(data)
    after = trainer.evaluate(data)["loss"]
    assert after < 0.5 * before, (before, after)
    assert float(plan.params["sw"]) != sw_before


# -- errors and export ------------------------------------------------------------------------

def test_unsupported_quantized_type_is_a_located_error():
    x = np.zeros((2, 3), np.float32)
    model = node_model("QuantizeLinear", {"x": x}, {"s": np.float32(0.1)},
                       output_dtype=TensorProto.FLOAT8E4M3FN)
    model.graph.node[0].name = "q_fp8"
    with pytest.raises(FlowgradError, match=r"q_fp8.*QuantizeLinear.*output_dtype FLOAT8E4M3FN"
                                            r".*not supported"):
        flowgrad.load(model)


def test_bad_block_shape_is_a_located_error():
    x = np.zeros((2, 6), np.float32)
    model = node_model("QuantizeLinear", {"x": x}, {"s": np.ones((2, 4), np.float32)},
                       axis=1, block_size=2)
    model.graph.node[0].name = "blocky"
    with pytest.raises(FlowgradError, match=r"blocky.*ceil\(6 / 2\) = 3 blocks, got 4"):
        flowgrad.load(model)


def test_dequantize_zero_point_type_mismatch_is_a_located_error():
    q = np.zeros((2, 3), np.uint8)
    model = node_model("DequantizeLinear", {"q": q}, {"s": np.float32(0.1),
                                                      "zp": np.int8(0)}, opset=21)
    model.graph.node[0].name = "dq_mixed"
    model.graph.node[0].domain = ""
    with pytest.raises(FlowgradError, match="dq_mixed"):
        flowgrad.load(model)


@pytest.mark.parametrize("kind,activations,per_channel", [("qoperator", "uint8", True),
                                                          ("qdq", "int8", False),
                                                          ("dynamic", "int8", False)])
def test_quantized_models_export_back_to_onnx(quantized, kind, activations, per_channel):
    model = quantized(kind, activations, per_channel)
    graph = flowgrad.load(model)
    exported = export_onnx(graph)
    onnx.checker.check_model(exported)
    x = images(4)
    (expected,) = ort_run(model, {"x": x})
    feed = exported.graph.input[0].name
    # unoptimized: the import folded each weight's DequantizeLinear into a float weight, and
    # onnxruntime's graph optimizations rewrite Q/DQ pairs around float-weight convolutions
    # in ways that change results by a quantization step (with them off, it runs the graph as
    # written and agrees with the original model)
    (again,) = ort_run(exported, {feed: x}, optimize=False)
    np.testing.assert_allclose(again, expected, rtol=0, atol=1e-5)
    back = flowgrad.load(exported)
    quant = {"quantize_linear", "dequantize_linear", "dynamic_quantize_linear", "qlinear_conv",
             "qgemm", "conv_integer", "matmul_integer", "qlinear_matmul"}

    def quant_ops(g):
        return sorted(t for t in (g.op_of(n).type for n in g.ops) if t in quant)
    assert quant_ops(back) == quant_ops(graph) and quant_ops(graph)
    (again,) = flowgrad_run(exported, {feed: x})
    np.testing.assert_array_equal(again, flowgrad_run(model, {"x": x})[0])


def test_cli_fine_tunes_a_quantized_model_with_straight_through(quantized, tmp_path, capsys):
    """``flowgrad train model.onnx --straight-through``; without the flag the command stops
    with the error naming the quantizer and the flag's API twin."""
    from flowgrad.cli import main

    path = tmp_path / "qdq.onnx"
    onnx.save(quantized("qdq", "int8", False), path)
    x = images(96, seed=8)
    np.savez(tmp_path / "data.npz", x=x,
             label=np.argmax(x.reshape(96, -1)[:, :10], axis=1).astype(np.int64))
    args = ["train", str(path), "--data", str(tmp_path / "data.npz"), "--epochs", "2",
            "--no-progress", "--unfreeze", "*_scale"]
    assert main(args + ["--out", str(tmp_path / "plain")]) == 1
    assert "forward-only" in capsys.readouterr().err
    assert main(args + ["--out", str(tmp_path / "ste"), "--straight-through"]) == 0
    assert (tmp_path / "ste" / "metrics.json").is_file()


@pytest.mark.parametrize("kind", ["qdq", "qoperator"])
def test_check_passes_a_quantized_model_and_says_why_gradients_are_skipped(quantized, kind,
                                                                           tmp_path, capsys):
    from flowgrad.cli import main

    path = tmp_path / "model.onnx"
    onnx.save(quantized(kind, "int8", False), path)
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "gradient check: skipped" in out and "forward-only" in out


def light_with_random_weights(name: str) -> onnx.ModelProto:
    """One of the onnx wheel's light ImageNet models at opset 13, its ConstantOfShape(0.02)
    weights replaced by random ones (He-normal; 1-d vectors in [0.5, 1.5]) so its outputs
    are not uniform (its batch stays 1: its reshapes hard-code it)."""
    import os
    path = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light",
                        f"light_{name}.onnx")
    if not os.path.exists(path):
        pytest.skip(f"the installed onnx wheel ships no light_{name}.onnx")
    model = onnx.load(path)
    rng = np.random.default_rng(0)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    keep = []
    for node in model.graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in inits:
            shape = tuple(int(d) for d in inits[node.input[0]])
            value = (rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
                     if len(shape) >= 2 else rng.uniform(0.5, 1.5, shape))
            model.graph.initializer.append(numpy_helper.from_array(value.astype(np.float32),
                                                                   node.output[0]))
            model.graph.input.append(helper.make_tensor_value_info(
                node.output[0], TensorProto.FLOAT, list(shape)))
        else:
            keep.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep)
    model = onnx.version_converter.convert_version(model, 13)
    names = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in names]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    model.ir_version = 8
    return model


def test_quantized_squeezenet_matches_onnxruntime(tmp_path):
    """SqueezeNet 1.0 (the onnx wheel's light model, random weights) quantized by onnxruntime
    in QOperator format (uint8 activations, 7-bit weights; Softmax left in float): QLinearConv,
    QLinearConcat, QLinearGlobalAveragePool; the logits bit for bit."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    model = light_with_random_weights("squeezenet")
    source, out = tmp_path / "float.onnx", tmp_path / "quantized.onnx"
    onnx.save(model, source)
    feed = model.graph.input[0].name
    rng = np.random.default_rng(1)

    class Reader:
        batches = iter([{feed: rng.standard_normal((1, 3, 224, 224)).astype(np.float32)}
                        for _ in range(2)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(source), str(out), Reader(), quant_format=QuantFormat.QOperator,
                    activation_type=QuantType.QUInt8, reduce_range=True,
                    op_types_to_quantize=["Conv", "Relu", "MaxPool", "Concat",
                                          "GlobalAveragePool"])
    quantized = onnx.load(str(out))
    ops = {(n.domain, n.op_type) for n in quantized.graph.node}
    assert {("", "QLinearConv"), ("com.microsoft", "QLinearConcat"),
            ("com.microsoft", "QLinearGlobalAveragePool")} <= ops
    softmax = next(n for n in quantized.graph.node if n.op_type == "Softmax")
    quantized.graph.output.insert(0, onnx.ValueInfoProto(name=softmax.input[0]))
    x = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
    expected = ort_run(quantized, {feed: x})
    got = flowgrad_run(quantized, {feed: x})
    assert len(np.unique(expected[0])) > 100                        # not saturated
    np.testing.assert_array_equal(got[0], expected[0])              # the logits
    np.testing.assert_allclose(got[1], expected[1], rtol=0, atol=1e-6)   # float softmax


# -- DynamicQuantizeLSTM (com.microsoft) ---------------------------------------------------------

LSTM_SIZES = dict(T=5, N=8, I=4, H=6)      # N > 4: onnxruntime splits the batch over threads


def float_lstm(direction="forward", peepholes=False, lengths=False, seed=0):
    """A float ONNX LSTM node (opset 14) with bias, initial states and optionally peepholes
    and sequence_lens, all inputs of the graph but the weights; and its feeds."""
    rng = np.random.default_rng(seed)
    T, N, I, H = (LSTM_SIZES[k] for k in "TNIH")
    D = 2 if direction == "bidirectional" else 1
    consts = {"W": rng.standard_normal((D, 4 * H, I)) * 0.5,
              "R": rng.standard_normal((D, 4 * H, H)) * 0.5,
              "B": rng.standard_normal((D, 8 * H)) * 0.1}
    if peepholes:
        consts["P"] = rng.standard_normal((D, 3 * H)) * 0.3
    feeds = {"X": rng.standard_normal((T, N, I)).astype(np.float32),
             "h0": (rng.standard_normal((D, N, H)) * 0.5).astype(np.float32),
             "c0": (rng.standard_normal((D, N, H)) * 0.5).astype(np.float32)}
    if lengths:                  # every length, 0 and T included
        feeds["seq"] = np.asarray([5, 2, 3, 0, 1, 5, 4, 4], np.int32)
    inputs = ["X", "W", "R", "B", "seq" if lengths else "", "h0", "c0"] + (
        ["P"] if peepholes else [])
    node = helper.make_node("LSTM", inputs, ["Y", "Y_h", "Y_c"], hidden_size=H,
                            direction=direction)
    graph = helper.make_graph(
        [node], "lstm",
        [helper.make_tensor_value_info(k, ONNX_TYPES[v.dtype], v.shape) for k, v in feeds.items()],
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, None) for k in ("Y", "Y_h", "Y_c")],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in consts.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)],
                             ir_version=8), feeds


def quantized_lstm(model, tmp_path, **options) -> onnx.ModelProto:
    """onnxruntime's ``quantize_dynamic`` of the model's LSTM: a DynamicQuantizeLSTM."""
    from onnxruntime.quantization import quantize_dynamic
    source, out = tmp_path / "float.onnx", tmp_path / "quantized.onnx"
    onnx.save(model, source)
    quantize_dynamic(str(source), str(out), op_types_to_quantize=["LSTM"], **options)
    quantized = onnx.load(str(out))
    assert [n.op_type for n in quantized.graph.node] == ["DynamicQuantizeLSTM"]
    return quantized


def ort_threads(model, feeds, threads=1):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def as_uint8_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with its int8 weights shifted to uint8 (zero point 128, one value, as
    onnxruntime's kernel requires): what a uint8 DynamicQuantizeLSTM holds."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for init in out.graph.initializer:
        a = numpy_helper.to_array(init)
        if a.dtype == np.int8:
            b = (np.full(a.shape, 128, np.uint8) if init.name.endswith("zero_point")
                 else (a.astype(np.int16) + 128).astype(np.uint8))
            init.CopyFrom(numpy_helper.from_array(b, init.name))
    return out


#: the difference measured between flowgrad and single-threaded onnxruntime: MLAS's sigmoid and
#: tanh are approximations a few ulp from numpy's, so outputs of magnitude <= 1 differ by at
#: most 2.4e-7 here; 1e-6 leaves room for another CPU's rounding
QLSTM_ATOL = 1e-6


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("peepholes,lengths", [(False, False), (True, True)])
@pytest.mark.parametrize("per_channel", [False, True])
def test_dynamic_quantize_lstm_matches_onnxruntime(tmp_path, direction, peepholes, lengths,
                                                   per_channel):
    """onnxruntime's quantizer, 7-bit int8 weights (``reduce_range``: exact in onnxruntime's
    AVX2 kernel, see weights()), every direction, peepholes, sequence lengths 0 to T: flowgrad
    gives onnxruntime's (one thread) Y, Y_h and Y_c within float32 rounding."""
    model, feeds = float_lstm(direction, peepholes, lengths)
    q = quantized_lstm(model, tmp_path, reduce_range=True, per_channel=per_channel)
    for got, ref in zip(flowgrad_run(q, feeds), ort_threads(q, feeds)):
        assert got.shape == ref.shape and got.dtype == ref.dtype
        np.testing.assert_allclose(got, ref, rtol=0, atol=QLSTM_ATOL)


@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_dynamic_quantize_lstm_with_uint8_weights_matches_onnxruntime(tmp_path, direction):
    """Full-range uint8 weights (onnxruntime multiplies uint8 by uint8 exactly) and
    per-column scales, with sequence lengths."""
    model, feeds = float_lstm(direction, True, True, seed=1)
    q = as_uint8_weights(quantized_lstm(model, tmp_path, per_channel=True))
    for got, ref in zip(flowgrad_run(q, feeds), ort_threads(q, feeds)):
        np.testing.assert_allclose(got, ref, rtol=0, atol=QLSTM_ATOL)


def _vpmaddubsw_matmul(a, b, a_zp, b_zp):
    """onnxruntime's uint8 x int8 product without AVX-VNNI: adjacent pairs of raw products
    saturated to int16 (``vpmaddubsw``), then the zero-point corrections."""
    A, B = a.astype(np.int64), b.astype(np.int64)
    if A.shape[-1] % 2:
        A, B = np.pad(A, ((0, 0), (0, 1))), np.pad(B, ((0, 1), (0, 0)))
    pairs = A[:, 0::2, None] * B[None, 0::2, :] + A[:, 1::2, None] * B[None, 1::2, :]
    za, zb = int(np.asarray(a_zp)), int(np.asarray(b_zp))
    return (np.clip(pairs, -32768, 32767).sum(axis=1) - za * B.sum(axis=0) - zb * A.sum(axis=1,
            keepdims=True) + A.shape[1] * za * zb).astype(np.float64)


def _onnxruntime_saturates() -> bool:
    """Whether this CPU's onnxruntime clips uint8 x int8 pairs (AVX2 without VNNI)."""
    a = np.full((1, 2), 255, np.uint8)
    model = node_model("MatMulInteger", {"a": a}, {"b": np.full((2, 1), 127, np.int8)},
                       opset=10)
    return int(ort_run(model, {"a": a})[0][0, 0]) != 2 * 255 * 127


def test_dynamic_quantize_lstm_full_range_int8_differs_only_by_onnxruntime_saturation(
        tmp_path, monkeypatch):
    """quantize_dynamic's default, full-range int8 weights: flowgrad's products are exact, which
    is onnxruntime's value on a CPU with AVX-VNNI; without it, onnxruntime's AVX2 kernel clips
    pairs of products.  Here the outputs differ by far more than rounding (the clipped products
    move the gates), and copying the clipping into flowgrad's product reproduces onnxruntime to
    float32 rounding: the clipping is the whole difference."""
    import flowgrad.ops.quant as quant_ops
    model, feeds = float_lstm("bidirectional", True, False, seed=2)
    q = quantized_lstm(model, tmp_path)
    exact = flowgrad_run(q, feeds)
    expected = ort_threads(q, feeds)
    if not _onnxruntime_saturates():
        for got, ref in zip(exact, expected):
            np.testing.assert_allclose(got, ref, rtol=0, atol=QLSTM_ATOL)
        return
    assert max(np.abs(g - e).max() for g, e in zip(exact, expected)) > 1e-3
    exact_product = quant_ops._int_matmul
    monkeypatch.setattr(quant_ops, "_int_matmul", lambda a, b, a_zp, b_zp, *backend: (
        _vpmaddubsw_matmul(a, b, a_zp, b_zp) if b.dtype == np.int8
        else exact_product(a, b, a_zp, b_zp, *backend)))
    for got, ref in zip(flowgrad_run(q, feeds), expected):
        np.testing.assert_allclose(got, ref, rtol=0, atol=QLSTM_ATOL)


def test_dynamic_quantize_lstm_is_onnxruntime_with_one_thread(tmp_path):
    """With several threads onnxruntime quantizes each thread's part of the batch on its own
    range (here N = 8 over 2 threads), so its result depends on its thread count; flowgrad's is
    the single-threaded one.  The two differ by a few quantization steps of h."""
    model, feeds = float_lstm("forward", False, False, seed=3)
    q = quantized_lstm(model, tmp_path, reduce_range=True)
    got = flowgrad_run(q, feeds)
    one, two = ort_threads(q, feeds, 1), ort_threads(q, feeds, 2)
    assert max(np.abs(g - r).max() for g, r in zip(got, one)) <= QLSTM_ATOL
    assert QLSTM_ATOL < max(np.abs(a - b).max() for a, b in zip(one, two)) < 0.05


def test_dynamic_quantize_lstm_is_forward_only_without_straight_through(tmp_path):
    model, feeds = float_lstm("forward")
    q = quantized_lstm(model, tmp_path, reduce_range=True)
    g = flowgrad.load(q, dynamic_batch=False)
    plan = flowgrad.compile(g)
    by_onnx = {v: k for k, v in g.meta["onnx"]["inputs"].items()}
    y = g.meta["onnx"]["outputs"]["Y"]
    out = plan.forward({by_onnx[k]: v for k, v in feeds.items()})
    with pytest.raises(FlowgradError, match=r"\(dynamic_quantize_lstm\) is forward-only.*"
                                            r"straight_through=True"):
        plan.backward({y: np.ones_like(out[y])}, wrt=[by_onnx["X"]])


def _float_twin(op, X, Wq, Rq, rest, w_scale, r_scale):
    """The float ``lstm`` with ``op``'s dequantized weights (zero points 0), in LSTM's layout."""
    from flowgrad.ops.recurrent import LSTM
    config = {k: v for k, v in op.config().items() if k != "straight_through"}
    W = (Wq.astype(np.float64) * w_scale[:, None, :]).transpose(0, 2, 1)
    R = (Rq.astype(np.float64) * r_scale[:, None, None]).transpose(0, 2, 1)
    return LSTM(**config), [X, W, R] + list(rest)


@pytest.mark.parametrize("steps,on_grid", [(1, True), (4, False)])
def test_dynamic_quantize_lstm_straight_through_gradients_are_the_float_lstms(steps, on_grid):
    """With ``straight_through`` the gradients of X, B, initial_h, initial_c and P are the float
    lstm's backward on the quantized forward's gate values, the dequantized weights constant.
    Over one step with X on its quantization grid and initial_h = 0 both forwards agree up to
    float rounding, so the gradients must too (to 1e-6); over four steps the forwards differ by
    the quantization of h and the gradients by about as much (a few percent)."""
    from flowgrad.ops.quant import DynamicQuantizeLSTM
    rng = np.random.default_rng(11)
    N, I, H, D = 3, 4, 5, 2
    if on_grid:    # range [-1, 127/128]: scale exactly 1/128, zero point 128, no rounding
        X = rng.integers(-128, 128, size=(steps, N, I)) / 128.0
        X.flat[:2] = (-1.0, 127 / 128)
        h0 = np.zeros((D, N, H))
    else:
        X = rng.standard_normal((steps, N, I))
        h0 = rng.standard_normal((D, N, H)) * 0.5
    Wq = rng.integers(-127, 128, size=(D, I, 4 * H)).astype(np.int8)
    Rq = rng.integers(-127, 128, size=(D, H, 4 * H)).astype(np.int8)
    w_scale = rng.uniform(0.005, 0.02, (D, 4 * H)).astype(np.float32)
    r_scale = rng.uniform(0.005, 0.02, D).astype(np.float32)
    B, c0, P = rng.standard_normal((D, 8 * H)), rng.standard_normal((D, N, H)), \
        rng.standard_normal((D, 3 * H))
    op = DynamicQuantizeLSTM(direction="bidirectional", straight_through=True)
    inputs = [X, Wq, Rq, B, None, h0, c0, P, w_scale, np.zeros((D, 4 * H), np.int8), r_scale,
              np.zeros(D, np.int8)]
    twin, twin_inputs = _float_twin(op, X, Wq, Rq, [B, None, h0, c0, P],
                                    w_scale.astype(np.float64), r_scale.astype(np.float64))
    seeds = [rng.standard_normal(s) for s in ((steps, D, N, H), (D, N, H), (D, N, H))]
    grads = []
    for o, ins, n in ((op, inputs, 12), (twin, twin_inputs, 8)):
        ctx = Context()
        outs = o.forward(ctx, *ins)
        ctx.needs_input_grad = tuple(i in (0, 3, 5, 6, 7) for i in range(n))
        grads.append((outs, o.backward(ctx, *seeds)))
    (q_out, q_grads), (f_out, f_grads) = grads
    tol = 1e-6 if on_grid else 0.05
    for a, b in zip(q_out, f_out):
        np.testing.assert_allclose(a, b, rtol=0, atol=tol)
    for i in (0, 3, 5, 6, 7):
        scale = np.abs(f_grads[i]).max()
        np.testing.assert_allclose(q_grads[i], f_grads[i], rtol=0, atol=tol * scale, err_msg=i)
    assert all(q_grads[i] is None for i in (1, 2, 4, 8, 9, 10, 11))


@pytest.mark.parametrize("attrs,lengths,peepholes", [
    (dict(direction="bidirectional"), False, False),
    (dict(direction="bidirectional"), True, True),
    (dict(direction="reverse", clip=0.8, input_forget=True), True, False),
    (dict(direction="forward", activations=["HardSigmoid", "Relu", "Tanh"]), False, True)])
def test_dynamic_quantize_lstm_evaluation_kernels_match_the_taped_steps(attrs, lengths,
                                                                        peepholes):
    """Without a tape the steps after the recurrent product run in the float lstm's step
    kernels (gates in float64, rounded once); with one, in numpy (float32 after each
    operation).  Both give the same outputs up to float32 rounding."""
    from flowgrad.ops.quant import DynamicQuantizeLSTM
    rng = np.random.default_rng(5)
    T, N, I, H = 4, 3, 5, 6
    D = 2 if attrs["direction"] == "bidirectional" else 1
    X = rng.standard_normal((T, N, I)).astype(np.float32)
    Wq = rng.integers(-127, 128, size=(D, I, 4 * H)).astype(np.int8)
    Rq = rng.integers(-127, 128, size=(D, H, 4 * H)).astype(np.int8)
    scales = [rng.uniform(0.005, 0.02, D).astype(np.float32) for _ in range(2)]
    B = rng.standard_normal((D, 8 * H)).astype(np.float32)
    lens = np.array([4, 2, 0]) if lengths else None
    h0, c0 = (rng.standard_normal((D, N, H)).astype(np.float32) for _ in range(2))
    P = rng.standard_normal((D, 3 * H)).astype(np.float32) if peepholes else None
    inputs = [X, Wq, Rq, B, lens, h0, c0, P, scales[0], np.zeros(D, np.int8), scales[1],
              np.zeros(D, np.int8)]
    taped = DynamicQuantizeLSTM(straight_through=True, **attrs).forward(Context(), *inputs)
    kernel = DynamicQuantizeLSTM(**attrs).forward(Context(grad_enabled=False), *inputs)
    for a, b in zip(kernel, taped):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_dynamic_quantize_lstm_trains_with_straight_through(tmp_path):
    """Loaded with straight_through=True, a quantized LSTM's input gradient reaches X and
    agrees with the float LSTM's (the model before quantization) in direction."""
    model, feeds = float_lstm("bidirectional", True, True)
    q = quantized_lstm(model, tmp_path, reduce_range=True)
    grads = []
    for m, load in ((q, {"straight_through": True}), (model, {})):
        g = flowgrad.load(m, dynamic_batch=False, **load)
        plan = flowgrad.compile(g, dtype="float64")
        by_onnx = {v: k for k, v in g.meta["onnx"]["inputs"].items()}
        y = g.meta["onnx"]["outputs"]["Y"]
        out = plan.forward({by_onnx[k]: v for k, v in feeds.items()})
        grads.append(plan.backward({y: np.ones_like(out[y])},
                                   wrt=[by_onnx["X"], by_onnx["c0"]]))
    for name in grads[0]:
        a, b = grads[0][name].ravel(), grads[1][name].ravel()
        assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) > 0.99, name


def _qlstm_node(W, R, zp_dtype=np.int8, zero_points=None, name="qlstm", **attrs):
    X = np.zeros((2, 1, W.shape[1] if W.ndim == 3 else 1), np.float32)
    D, H = W.shape[0], R.shape[1]
    zps = zero_points if zero_points is not None else np.zeros((D,), zp_dtype)
    model = node_model("DynamicQuantizeLSTM", {"X": X},
                       {"W": W, "R": R, "B": None, "seq": None, "h0": None, "c0": None,
                        "P": None, "W_scale": np.full(zps.shape, 0.01, np.float32),
                        "W_zero_point": zps, "R_scale": np.full((D,), 0.01, np.float32),
                        "R_zero_point": np.zeros((D,), zp_dtype)},
                       n_out=3, opset=14, domain="com.microsoft", hidden_size=H, **attrs)
    model.graph.node[0].name = name
    return model, X


def test_dynamic_quantize_lstm_with_lstm_weight_layout_is_a_located_error():
    """W in LSTM's (D, 4H, I) layout instead of onnxruntime's (D, I, 4H)."""
    W = np.zeros((1, 12, 4), np.int8)
    R = np.zeros((1, 3, 12), np.int8)
    model, X = _qlstm_node(W, R, name="qlstm_layout")
    X = np.zeros((2, 1, 4), np.float32)
    model.graph.input[0].CopyFrom(helper.make_tensor_value_info("X", TensorProto.FLOAT,
                                                                X.shape))
    with pytest.raises(FlowgradError, match=r"qlstm_layout.*'W' must have shape \(1, 4, 12\)"
                                            r".*transpose of LSTM's"):
        flowgrad.load(model)


def test_dynamic_quantize_lstm_bad_zero_points_are_a_located_error():
    """onnxruntime's kernel uses one zero point per direction; per-column int8 zero points
    other than 0 are refused (as onnxruntime refuses them), naming the node."""
    W = np.zeros((1, 4, 12), np.int8)
    R = np.zeros((1, 3, 12), np.int8)
    zps = np.zeros((1, 12), np.int8)
    zps[0, 5] = 3
    model, X = _qlstm_node(W, R, zero_points=zps, name="qlstm_zp")
    model.graph.input[0].CopyFrom(helper.make_tensor_value_info("X", TensorProto.FLOAT,
                                                                (2, 1, 4)))
    with pytest.raises(FlowgradError, match=r"qlstm_zp.*W_zero_point: per-column int8 zero "
                                            r"points must all be 0"):
        flowgrad.load(model)


def test_dynamic_quantize_lstm_exports_back_to_onnx(tmp_path):
    """flowgrad's export writes the com.microsoft node back; onnxruntime runs it to the same
    values as the original model, and flowgrad loads it to the same op."""
    model, feeds = float_lstm("bidirectional", True, True)
    q = quantized_lstm(model, tmp_path, reduce_range=True, per_channel=True)
    graph = flowgrad.load(q, dynamic_batch=False)
    exported = export_onnx(graph)
    ops = [(n.domain, n.op_type) for n in exported.graph.node]
    assert ops == [("com.microsoft", "DynamicQuantizeLSTM")]
    by_position = dict(zip([i.name for i in q.graph.input], [i.name for i in exported.graph.input]))
    again = ort_threads(exported, {by_position[k]: v for k, v in feeds.items()})
    for got, ref in zip(again, ort_threads(q, feeds)):
        np.testing.assert_array_equal(got, ref)
    back = flowgrad.load(exported, dynamic_batch=False)
    assert [back.op_of(n).config() for n in back.ops] == [graph.op_of(n).config()
                                                          for n in graph.ops]
