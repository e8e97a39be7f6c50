"""Forward values of the convolutional op family against onnxruntime (and onnx's reference).

Each case builds the equivalent one-node ONNX model with ``onnx.helper`` and compares outputs
over a grid of attributes, including the awkward ones: ceil_mode with padding, asymmetric pads,
SAME_LOWER, dilated pooling, count_include_pad, grouped and transposed convolutions.
"""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from flowgrad.op import Context
from flowgrad.ops.conv import Conv, ConvTranspose
from flowgrad.ops.norm import LRN, BatchNorm, InstanceNorm, LayerNorm
from flowgrad.ops.pool import AvgPool, GlobalAvgPool, GlobalMaxPool, MaxPool
from flowgrad.ops.resample import Pad, Resize

ort = pytest.importorskip("onnxruntime")  # the 'dev' extra


def run_onnx(op_type, inputs, attrs, opset=19, initializers=()):
    """Run one ONNX node: ``inputs`` are fed arrays, ``initializers`` (name, array) constants."""
    names = [f"i{k}" for k in range(len(inputs))]
    feeds = [helper.make_tensor_value_info(n, TensorProto.FLOAT, a.shape)
             for n, a in zip(names, inputs)]
    inits, init_names = [], []
    for name, value in initializers:
        if value is None:
            init_names.append("")
            continue
        kind = TensorProto.INT64 if value.dtype.kind == "i" else TensorProto.FLOAT
        inits.append(helper.make_tensor(name, kind, value.shape, value.reshape(-1).tolist()))
        init_names.append(name)
    node = helper.make_node(op_type, names + init_names, ["y"], **attrs)
    graph = helper.make_graph([node], "g", feeds,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, dict(zip(names, inputs)))[0]


def ours(op, *inputs):
    return op.forward(Context(grad_enabled=False), *inputs)[0]


def assert_close(got, want, tol=2e-5):
    assert got.shape == want.shape, f"shape {got.shape}, onnxruntime {want.shape}"
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


CONV = [
    ((2, 4, 7, 8), (6, 4, 3, 3), {}),
    ((2, 4, 7, 8), (6, 2, 3, 2), {"group": 2, "strides": [2, 1], "pads": [1, 0, 2, 1]}),
    ((2, 4, 9, 8), (4, 1, 3, 3), {"group": 4, "auto_pad": "SAME_LOWER", "strides": [2, 2]}),
    ((2, 4, 9, 8), (4, 4, 2, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 3]}),
    ((2, 4, 7, 8), (6, 4, 3, 3), {"auto_pad": "VALID", "strides": [3, 2]}),
    ((2, 3, 9, 9), (5, 3, 3, 3), {"dilations": [2, 3], "pads": [2, 1, 0, 3]}),
    ((2, 3, 12, 11), (4, 3, 5, 5), {"pads": [2, 2, 2, 2]}),          # the wide-row path
    ((2, 3, 10), (5, 3, 3), {"strides": [2], "pads": [2, 1], "dilations": [2]}),
    ((1, 2, 5, 6, 5), (3, 2, 2, 3, 2), {"pads": [1, 0, 1, 0, 1, 1]}),
]


@pytest.mark.parametrize("x_shape,w_shape,attrs", CONV, ids=[str(a) for _, _, a in CONV])
def test_conv(x_shape, w_shape, attrs):
    x, W, b = rand(*x_shape), rand(*w_shape, seed=1), rand(w_shape[0], seed=2)
    assert_close(ours(Conv(**attrs), x, W, b), run_onnx("Conv", [x, W, b], attrs))
    assert_close(ours(Conv(**attrs), x, W, None), run_onnx("Conv", [x, W], attrs))


CONV_T = [
    ((2, 4, 5, 6), (4, 3, 3, 3), {}),
    ((2, 4, 5, 6), (4, 3, 3, 3), {"strides": [2, 2], "pads": [1, 0, 0, 1],
                                  "output_padding": [1, 0]}),
    ((2, 4, 5, 6), (4, 2, 3, 2), {"group": 2, "strides": [2, 3], "dilations": [2, 1],
                                  "output_padding": [1, 2]}),
    ((2, 4, 5, 6), (4, 2, 3, 3), {"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ((2, 4, 5, 6), (4, 2, 3, 3), {"strides": [2, 2], "auto_pad": "SAME_LOWER"}),
    ((2, 4, 5, 6), (4, 2, 3, 3), {"strides": [2, 2], "output_shape": [10, 12]}),
    ((2, 4, 5, 6), (4, 2, 3, 3), {"strides": [2, 2], "output_shape": [9, 11]}),
    # output_shape past the input's reach (11 x 13): negative pads, a zero margin at the end
    ((2, 4, 5, 6), (4, 2, 3, 3), {"strides": [2, 2], "output_shape": [12, 14]}),
    ((2, 3, 7), (3, 2, 4), {"strides": [3], "pads": [1, 2]}),
]


@pytest.mark.parametrize("x_shape,w_shape,attrs", CONV_T, ids=[str(a) for _, _, a in CONV_T])
def test_conv_transpose(x_shape, w_shape, attrs):
    x, W = rand(*x_shape), rand(*w_shape, seed=1)
    b = rand(w_shape[1] * attrs.get("group", 1), seed=2)
    assert_close(ours(ConvTranspose(**attrs), x, W, b), run_onnx("ConvTranspose", [x, W, b], attrs))


POOL = [
    ((2, 3, 7, 8), {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ((2, 3, 7, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1],
                    "ceil_mode": 1}),
    ((2, 3, 7, 8), {"kernel_shape": [3, 2], "strides": [2, 3], "pads": [1, 0, 0, 1],
                    "ceil_mode": 1}),
    ((2, 3, 7, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_LOWER"}),
    ((2, 3, 7, 8), {"kernel_shape": [2, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ((2, 3, 9, 8), {"kernel_shape": [2, 2], "dilations": [2, 2], "strides": [1, 2],
                    "pads": [1, 1, 0, 0]}),
    ((2, 3, 9, 8), {"kernel_shape": [2, 2], "dilations": [2, 1], "strides": [2, 2],
                    "ceil_mode": 1}),
    ((2, 3, 9), {"kernel_shape": [3], "strides": [2], "pads": [1, 2]}),
    ((1, 2, 5, 4, 5), {"kernel_shape": [2, 2, 2], "strides": [2, 2, 2], "ceil_mode": 1}),
]


@pytest.mark.parametrize("shape,attrs", POOL, ids=[str(a) for _, a in POOL])
def test_max_pool(shape, attrs):
    x = rand(*shape)
    assert_close(ours(MaxPool(**attrs), x), run_onnx("MaxPool", [x], attrs))


@pytest.mark.parametrize("storage_order", [0, 1])
@pytest.mark.parametrize("shape,attrs", POOL, ids=[str(a) for _, a in POOL])
def test_max_pool_indices(shape, attrs, storage_order):
    """MaxPool's second output (flat arg-max over the whole input) against onnxruntime."""
    x = rand(*shape, seed=3)
    attrs = {**attrs, "storage_order": storage_order}
    node = helper.make_node("MaxPool", ["x"], ["y", "i"], **attrs)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("i", TensorProto.INT64, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want_y, want_i = session.run(None, {"x": x})
    y, indices = MaxPool(**attrs, indices=True).forward(Context(grad_enabled=False), x)
    assert_close(y, want_y)
    assert indices.dtype == np.int64
    np.testing.assert_array_equal(indices, want_i)


@pytest.mark.parametrize("count_include_pad", [0, 1])
@pytest.mark.parametrize("shape,attrs", POOL, ids=[str(a) for _, a in POOL])
def test_avg_pool(shape, attrs, count_include_pad):
    x = rand(*shape)
    attrs = {**attrs, "count_include_pad": count_include_pad}
    assert_close(ours(AvgPool(**attrs), x), run_onnx("AveragePool", [x], attrs))


@pytest.mark.parametrize("op,onnx_type", [(GlobalAvgPool, "GlobalAveragePool"),
                                          (GlobalMaxPool, "GlobalMaxPool")])
def test_global_pools(op, onnx_type):
    for shape in ((2, 3, 5, 6), (2, 3, 7)):
        x = rand(*shape)
        assert_close(ours(op(), x), run_onnx(onnx_type, [x], {}))


def test_batch_norm_inference():
    x, s, b, m = rand(3, 4, 5, 6), rand(4, seed=1), rand(4, seed=2), rand(4, seed=3)
    v = np.random.default_rng(4).uniform(0.5, 2, 4).astype(np.float32)
    assert_close(ours(BatchNorm(epsilon=1e-3), x, s, b, m, v),
                 run_onnx("BatchNormalization", [x, s, b, m, v], {"epsilon": 1e-3}))


def test_batch_norm_training_matches_onnx_reference():
    from onnx.reference import ReferenceEvaluator
    x, s, b, m = rand(3, 4, 5, 6), rand(4, seed=1), rand(4, seed=2), rand(4, seed=3)
    v = np.random.default_rng(4).uniform(0.5, 2, 4).astype(np.float32)
    node = helper.make_node("BatchNormalization", list("xsbmv"), ["y", "rm", "rv"],
                            training_mode=1, momentum=0.8, epsilon=1e-3)
    info = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in "xsbmv"]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "rm", "rv")]
    model = helper.make_model(helper.make_graph([node], "g", info, outs),
                              opset_imports=[helper.make_opsetid("", 15)])
    y, rm, rv = ReferenceEvaluator(model).run(None, dict(x=x, s=s, b=b, m=m, v=v))
    ctx = Context(training=True)
    got = BatchNorm(epsilon=1e-3, momentum=0.8).forward(ctx, x, s, b, m, v)[0]
    assert_close(got, y)
    assert_close(ctx.state[3], rm)
    assert_close(ctx.state[4], rv)


@pytest.mark.parametrize("size", [3, 5])
def test_lrn(size):
    x = rand(3, 7, 4, 5)
    attrs = {"size": size, "alpha": 0.3, "beta": 0.7, "bias": 1.5}
    assert_close(ours(LRN(**attrs), x), run_onnx("LRN", [x], attrs))


def test_lrn_even_size_follows_the_onnx_formula():
    """onnxruntime only takes odd sizes; check an even one against the spec's formula."""
    x = rand(2, 6, 3, 2)
    size, alpha, beta, bias = 4, 0.3, 0.7, 1.5
    want = np.empty_like(x)
    for c in range(6):
        lo, hi = max(0, c - (size - 1) // 2), min(5, c + -(-(size - 1) // 2))
        square = (x[:, lo:hi + 1] ** 2).sum(axis=1)
        want[:, c] = x[:, c] / (bias + alpha / size * square) ** beta
    assert_close(ours(LRN(size=size, alpha=alpha, beta=beta, bias=bias), x), want)


def test_instance_and_layer_norm():
    x, s, b = rand(3, 4, 5, 6), rand(4, seed=1), rand(4, seed=2)
    assert_close(ours(InstanceNorm(epsilon=1e-3), x, s, b),
                 run_onnx("InstanceNormalization", [x, s, b], {"epsilon": 1e-3}))
    scale, bias = rand(5, 6, seed=3), rand(6, seed=4)
    assert_close(ours(LayerNorm(axis=2), x, scale, bias),
                 run_onnx("LayerNormalization", [x, scale, bias], {"axis": 2}))
    assert_close(ours(LayerNorm(), x, rand(6, seed=5), None),
                 run_onnx("LayerNormalization", [x, rand(6, seed=5)], {}))


PADS = [([0, 0, 1, 2, 0, 0, 2, 1], None), ([0, 1, 2, -1, 0, 0, 1, 3], None),
        ([1, 2, 2, 0], [2, 3]), ([-1, 2, 1, -2], [-2, -1])]


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
@pytest.mark.parametrize("pads,axes", PADS, ids=[str(p) for p, _ in PADS])
def test_pad(mode, pads, axes):
    x = rand(2, 3, 5, 6)
    value = np.array(1.5, np.float32) if mode == "constant" else None
    inits = [("pads", np.array(pads, np.int64)), ("value", value)]
    if axes is not None:
        inits.append(("axes", np.array(axes, np.int64)))
    want = run_onnx("Pad", [x], {"mode": mode}, initializers=inits)
    as_inputs = ours(Pad(mode=mode), x, np.array(pads), value,
                     None if axes is None else np.array(axes))
    as_attrs = ours(Pad(mode=mode, pads=pads, value=1.5, axes=axes or ()), x)
    assert_close(as_inputs, want)
    assert_close(as_attrs, want)


RESIZE_SIZES = [([1, 1, 2, 1.5], None), ([1, 1, 0.6, 0.5], None), (None, [2, 3, 7, 4]),
                (None, [2, 3, 1, 9])]
RESIZE_MODES = [("nearest", nm, 0) for nm in ("round_prefer_floor", "round_prefer_ceil",
                                               "floor", "ceil")] \
    + [("linear", "round_prefer_floor", 0), ("cubic", "round_prefer_floor", 0),
       ("cubic", "round_prefer_floor", 1)]
COORDINATES = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric",
               "half_pixel_symmetric"]


@pytest.mark.parametrize("coordinates", COORDINATES)
@pytest.mark.parametrize("mode,nearest_mode,exclude_outside", RESIZE_MODES,
                         ids=["-".join(map(str, m)) for m in RESIZE_MODES])
def test_resize(mode, nearest_mode, exclude_outside, coordinates):
    x = rand(2, 3, 5, 6)
    attrs = {"mode": mode, "coordinate_transformation_mode": coordinates,
             "nearest_mode": nearest_mode, "exclude_outside": exclude_outside}
    op = Resize(**attrs)        # one op for every size, twice: it keeps steps per shape/scale
    for scales, sizes in RESIZE_SIZES + RESIZE_SIZES:
        if (coordinates, nearest_mode, scales) == ("half_pixel_symmetric", "floor",
                                                   [1, 1, 0.6, 0.5]):
            continue   # lands exactly on a cell boundary; float rounding decides (see docs)
        inits = [("roi", None), ("scales", None if scales is None else
                                 np.array(scales, np.float32))]
        if sizes is not None:
            inits.append(("sizes", np.array(sizes, np.int64)))
        want = run_onnx("Resize", [x], attrs, initializers=inits)
        got = ours(op, x, None, None if scales is None else np.array(scales, np.float32),
                   None if sizes is None else np.array(sizes))
        assert_close(got, want, tol=1e-4)


RESIZE_EXTRA = [
    # antialias (downsampling widens the kernel)
    ({"mode": "linear", "antialias": 1}, [1, 1, 0.6, 0.5], None, None),
    ({"mode": "cubic", "antialias": 1}, None, [2, 3, 3, 4], None),
    ({"mode": "cubic", "antialias": 1, "exclude_outside": 1}, [1, 1, 0.5, 0.7], None, None),
    # tf_crop_and_resize, also reaching outside the input (extrapolation_value)
    ({"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize"},
     None, [2, 3, 4, 3], [0, 0, 0.2, 0.1, 1, 1, 0.9, 0.7]),
    ({"mode": "nearest", "coordinate_transformation_mode": "tf_crop_and_resize",
      "extrapolation_value": 3.0}, None, [2, 3, 4, 5], [0, 0, -0.2, 0.4, 1, 1, 0.8, 1.3]),
    # keep_aspect_ratio_policy with axes
    ({"mode": "nearest", "axes": [2, 3], "keep_aspect_ratio_policy": "not_larger"},
     None, [9, 8], None),
    ({"mode": "linear", "axes": [3, 2], "keep_aspect_ratio_policy": "not_smaller"},
     None, [8, 9], None),
]


@pytest.mark.parametrize("attrs,scales,sizes,roi", RESIZE_EXTRA,
                         ids=[str(i) for i in range(len(RESIZE_EXTRA))])
def test_resize_roi_antialias_aspect_ratio(attrs, scales, sizes, roi):
    x = rand(2, 3, 5, 6)
    arrays = [None if roi is None else np.array(roi, np.float32),
              None if scales is None else np.array(scales, np.float32),
              None if sizes is None else np.array(sizes, np.int64)]
    want = run_onnx("Resize", [x], attrs, initializers=list(zip(("roi", "scales", "sizes"),
                                                                  arrays)))
    assert_close(ours(Resize(**attrs), x, *arrays), want, tol=1e-4)
