"""The convolutional family beyond finite differences: properties, strategies, errors, YAML graphs,
and the train/eval switch of batch_norm and dropout."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

import flowgrad.ops._conv_util as conv_util
import flowgrad.ops.conv as conv_module
import flowgrad.ops._recipes as recipes_module
from flowgrad.errors import AttrError, FlowgradError, ShapeError
from flowgrad.loaders.yaml_loader import load_yaml
from flowgrad.op import Context, Spec
from flowgrad.ops.conv import Conv, ConvTranspose
from flowgrad.ops.norm import Dropout
from flowgrad.ops.pool import AvgPool, MaxPool
from flowgrad.ops.resample import Pad, Resize
from flowgrad.plan import Plan


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def forward_backward(op, inputs, gy_seed=5, needs=None):
    """The first output and the input gradients for a random cotangent of it (other outputs,
    such as max_pool's indices, get None)."""
    ctx = Context()
    outs = op.forward(ctx, *inputs)
    y = outs[0]
    ctx.needs_input_grad = needs or tuple(v is not None for v in inputs)
    gy = rand(*y.shape, seed=gy_seed).astype(y.dtype)
    return y, op.backward(ctx, gy, *[None] * (len(outs) - 1))


ADJOINT = [
    ((2, 4, 7, 6), (6, 2, 3, 3), {"group": 2, "strides": [2, 1], "pads": [1, 0, 2, 1]}),
    ((1, 3, 9, 8), (3, 1, 3, 2), {"group": 3, "strides": [3, 2], "dilations": [2, 1],
                                  "pads": [2, 1, 1, 0]}),
    ((2, 2, 9), (4, 2, 4), {"strides": [3], "pads": [1, 2]}),
]


@pytest.mark.parametrize("x_shape,w_shape,attrs", ADJOINT)
def test_conv_transpose_is_the_adjoint_of_conv(x_shape, w_shape, attrs):
    """<conv(x), z> == <x, conv_transpose(z)> with the same weights and window attributes."""
    x, W = rand(*x_shape), rand(*w_shape, seed=1)
    y = Conv(**attrs).forward(Context(), x, W)[0]
    z = rand(*y.shape, seed=2)
    # output_padding recovers input cells the strided conv never reached
    extra = [n - ((o - 1) * s + (k - 1) * d + 1 - b - e) for n, o, s, k, d, b, e in zip(
        x_shape[2:], y.shape[2:], attrs["strides"], w_shape[2:],
        attrs.get("dilations", [1] * len(w_shape[2:])),
        attrs["pads"][:len(w_shape) - 2], attrs["pads"][len(w_shape) - 2:])]
    back = ConvTranspose(**attrs, output_padding=extra).forward(Context(), z, W)[0]
    assert back.shape == x.shape
    assert np.isclose((y * z).sum(), (x * back).sum())


@pytest.mark.parametrize("attrs, kernel", [({"pads": [1, 1, 1, 1]}, (3, 3)),
                                           ({}, (1, 1)), ({"group": 2}, (1, 1)),
                                           ({"group": 4, "pads": [1, 1, 1, 1]}, (3, 3)),
                                           ({"strides": [2, 2]}, (3, 3))])
def test_forward_recipes_follow_signature_attributes_and_values(attrs, kernel, monkeypatch):
    """A conv keeps what its forward works out per input signature (shapes, dtypes, bias or
    not): every call gives the bits of a fresh op, whatever came before — other batch sizes
    and dtypes, a non-contiguous input, no bias, a weight changed in place, a changed
    attribute, a pickled copy — and only RECIPES signatures are kept."""
    monkeypatch.setattr(recipes_module, "RECIPES", 3)
    ctx = Context(grad_enabled=False)
    W = rand(8, 4 // attrs.get("group", 1), *kernel, seed=1).astype(np.float32)
    b = rand(8, seed=2).astype(np.float32)
    x = rand(2, 4, 7, 9).astype(np.float32)
    op = Conv(**attrs)
    calls = [(x, W, b), (x[:1], W, b), (x[:1], W, None), (x.astype(np.float64), W, b),
             (x.astype(np.float16), W.astype(np.float16), b.astype(np.float16)),
             (np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2), W, b),
             (x[:1], W[:, :, ::-1], b), (x, W, b)]
    for inputs in calls:
        (y,) = op.forward(ctx, *inputs)
        (want,) = Conv(**attrs).forward(ctx, *inputs)
        assert y.dtype == want.dtype and np.array_equal(y, want)
        assert len(op._recipes) <= 3
    W *= 2                                  # a param an optimizer updates in place
    b += 1
    (y,) = op.forward(ctx, x, W, b)
    assert np.array_equal(y, Conv(**attrs).forward(ctx, x, W, b)[0])
    copy = pickle.loads(pickle.dumps(op))
    assert np.array_equal(copy.forward(ctx, x, W, b)[0], y)
    op.pads = [0, 0, 2, 2]                  # an attribute set later drops the recipes
    (y,) = op.forward(ctx, x, W, b)
    (want,) = Conv(**{**attrs, "pads": [0, 0, 2, 2]}).forward(ctx, x, W, b)
    assert y.shape == want.shape and np.array_equal(y, want)


@pytest.mark.parametrize("attrs", [{"pads": [2, 2, 2, 2]}, {"pads": [1, 0, 2, 1],
                                                             "dilations": [2, 1]},
                                   {"auto_pad": "SAME_LOWER", "group": 2}])
def test_wide_row_and_window_unfolding_agree(attrs, monkeypatch):
    """The stride-1 fast path and the general sliding-window path give the same values and
    gradients, with one chunk or many, with and without gradient."""
    x, W, b = rand(5, 4, 9, 8), rand(6, 4 // attrs.get("group", 1), 5, 3, seed=1), rand(6)
    assert conv_util.WideRows.worthwhile(
        conv_util.geometry(Conv(**attrs), (9, 8), (5, 3)), x.shape, 6)
    results = []
    for strategy in ("wide", "window"):
        for chunk in (1 << 19, 300):    # 300 elements: one image per chunk
            monkeypatch.setattr(conv_util, "CHUNK_ELEMENTS", chunk)
            if strategy == "window":
                monkeypatch.setattr(conv_module, "unfolder",
                                    lambda g, shape, rows: conv_util.WindowUnfold(g, shape))
            y, grads = forward_backward(Conv(**attrs), [x, W, b])
            # evaluation pads chunk by chunk into a scratch buffer instead
            (y_eval,) = Conv(**attrs).forward(Context(grad_enabled=False), x, W, b)
            results.append((y, y_eval) + grads)
    for other in results[1:]:
        for a, b_ in zip(results[0], other):
            np.testing.assert_allclose(a, b_, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("attrs", [
    {"pads": [2, 2, 2, 2]}, {"strides": [2, 1], "pads": [2, 2, 2, 2]},
    {"strides": [1, 2], "dilations": [2, 1], "pads": [1, 0, 2, 1]}])
@pytest.mark.parametrize("multiplier", [1, 2])
def test_depthwise_forward_is_the_same_on_either_kernel(attrs, multiplier, monkeypatch):
    """A depthwise conv's forward runs channels last (conv_depthwise) or on phase planes
    (conv_planes) by its shape: both give the same bits, with and without gradient,
    and the gradients do not depend on which ran."""
    channels = 8
    x = rand(2, channels, 7, 9).astype(np.float32)
    W = rand(channels * multiplier, 1, 5, 3, seed=1).astype(np.float32)
    b = rand(channels * multiplier, seed=2).astype(np.float32)
    results = []
    for threshold in (1 << 30, 0):          # channels last everywhere, then planes everywhere
        monkeypatch.setattr(conv_module, "DEPTHWISE_CHANNELS_LAST", threshold)
        op = Conv(group=channels, **attrs)
        (y_eval,) = op.forward(Context(grad_enabled=False), x, W, b)
        y, grads = forward_backward(op, [x, W, b])
        results.append((y_eval, y) + grads)
    for a, b_ in zip(*results):
        np.testing.assert_array_equal(a, b_)
    # and against the same conv computed in float64
    (want,) = Conv(group=channels, **attrs).forward(Context(grad_enabled=False),
                                                    x.astype(np.float64), W.astype(np.float64),
                                                    b.astype(np.float64))
    np.testing.assert_allclose(results[0][0], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("attrs", [{"pads": [1, 1, 1, 1], "strides": [2, 2]},
                                   {"pads": [2, 1, 0, 1], "strides": [1, 2]},
                                   {"pads": [1, 1, 1, 1]}])
def test_first_layer_forward_is_direct_or_unfolded_alike(attrs, monkeypatch):
    """A conv with few input channels per group computes its forward direct (conv_planes),
    strided or not; unfolded (DIRECT_CHANNELS 0) the result agrees to float32 rounding, and
    the gradients are the unfolded path's either way."""
    x = rand(2, 3, 9, 11).astype(np.float32)
    W = rand(5, 3, 3, 3, seed=1).astype(np.float32)
    b = rand(5, seed=2).astype(np.float32)
    assert Conv.direct_forward(conv_util.geometry(Conv(**attrs), (9, 11), (3, 3)), W.shape)
    results = []
    for channels in (conv_module.DIRECT_CHANNELS, 0):
        monkeypatch.setattr(conv_module, "DIRECT_CHANNELS", channels)
        (y_eval,) = Conv(**attrs).forward(Context(grad_enabled=False), x, W, b)
        results.append((y_eval,) + forward_backward(Conv(**attrs), [x, W, b])[1])
    for a, b_ in zip(*results):
        np.testing.assert_allclose(a, b_, rtol=1e-5, atol=1e-5)


def test_conv_transpose_chunks_agree(monkeypatch):
    x, W, b = rand(5, 4, 3, 4), rand(4, 3, 3, 3, seed=1), rand(6)
    op = ConvTranspose(strides=[2, 2], group=2, pads=[1, 0, 0, 1])
    whole = forward_backward(op, [x, W, b])
    monkeypatch.setattr(conv_util, "CHUNK_ELEMENTS", 100)
    parts = forward_backward(op, [x, W, b])
    np.testing.assert_allclose(whole[0], parts[0], rtol=1e-10, atol=1e-10)
    for a, b_ in zip(whole[1], parts[1]):
        np.testing.assert_allclose(a, b_, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("x_shape,w_shape,attrs", [
    ((1, 4, 5, 6), (4, 3, 2, 2), {"strides": [2, 2]}),                     # PP-OCR's upsampling
    ((3, 4, 3, 5), (4, 2, 2, 3), {"strides": [2, 3], "group": 2}),
    ((2, 3, 7), (3, 2, 3), {"strides": [3]}),
    ((2, 2, 2, 3, 2), (2, 3, 2, 1, 3), {"strides": [2, 1, 3], "kernel_shape": [2, 1, 3]}),
])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
@pytest.mark.parametrize("bias", [True, False])
def test_conv_transpose_tiling_windows_write_pixels(x_shape, w_shape, attrs, dtype, bias,
                                                    monkeypatch):
    """Windows that tile the output (stride = kernel, no padding) take the pixel path
    (unfolded_pixels, the bias added on the way): the same values as col2im and a bias pass,
    in whole batches and in chunks, and the backward is unchanged."""
    x = rand(*x_shape).astype(dtype)
    W, b = rand(*w_shape, seed=1).astype(dtype), rand(w_shape[1] * attrs.get("group", 1), seed=2)
    inputs = [x, W, b.astype(dtype) if bias else None]
    results = []
    for pixels, chunk in ((True, None), (True, 40), (False, None)):
        op = ConvTranspose(**attrs)
        if chunk:
            monkeypatch.setattr(conv_util, "CHUNK_ELEMENTS", chunk)
        op.forward(Context(grad_enabled=False), *inputs)
        (key, recipe), = op._recipes.items()
        assert recipe[-1] is True
        op._recipes[key] = recipe[:-1] + (pixels,)
        results.append(forward_backward(op, inputs, needs=(True, True, bias)))
        monkeypatch.undo()
    (whole, grads), (chunked, chunked_grads), (generic, generic_grads) = results
    np.testing.assert_array_equal(whole, generic)
    tol = {"rtol": 1e-2, "atol": 1e-2} if dtype == np.float16 else {"rtol": 1e-5, "atol": 1e-6}
    np.testing.assert_allclose(chunked, whole, **tol)
    for a, b_, c in zip(grads, generic_grads, chunked_grads):
        if a is not None:
            np.testing.assert_array_equal(a, b_)
            np.testing.assert_allclose(c, a, **tol)


def test_conv_transpose_recipes_follow_attributes():
    """A conv_transpose keeps its geometry per input signature; setting an attribute drops it."""
    x, W = rand(1, 2, 3, 3), rand(2, 2, 2, 2, seed=1)
    op = ConvTranspose(strides=[2, 2])
    assert op.forward(Context(), x, W)[0].shape == (1, 2, 6, 6)
    op.strides = [1, 1]
    assert op.forward(Context(), x, W)[0].shape == (1, 2, 4, 4)
    assert len(op._recipes) == 1


def test_conv_keeps_float32():
    x, W, b = (rand(2, 3, 6, 6).astype(np.float32), rand(4, 3, 3, 3).astype(np.float32),
               rand(4).astype(np.float32))
    for op, w in ((Conv(pads=[1, 1, 1, 1]), W), (ConvTranspose(strides=[2, 2]),
                                                  rand(3, 4, 3, 3).astype(np.float32))):
        y, grads = forward_backward(op, [x, w, b])
        assert y.dtype == np.float32 and all(g.dtype == np.float32 for g in grads)


def test_max_pool_sends_a_tied_gradient_to_the_first_maximum_only():
    x = np.zeros((1, 1, 4, 4))           # every window is a four-way tie (as after a relu)
    for attrs in ({"kernel_shape": [2, 2], "strides": [2, 2]},
                  {"kernel_shape": [3, 3], "strides": [1, 1]}):
        grads = []
        for with_indices in (False, True):    # the two forward paths agree on the winner
            y, (gx,) = forward_backward(MaxPool(**attrs, indices=with_indices), [x])
            gy = rand(*y.shape, seed=5)
            assert np.isclose(gx.sum(), gy.sum())
            assert gx[0, 0, 0, 0] == gy[0, 0, 0, 0]      # window (0, 0) picks its first cell
            grads.append(gx)
        np.testing.assert_array_equal(*grads)
        _, indices = MaxPool(**attrs, indices=True).forward(Context(), x)
        assert indices[0, 0, 0, 0] == 0                  # and 'indices' names that cell


def test_avg_pool_counts():
    x = np.ones((1, 1, 3, 3))
    attrs = {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [1, 1, 0, 0]}
    assert np.allclose(AvgPool(**attrs).forward(Context(), x)[0], 1.0)
    included = AvgPool(**attrs, count_include_pad=1).forward(Context(), x)[0]
    assert np.allclose(included[0, 0], [[0.25, 0.5], [0.5, 1.0]])


@pytest.mark.parametrize("make,shapes,message", [
    (lambda: Conv(), [(None, 3, 8, 8), (4, 2, 3, 3), None], "channels"),
    (lambda: Conv(group=2), [(None, 4, 8, 8), (3, 2, 3, 3), None], "group"),
    (lambda: Conv(), [(None, 3, 8, 8), (4, 3, 3), None], "axes"),
    (lambda: Conv(), [(None, 3, 2, 2), (4, 3, 3, 3), None], "larger"),
    (lambda: Conv(), [(None, 3, 8, 8), (4, 3, 3, 3), (5,)], "bias"),
    (lambda: Conv(pads=[1, 1]), [(None, 3, 8, 8), (4, 3, 3, 3), None], "pads"),
    (lambda: MaxPool(kernel_shape=[2]), [(None, 3, 8, 8)], "kernel_shape"),
    (lambda: ConvTranspose(strides=[2, 2], output_padding=[2, 0]),
     [(None, 3, 4, 4), (3, 2, 3, 3), None], "output_padding"),
])
def test_shape_errors_say_what_is_wrong(make, shapes, message):
    specs = [None if s is None else Spec(s, np.float32) for s in shapes]
    with pytest.raises(ShapeError, match=message):
        make().infer(*specs)


@pytest.mark.parametrize("make,attr", [
    (lambda: Conv(pads=[1, 1, 1]), "pads"),
    (lambda: Conv(pads=[1, 1, 1, 1], auto_pad="SAME_UPPER"), "pads"),
    (lambda: Conv(strides=[0, 1]), "strides"),
    (lambda: Conv(auto_pad="SAME"), "auto_pad"),
    (lambda: MaxPool(), "kernel_shape"),
    (lambda: Dropout(ratio=1.0), "ratio"),
    (lambda: Resize(scales=[2.0], sizes=[4]), "sizes"),
])
def test_attribute_errors(make, attr):
    with pytest.raises(AttrError) as info:
        make()
    assert info.value.attr == attr


def test_infer_shapes_of_resample_ops():
    x = Spec((None, 3, 5, 6), np.float32)
    assert Resize(sizes=[7, 4]).infer(x)[0].shape == (None, 3, 7, 4)
    assert Resize(scales=[1, 1, 2.0, 0.5]).infer(x)[0].shape == (None, 3, 10, 3)
    assert Pad(pads=[0, 0, 1, 2, 0, 0, 3, -1]).infer(x)[0].shape == (None, 3, 9, 7)
    pads = Spec((8,), np.int64)
    assert Pad().infer(x, pads)[0].shape == (None, None, None, None)
    # a pads input overrides the attribute
    y = Pad(pads=[1, 1]).forward(Context(), np.ones((2, 3)), np.array([0, 0, 0, 2]))[0]
    assert y.shape == (2, 5)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
def test_pad_recipes_follow_signature_inputs_and_attributes(mode, monkeypatch):
    """A pad keeps its crops, fills and gathers per signature (input shape, pads and axes
    inputs): every call gives np.pad's values whatever came before — other shapes, other pads
    and axes inputs (same values in another dtype too), a changed attribute — and only
    RECIPES signatures are kept; backward still crops or scatters back."""
    monkeypatch.setattr(recipes_module, "RECIPES", 3)
    ctx = Context(grad_enabled=True)
    x = rand(2, 3, 5, 6).astype(np.float32)
    op = Pad(mode=mode, pads=[0, 0, 1, 2, 0, 0, 2, 1])

    def reference(a, widths, value=0.0):
        crop = tuple(slice(max(0, -b), n - max(0, -e)) for n, (b, e) in zip(a.shape, widths))
        grow = [(max(0, b), max(0, e)) for b, e in widths]
        kw = {"constant_values": value} if mode == "constant" else {}
        return np.pad(a[crop], grow, mode=mode, **kw)

    calls = [((x,), [(0, 0), (0, 0), (1, 2), (2, 1)]),
             ((x[:1],), [(0, 0), (0, 0), (1, 2), (2, 1)]),
             ((x, np.array([0, 0, 0, 3, 0, 0, 0, -2])), [(0, 0), (0, 0), (0, 0), (3, -2)]),
             ((x, np.array([0, 0, 0, 3, 0, 0, 0, -2], np.int32)),
              [(0, 0), (0, 0), (0, 0), (3, -2)]),
             ((x, np.array([1, 4, 2, 0]), None, np.array([2, -1])),
              [(0, 0), (0, 0), (1, 2), (4, 0)]),
             ((x, np.array([2, 1]), None, np.array([3])), [(0, 0), (0, 0), (0, 0), (2, 1)]),
             ((x, np.array([2, 1]), None, np.array([2])), [(0, 0), (0, 0), (2, 1), (0, 0)]),
             ((x,), [(0, 0), (0, 0), (1, 2), (2, 1)])]
    for inputs, widths in calls:
        (y,) = op.forward(ctx, *inputs)
        np.testing.assert_array_equal(y, reference(inputs[0], widths))
        assert len(op._recipes) <= 3
        gx = op.backward(ctx, np.ones_like(y))[0]
        assert gx.shape == inputs[0].shape
    op.pads = [0, 0, 0, 0, 0, 0, 1, 1]
    np.testing.assert_array_equal(op.forward(ctx, x)[0],
                                  reference(x, [(0, 0), (0, 0), (0, 1), (0, 1)]))
    assert len(op._recipes) == 1


def _feeds(plan, n=4, seed=0):
    rng = np.random.default_rng(seed)
    shape = plan.graph.node("x")["spec"].shape[1:]
    return {"x": rng.random((n,) + shape, dtype=np.float32),
            "label": rng.integers(0, 10, n).astype(np.int64)}


@pytest.mark.parametrize("name", ["digits_cnn", "lenet"])
def test_cnn_graphs_load_and_run(name, graphs_dir):
    plan = Plan(load_yaml(str(graphs_dir / f"{name}.yaml")))
    out = plan.forward(_feeds(plan))
    assert out["logits"].shape == (4, 10) and out["logits"].dtype == np.float32
    grads = plan.backward({"loss": 1.0})
    assert set(grads) == set(plan.trainable)
    assert all(np.isfinite(g).all() and g.shape == plan.params[k].shape for k, g in grads.items())


def test_digits_cnn_learns(graphs_dir):
    from flowgrad.datasets import load_digits
    x, y = load_digits()
    x, y = x[:256].reshape(-1, 1, 8, 8), y[:256]
    plan = Plan(load_yaml(str(graphs_dir / "digits_cnn.yaml")))
    first = None
    for epoch in range(6):
        for i in range(0, 256, 32):
            loss = plan.forward({"x": x[i:i + 32], "label": y[i:i + 32]})["loss"]
            first = float(loss) if first is None else first
            for k, g in plan.backward({"loss": 1.0}).items():
                plan.params[k] -= 0.1 * g
    assert float(loss) < 0.5 * first


BN_DROPOUT = """
flowgrad: 1
name: bn_dropout
inputs: {x: {shape: [3, 4, 4]}}
params:
  K: {shape: [4, 3, 3, 3], init: {kind: he_normal}}
  gamma: {shape: [4], init: {kind: constant, value: 1.0}}
  beta: {shape: [4], init: {kind: zeros}}
  mean: {shape: [4], init: {kind: zeros}, trainable: false}
  var: {shape: [4], init: {kind: constant, value: 1.0}, trainable: false}
nodes:
  c: {op: conv, in: {x: x, W: K}, pads: [1, 1, 1, 1]}
  bn: {op: batch_norm, in: {x: c, scale: gamma, bias: beta, mean: mean, var: var}, momentum: 0.5}
  d: {op: dropout, in: bn, ratio: 0.5}
  s: {op: global_avg_pool, in: d}
outputs: [bn, d, s]
"""


def test_batch_norm_and_dropout_follow_train_and_eval(tmp_path):
    plan = Plan(load_yaml(str(tmp_path / "bn.yaml"), text=BN_DROPOUT), seed=3)
    x = np.random.default_rng(0).standard_normal((8, 3, 4, 4)).astype(np.float32) * 3 + 1
    assert plan.trainable == ["K", "gamma", "beta"]

    evaluated = plan.eval().forward({"x": x})
    assert np.array_equal(evaluated["d"], evaluated["bn"])           # dropout is the identity
    assert np.array_equal(plan.params["mean"], np.zeros(4))          # eval leaves state alone

    conv = plan.forward({"x": x}, outputs=["c"])["c"]
    out = plan.train().forward({"x": x})
    bn = out["bn"]
    assert np.allclose(bn.mean(axis=(0, 2, 3)), 0, atol=1e-5)       # batch statistics
    assert np.allclose(bn.var(axis=(0, 2, 3)), 1, atol=1e-2)
    assert np.allclose(plan.params["mean"], 0.5 * conv.mean(axis=(0, 2, 3)), atol=1e-5)
    dropped = out["d"] == 0
    assert 0.3 < dropped.mean() < 0.7                                 # about half dropped
    assert np.allclose(out["d"][~dropped], 2 * bn[~dropped])         # survivors scaled by 2
    grads = plan.backward({"s": 1.0})
    assert set(grads) == {"K", "gamma", "beta"}                       # state takes no gradient

    again = Plan(load_yaml(str(tmp_path / "bn.yaml"), text=BN_DROPOUT), seed=3).train()
    assert np.array_equal(again.forward({"x": x})["d"], out["d"])    # seeded masks


def test_batch_norm_state_must_not_be_trainable(tmp_path):
    text = BN_DROPOUT.replace(", trainable: false", "")
    plan = Plan(load_yaml(str(tmp_path / "bn.yaml"), text=text)).train()
    with pytest.raises(FlowgradError, match="non-trainable"):
        plan.forward({"x": np.ones((2, 3, 4, 4), np.float32)})


@pytest.mark.parametrize("attrs", [
    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
    {"kernel_shape": [2, 3], "dilations": [2, 1], "ceil_mode": 1, "strides": [2, 2]},
    {"kernel_shape": [3], "pads": [0, 2]}])
def test_max_pool_evaluation_chunks_agree_with_the_training_path(attrs, monkeypatch):
    """Without gradient max_pool pads chunk by chunk into a scratch buffer."""
    shape = (5, 3, 9) if len(attrs["kernel_shape"]) == 1 else (5, 3, 9, 8)
    x = rand(*shape)
    (whole,) = MaxPool(**attrs).forward(Context(), x)
    monkeypatch.setattr(conv_util, "CHUNK_ELEMENTS", 100)     # one image per chunk
    for _ in range(2):                                        # the scratch buffer is reused
        (chunked,) = MaxPool(**attrs).forward(Context(grad_enabled=False), x)
        np.testing.assert_array_equal(chunked, whole)
