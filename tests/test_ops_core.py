"""Semantics of the core built-in ops against numpy and explicit formulas.

The finite-difference checks (test_op_gradients.py) prove each backward matches its forward;
these tests prove the forwards compute the right thing, stay finite where they promise to, infer
shapes with the batch axis unknown, and keep float32 as float32.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from flowgrad.errors import AttrError, ShapeError
from flowgrad.op import Context, Spec
from flowgrad.ops import activations, elementwise, linalg, losses, reduce, shape
from flowgrad.plugins import make_registry
from flowgrad.testing import check_infer, gradcheck

from .cases import activations as act_cases, elementwise as ew_cases, linalg as la_cases, \
    losses as loss_cases, reduce as red_cases, shape as shape_cases

REGISTRY = make_registry()
MODULES = (elementwise, activations, shape, reduce, losses, linalg)
OUR_CASES = {}
for _module in (ew_cases, act_cases, shape_cases, red_cases, loss_cases, la_cases):
    OUR_CASES.update(_module.CASES)

CONTRACT = {
    "elementwise": ["add", "sub", "mul", "div", "neg", "pow", "exp", "log", "sqrt", "abs",
                    "reciprocal", "identity"],
    "activations": ["relu", "leaky_relu", "elu", "selu", "sigmoid", "tanh", "softplus",
                    "softsign", "step", "gelu", "erf", "clip", "hard_sigmoid", "hard_swish",
                    "prelu", "softmax", "log_softmax"],
    "shape": ["transpose", "reshape", "flatten", "squeeze", "unsqueeze"],
    "reduce": ["reduce_sum", "reduce_mean", "reduce_max", "reduce_min", "reduce_l2"],
    "losses": ["mse", "softmax_cross_entropy", "binary_cross_entropy"],
    "linalg": ["inverse", "logdet", "trace"],
}


def op(type_, **attrs):
    return REGISTRY.get(type_)(**attrs)


def run(o, *inputs):
    ctx = Context(grad_enabled=True)
    return ctx, o.forward(ctx, *inputs)


def backward(o, ctx, inputs, *grads):
    ctx.needs_input_grad = tuple(x is not None and np.asarray(x).dtype.kind == "f"
                                 for x in inputs)
    return o.backward(ctx, *grads)


# -- registration ---------------------------------------------------------------------------

@pytest.mark.parametrize("family", sorted(CONTRACT))
def test_contract_op_types_are_registered_by_their_family(family):
    module = dict(zip(("elementwise", "activations", "shape", "reduce", "losses", "linalg"),
                      MODULES))[family]
    for type_ in CONTRACT[family]:
        assert REGISTRY.get(type_).__module__ == module.__name__, type_


# -- float32 in, float32 out: every op, every case -------------------------------------------

F32_PARAMS = [pytest.param(t, c, id=f"{t}-{c.id or i}")
              for t, cases in sorted(OUR_CASES.items()) for i, c in enumerate(cases)]


@pytest.mark.parametrize("op_type,case", F32_PARAMS)
def test_float32_stays_float32_through_forward_and_backward(op_type, case):
    o = REGISTRY.get(op_type)(**case.attrs)
    inputs = [x.astype(np.float32) if isinstance(x, np.ndarray) and x.dtype.kind == "f" else x
              for x in case.materialize(seed=1)]
    check_infer(o, inputs)                       # infer predicts float32 too
    ctx, outs = run(o, *inputs)
    for y in outs:
        assert isinstance(y, np.ndarray) and y.dtype == np.float32, (op_type, type(y),
                                                                     getattr(y, "dtype", None))
    grads = backward(o, ctx, inputs, *[np.ones_like(y) for y in outs])
    ports = o.input_names
    for x, g, port in zip(inputs, grads, ports):
        if x is None or x.dtype.kind != "f" or port in o.no_grad_inputs:
            continue
        assert g is not None and g.dtype == np.float32, (op_type, port, g.dtype)
        assert g.shape == x.shape
        assert np.all(np.isfinite(g))


# -- elementwise -----------------------------------------------------------------------------

def test_binary_ops_broadcast_like_numpy_and_unbroadcast_gradients():
    a, b = np.arange(6.0).reshape(2, 3) + 1, np.array([1.0, 2.0, 4.0])
    for t, f in [("add", np.add), ("sub", np.subtract), ("mul", np.multiply),
                 ("div", np.divide), ("pow", np.power)]:
        ctx, (y,) = run(op(t), a, b)
        np.testing.assert_allclose(y, f(a, b))
        ga, gb = backward(op(t), ctx, (a, b), np.ones_like(y))
        assert ga.shape == a.shape and gb.shape == b.shape
    ctx, _ = run(op("mul"), a, b)
    ga, gb = backward(op("mul"), ctx, (a, b), np.ones((2, 3)))
    np.testing.assert_array_equal(ga, np.broadcast_to(b, (2, 3)))
    np.testing.assert_array_equal(gb, a.sum(axis=0))           # summed over the broadcast rows


def test_binary_infer_rejects_incompatible_shapes():
    with pytest.raises(ShapeError, match="cannot be broadcast"):
        op("mul").infer(Spec((None, 3), np.float32), Spec((None, 4), np.float32))
    (spec,) = op("add").infer(Spec((None, 3), np.float32), Spec((3,), np.float32))
    assert spec == Spec((None, 3), np.float32)


def test_pow_exponent_gradient_is_finite_for_nonpositive_base():
    base = np.array([-2.0, 0.0, 0.0, 2.0])
    exponent = np.array([2.0, 0.0, 2.0, 3.0])
    o = op("pow")
    ctx, (y,) = run(o, base, exponent)
    np.testing.assert_array_equal(y, [4.0, 1.0, 0.0, 8.0])
    g_base, g_exp = backward(o, ctx, (base, exponent), np.ones(4))
    np.testing.assert_allclose(g_base, [-4.0, 0.0, 0.0, 12.0])
    np.testing.assert_allclose(g_exp, [0.0, 0.0, 0.0, 8.0 * math.log(2.0)])


def test_pow_keeps_the_base_dtype_with_an_integer_exponent():
    (spec,) = op("pow").infer(Spec((None, 3), np.float32), Spec((), np.int64))
    assert spec.dtype == np.float32
    _, (y,) = run(op("pow"), np.ones((2, 3), np.float32) * 3, np.array(2))
    assert y.dtype == np.float32 and y[0, 0] == 9


def test_unary_elementwise_values():
    x = np.array([0.25, 1.0, 4.0])
    for t, f in [("exp", np.exp), ("log", np.log), ("sqrt", np.sqrt), ("abs", np.abs),
                 ("neg", np.negative), ("reciprocal", np.reciprocal), ("identity", lambda v: v)]:
        np.testing.assert_allclose(run(op(t), x)[1][0], f(x), err_msg=t)


# -- activations -----------------------------------------------------------------------------

def test_step_is_a_hard_threshold_with_zero_gradient():
    x = np.array([[-2.0, 0.0, 1e-9, 3.0]], np.float32)
    o = op("step")
    ctx, (y,) = run(o, x)
    assert y.tolist() == [[0.0, 0.0, 1.0, 1.0]] and y.dtype == np.float32
    (gx,) = backward(o, ctx, (x,), np.ones_like(y))
    assert gx.shape == x.shape and not gx.any()


def test_activation_values_match_formulas():
    x = np.linspace(-5, 5, 41)
    expected = {
        "relu": np.maximum(x, 0),
        "leaky_relu": np.where(x > 0, x, 0.01 * x),
        "elu": np.where(x > 0, x, np.exp(x) - 1),
        "selu": 1.05070102214813232421875 * np.where(x > 0, x, 1.67326319217681884765625
                                                     * (np.exp(x) - 1)),   # ONNX defaults
        "sigmoid": 1 / (1 + np.exp(-x)),
        "tanh": np.tanh(x),
        "softplus": np.log1p(np.exp(x)),
        "softsign": x / (1 + np.abs(x)),
        "erf": np.array([math.erf(v) for v in x]),
        "gelu": np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x]),
        "hard_sigmoid": np.clip(0.2 * x + 0.5, 0, 1),
        "hard_swish": x * np.clip(x + 3, 0, 6) / 6,
    }
    for t, want in expected.items():
        np.testing.assert_allclose(run(op(t), x)[1][0], want, rtol=1e-12, atol=1e-14,
                                   err_msg=t)
    tanh_gelu = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    np.testing.assert_allclose(run(op("gelu", approximate="tanh"), x)[1][0], tanh_gelu)
    np.testing.assert_allclose(run(op("clip", min=-1.0, max=2.0), x)[1][0], np.clip(x, -1, 2))


def test_erf_is_accurate_over_the_whole_line():
    x = np.concatenate([np.linspace(-10, 10, 4001), [2.999999, 3.0, 3.000001, -3.0]])
    want = np.array([math.erf(v) for v in x])
    np.testing.assert_allclose(activations.erf(x), want, rtol=0, atol=4e-15)


def test_saturating_activations_stay_finite_at_extremes():
    x = np.array([-1e4, -800.0, 0.0, 800.0, 1e4], np.float32)
    for t in ("sigmoid", "softplus", "elu", "selu", "tanh", "gelu", "softsign", "erf"):
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            ctx, (y,) = run(op(t), x)
            (g,) = backward(op(t), ctx, (x,), np.ones_like(y))
        assert np.all(np.isfinite(y)) and np.all(np.isfinite(g)), t
    np.testing.assert_array_equal(run(op("softplus"), x)[1][0][[0, 4]], [0.0, 1e4])


def test_prelu_slope_broadcasts_per_channel():
    x = np.array([[-1.0, 2.0, -3.0], [4.0, -5.0, 6.0]])
    slope = np.array([0.1, 0.2, 0.3])
    o = op("prelu")
    ctx, (y,) = run(o, x, slope)
    np.testing.assert_allclose(y, [[-0.1, 2.0, -0.9], [4.0, -1.0, 6.0]])
    gx, gs = backward(o, ctx, (x, slope), np.ones_like(y))
    np.testing.assert_allclose(gs, [-1.0, -5.0, -3.0])
    with pytest.raises(ShapeError):
        o.infer(Spec((None, 3), np.float32), Spec((4,), np.float32))


def test_softmax_and_log_softmax_are_stable_and_normalised():
    x = np.array([[1e4, 0.0, -1e4], [3.0, 1.0, 2.0]], np.float32)
    _, (p,) = run(op("softmax"), x)
    _, (lp,) = run(op("log_softmax"), x)
    assert np.all(np.isfinite(p)) and np.all(np.isfinite(lp))
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-6)
    np.testing.assert_allclose(p[1], np.exp(x[1]) / np.exp(x[1]).sum(), rtol=1e-6)
    np.testing.assert_allclose(lp[0], [0.0, -1e4, -2e4])
    _, (p0,) = run(op("softmax", axis=0), x.astype(np.float64))
    np.testing.assert_allclose(p0.sum(axis=0), 1)
    with pytest.raises(ShapeError):
        op("softmax", axis=2).infer(Spec((None, 3), np.float32))


def test_clip_rejects_inverted_bounds():
    with pytest.raises(AttrError):
        op("clip", min=1.0, max=0.0)


# -- shape -----------------------------------------------------------------------------------

@pytest.mark.parametrize("target,in_shape,out_shape,inferred", [
    ([0, -1], (2, 3, 4), (2, 12), (None, 12)),
    ([0, 3, -1], (2, 12), (2, 3, 4), (None, 3, 4)),
    ([0, 0, 2, 2], (2, 3, 4), (2, 3, 2, 2), (None, 3, 2, 2)),
    ([-1, 4], (2, 3, 4), (6, 4), (None, 4)),
    ([-1], (2, 3), (6,), (None,)),
])
def test_reshape_onnx_semantics_with_unknown_batch(target, in_shape, out_shape, inferred):
    x = np.arange(math.prod(in_shape), dtype=np.float32).reshape(in_shape)
    o = op("reshape", shape=target)
    (y,) = run(o, x, None)[1]
    assert y.shape == out_shape
    np.testing.assert_array_equal(y.ravel(), x.ravel())
    (spec,) = o.infer(Spec((None,) + in_shape[1:], np.float32), None)
    assert spec.shape == inferred
    check_infer(o, [x, None])


@pytest.mark.parametrize("target,in_shape", [([0, 5], (None, 12)), ([5, -1], (2, 12)),
                                             ([-1, -1], (None, 4)), ([0, 0, 0], (None, 4)),
                                             ([-2, 4], (None, 4))])
def test_reshape_rejects_impossible_targets(target, in_shape):
    with pytest.raises(ShapeError):
        op("reshape", shape=target).infer(Spec(in_shape, np.float32), None)


def test_reshape_allowzero_makes_zero_a_size():
    x = np.zeros((0, 3))
    o = op("reshape", shape=[3, 0], allowzero=True)
    assert run(o, x, None)[1][0].shape == (3, 0)
    assert o.infer(Spec((0, 3), np.float64), None)[0].shape == (3, 0)
    assert run(op("reshape", shape=[0, 3]), np.zeros((2, 3)), None)[1][0].shape == (2, 3)


def test_reshape_shape_input_overrides_the_attribute():
    x = np.arange(24.0).reshape(2, 3, 4)
    o = op("reshape", shape=[0, -1])
    ctx, (y,) = run(o, x, np.array([0, 4, -1], np.int64))
    assert y.shape == (2, 4, 3)
    gx, gshape = backward(o, ctx, (x, None), np.ones_like(y))
    assert gx.shape == x.shape and gshape is None
    (spec,) = o.infer(Spec((None, 3, 4), np.float64), Spec((3,), np.int64))
    assert spec.ndim == 3
    check_infer(o, [x, np.array([0, 4, -1], np.int64)], batch_axis=False)
    gradcheck(op("reshape"), [x, np.array([6, 4])])
    with pytest.raises(ShapeError, match="integer"):
        o.infer(Spec((None, 3, 4), np.float64), Spec((3,), np.float32))


def test_flatten_onnx_semantics():
    x = np.arange(24.0).reshape(2, 3, 4)
    for axis, want, inferred in [(1, (2, 12), (None, 12)), (0, (1, 24), (1, None)),
                                 (2, (6, 4), (None, 4)), (-1, (6, 4), (None, 4)),
                                 (3, (24, 1), (None, 1))]:
        o = op("flatten", axis=axis)
        (y,) = run(o, x)[1]
        assert y.shape == want
        np.testing.assert_array_equal(y.ravel(), x.ravel())
        assert o.infer(Spec((None, 3, 4), np.float64))[0].shape == inferred
    with pytest.raises(ShapeError):
        op("flatten", axis=4).infer(Spec((None, 3, 4), np.float64))


def test_transpose_squeeze_unsqueeze():
    x = np.arange(24.0).reshape(2, 3, 4)
    assert run(op("transpose"), x)[1][0].shape == (4, 3, 2)
    np.testing.assert_array_equal(run(op("transpose", perm=[0, 2, 1]), x)[1][0],
                                  x.transpose(0, 2, 1))
    with pytest.raises(ShapeError, match="permutation"):
        op("transpose", perm=[0, 0, 1]).infer(Spec((None, 3, 4), np.float64))
    assert op("unsqueeze", axes=[0, -1]).infer(Spec((None, 3), np.float64))[0].shape == \
        (1, None, 3, 1)
    assert run(op("unsqueeze", axes=[1, 3]), x)[1][0].shape == (2, 1, 3, 1, 4)
    y = np.zeros((1, 3, 1))
    assert run(op("squeeze"), y)[1][0].shape == (3,)
    check_infer(op("squeeze"), [y], batch_axis=False)
    gradcheck(op("squeeze"), [y])
    with pytest.raises(ShapeError, match="ambiguous"):
        op("squeeze").infer(Spec((None, 1, 3), np.float64))
    with pytest.raises(ShapeError, match="not 1"):
        op("squeeze", axes=[1]).infer(Spec((None, 3), np.float64))


# -- reductions ------------------------------------------------------------------------------

def test_reductions_match_numpy():
    x = np.random.default_rng(0).standard_normal((2, 3, 4))
    for t, f in [("reduce_sum", np.sum), ("reduce_mean", np.mean), ("reduce_max", np.max),
                 ("reduce_min", np.min),
                 ("reduce_l2", lambda v, axis, keepdims: np.sqrt(np.sum(v * v, axis=axis,
                                                                        keepdims=keepdims)))]:
        for axes, keep in [(None, False), ((1,), False), ((0, 2), True), ((-1,), True)]:
            o = op(t, axes=axes, keepdims=keep)
            (y,) = run(o, x)[1]
            want = f(x, axis=axes, keepdims=keep)
            assert isinstance(y, np.ndarray) and y.shape == np.shape(want)
            np.testing.assert_allclose(y, want)
            check_infer(o, [x])


def test_reduce_max_splits_the_gradient_among_ties():
    x = np.array([[1.0, 3.0, 3.0], [2.0, 0.0, -1.0]])
    o = op("reduce_max", axes=[1])
    ctx, (y,) = run(o, x)
    (g,) = backward(o, ctx, (x,), np.array([1.0, 2.0]))
    np.testing.assert_array_equal(g, [[0.0, 0.5, 0.5], [2.0, 0.0, 0.0]])


def test_reduce_max_min_of_an_empty_set_is_their_identity():
    x = np.zeros((2, 0, 4), np.float32)
    (y,) = run(op("reduce_max", axes=[1]), x)[1]
    assert y.shape == (2, 4) and y.dtype == np.float32 and np.all(y == -np.inf)
    (y,) = run(op("reduce_min", axes=[1]), x)[1]
    assert np.all(y == np.inf)
    assert run(op("reduce_max"), np.zeros((0,), np.int64))[1][0] == np.iinfo(np.int64).min


def test_reduce_l2_gradient_at_zero_is_zero():
    x = np.zeros((2, 3))
    o = op("reduce_l2", axes=[1])
    ctx, (y,) = run(o, x)
    (g,) = backward(o, ctx, (x,), np.ones(2))
    assert not g.any() and np.all(np.isfinite(g))


def test_reduce_rejects_bad_axes():
    with pytest.raises(ShapeError):
        op("reduce_sum", axes=[2]).infer(Spec((None, 3), np.float64))
    with pytest.raises(ShapeError):
        op("reduce_sum", axes=[1, -1]).infer(Spec((None, 3), np.float64))


# -- losses ----------------------------------------------------------------------------------

def test_softmax_cross_entropy_is_finite_and_exact_for_huge_logits():
    logits = np.array([[1e4, 0.0, -1e4], [0.0, 1e4, 1e4], [-1e4, -1e4, 1e4]], np.float32)
    labels = np.array([0, 2, 0])
    o = op("softmax_cross_entropy")
    ctx, (loss,) = run(o, logits, labels)
    assert loss.dtype == np.float32 and loss.shape == ()
    np.testing.assert_allclose(loss, (0.0 + math.log(2) + 2e4) / 3, rtol=1e-6)
    g, _ = backward(o, ctx, (logits, None), np.float32(1.0))
    np.testing.assert_allclose(g, np.array([[0, 0, 0], [0, 0.5, -0.5], [-1, 0, 1]]) / 3,
                               atol=1e-7)
    one_hot = np.eye(3)[labels]
    _, (loss_1h,) = run(o, logits, one_hot.astype(np.float32))
    np.testing.assert_allclose(loss_1h, loss, rtol=1e-6)


def test_softmax_cross_entropy_matches_the_seed_example():
    logits = np.array([[-4.0, 8.0, 4.0]])
    _, (loss,) = run(op("softmax_cross_entropy"), logits, np.array([2]))
    assert round(float(loss), 3) == 4.018


def test_mse_half_sum_and_mean_values():
    rng = np.random.default_rng(3)
    y, t = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    _, (half,) = run(op("mse", reduction="half_sum"), y, t)
    np.testing.assert_allclose(half, 0.5 * np.linalg.norm(y - t) ** 2)
    _, (mean,) = run(op("mse"), y, t)
    np.testing.assert_allclose(mean, np.mean((y - t) ** 2))
    ctx, _ = run(op("mse", reduction="half_sum"), y, t)
    gy, gt = backward(op("mse", reduction="half_sum"), ctx, (y, t), np.array(1.0))
    np.testing.assert_allclose(gy, y - t)
    np.testing.assert_allclose(gt, t - y)


def test_binary_cross_entropy_probabilities_and_logits_agree():
    rng = np.random.default_rng(4)
    z = rng.standard_normal((4, 3))
    t = rng.uniform(size=(4, 3))
    p = 1 / (1 + np.exp(-z))
    want = -np.mean(t * np.log(p) + (1 - t) * np.log(1 - p))
    np.testing.assert_allclose(run(op("binary_cross_entropy"), p, t)[1][0], want)
    np.testing.assert_allclose(run(op("binary_cross_entropy", from_logits=True), z, t)[1][0],
                               want)
    total = run(op("binary_cross_entropy", reduction="sum"), p, t)[1][0]
    np.testing.assert_allclose(total, want * 12)


def test_binary_cross_entropy_stays_finite_at_the_extremes():
    p = np.array([0.0, 1.0, 0.0, 1.0], np.float32)
    t = np.array([0.0, 1.0, 1.0, 0.0], np.float32)
    o = op("binary_cross_entropy")
    ctx, (loss,) = run(o, p, t)
    assert np.isfinite(loss) and loss.dtype == np.float32
    q = np.float32(1 - 1e-7)                         # the clamp, as float32 rounds it
    np.testing.assert_allclose(loss, (-math.log(1e-7) - math.log(1 - float(q))) / 4, rtol=1e-5)
    gp, gt = backward(o, ctx, (p, t), np.float32(1.0))
    assert np.all(np.isfinite(gp)) and np.all(np.isfinite(gt))
    z = np.array([-1e4, 1e4, -800.0, 800.0], np.float32)
    o = op("binary_cross_entropy", from_logits=True, reduction="sum")
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        ctx, (loss,) = run(o, z, t)
        gz, _ = backward(o, ctx, (z, t), np.float32(1.0))
    np.testing.assert_allclose(loss, 800.0 + 800.0)
    np.testing.assert_allclose(gz, [0.0, 0.0, -1.0, 1.0])


def test_loss_infer_is_scalar_and_checks_shapes():
    for t in ("mse", "binary_cross_entropy"):
        assert op(t).infer(Spec((None, 3), np.float32), Spec((None, 3), np.float32)) == \
            (Spec((), np.float32),)
        with pytest.raises(ShapeError):
            op(t).infer(Spec((None, 3), np.float32), Spec((None, 4), np.float32))


# -- linear algebra --------------------------------------------------------------------------

def test_inverse_logdet_trace_match_numpy():
    rng = np.random.default_rng(5)
    a = 3 * np.eye(4) + 0.3 * rng.standard_normal((2, 4, 4))
    a[1] *= -1                                       # det of a 4x4 keeps its sign: flip a row
    a[1, 0] *= -1
    np.testing.assert_allclose(run(op("inverse"), a)[1][0], np.linalg.inv(a))
    (ld,) = run(op("logdet"), a)[1]
    assert ld.shape == (2,)
    np.testing.assert_allclose(ld, np.log(np.abs(np.linalg.det(a))))
    assert np.linalg.det(a[1]) < 0
    (tr,) = run(op("trace"), a)[1]
    np.testing.assert_allclose(tr, np.trace(a, axis1=1, axis2=2))
    assert op("logdet").infer(Spec((None, 4, 4), np.float32)) == (Spec((None,), np.float32),)
    with pytest.raises(ShapeError, match="square"):
        op("inverse").infer(Spec((None, 3, 4), np.float32))
    with pytest.raises(ShapeError):
        op("trace").infer(Spec((None,), np.float32))


def test_logdet_gradient_is_inverse_transpose():
    a = np.array([[2.0, 1.0], [0.5, 3.0]])
    o = op("logdet")
    ctx, _ = run(o, a)
    (g,) = backward(o, ctx, (a,), np.array(1.0))
    np.testing.assert_allclose(g, np.linalg.inv(a).T)


def test_a_transpose_of_a_constant_is_row_major_and_of_anything_else_a_view():
    """Transposing a constant of the plan (a frozen plan's param) materialises it row-major,
    for the products reading it; a live value stays a view of its input."""
    from flowgrad.backend import CPUBackend
    W = np.arange(12, dtype=np.float32).reshape(3, 4)
    op = shape.Transpose()
    (live,) = op.forward(Context(False, False, None, CPUBackend()), W)
    (const,) = op.forward(Context(False, False, None, CPUBackend(constants=[W])), W)
    assert np.shares_memory(live, W) and not live.flags.c_contiguous
    assert const.flags.c_contiguous and not np.shares_memory(const, W)
    np.testing.assert_array_equal(const, W.T)
    backend = CPUBackend(constants=[W])             # made once per plan, read-only
    (first,) = op.forward(Context(False, False, None, backend), W)
    (again,) = op.forward(Context(False, False, None, backend), W)
    assert again is first and not first.flags.writeable
