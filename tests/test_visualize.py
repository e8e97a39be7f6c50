"""Input optimization: gradients of every stage, batch exactness, the digits target, plugins."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest

import flowgrad
from flowgrad.data import load_data, split
from flowgrad.errors import FlowgradError
from flowgrad.train import Trainer
from flowgrad.visualize import (PENALTIES, Diversity, Fourier, Layer, Neuron, Objective,
                                Pipeline, Transforms, channel, parse_objective,
                                parse_transforms, save_outputs, visualize)
from flowgrad.visualize.objectives import Direction, PerImage, objective_factories
from flowgrad.visualize.optimize import frozen_view
from flowgrad.visualize.settings import from_graph as visualize_settings
from flowgrad.workflows import optimize_images

RNG = np.random.default_rng(0)
GRAPHS = pathlib.Path(__file__).resolve().parent.parent / "graphs"


def dot_test(forward, x, g):
    """<J dx, g> == <dx, J^T g> for a linear (or linearised) map: checks a backward exactly."""
    y, back = forward(x)
    dx = RNG.normal(size=x.shape)
    eps = 1e-6
    jdx = (forward(x + eps * dx)[0] - forward(x - eps * dx)[0]) / (2 * eps)
    assert np.vdot(jdx, g) == pytest.approx(np.vdot(dx, back(g)), rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 7, 9), (1, 1, 10)])
def test_fourier_backward_is_the_adjoint(shape):
    f = Fourier(shape)
    p = RNG.normal(size=(2,) + f.init(RNG).shape)
    g = RNG.normal(size=(2,) + shape)
    dot_test(f.forward, p, g)


@pytest.mark.parametrize("kind,range_mode", [("fourier", "sigmoid"), ("pixels", "sigmoid"),
                                             ("pixels", "none")])
def test_pipeline_backward(kind, range_mode):
    pipe = Pipeline((3, 6, 6), kind=kind, range_mode=range_mode, value_range=(-1, 2))
    p = np.stack([pipe.init(RNG) for _ in range(2)]) * 50
    x, _ = pipe.forward(p)
    if range_mode == "sigmoid":
        assert x.min() >= -1 and x.max() <= 2
    dot_test(pipe.forward, p, RNG.normal(size=x.shape))
    assert pipe.decorrelate


def test_transforms_backward_and_identity():
    x = RNG.normal(size=(3, 2, 9, 9))
    t = Transforms(pad=2, jitter=1, scales=(0.8, 1.2), angle=20, pad_value=0.5)
    seeds = [3, 4, 5]
    forward = lambda v: t.apply(v, [np.random.default_rng(s) for s in seeds])  # noqa: E731
    y, _ = forward(x)
    assert y.shape == x.shape
    dot_test(forward, x, RNG.normal(size=y.shape))
    same, back = Transforms().apply(x, [])
    assert same is x and back(x) is x
    shifted, _ = Transforms(pad=0, jitter=0.0, scales=(1.0, 1.0), angle=0.0,
                            pad_value=0.0).apply(x, [np.random.default_rng(0)] * 3)
    assert np.array_equal(shifted, x)
    strip = RNG.normal(size=(1, 1, 1, 12))
    y1, _ = parse_transforms("default", 12).apply(strip, [np.random.default_rng(0)])
    assert y1.shape == strip.shape and np.all(np.isfinite(y1))


def test_transform_specs():
    t = parse_transforms("pad=2,jitter=1,scale=0.9:1.1,rotate=10,value=0.5", 8)
    assert (t.pad, t.jitter, t.scales, t.angle, t.pad_value) == (2, 1.0, (0.9, 1.1), 10.0, 0.5)
    assert parse_transforms("none", 8).identity
    with pytest.raises(FlowgradError, match="unknown transform"):
        parse_transforms("shear=1", 8)


@pytest.mark.parametrize("name", sorted(PENALTIES))
def test_penalty_gradients(name):
    x = RNG.normal(size=(2, 1, 5, 6)) + 0.3        # away from 0: |x| is smooth there
    values, grad = PENALTIES[name](x, 0.0)
    dx = RNG.normal(size=x.shape)
    eps = 1e-6
    numeric = (PENALTIES[name](x + eps * dx, 0.0)[0].sum()
               - PENALTIES[name](x - eps * dx, 0.0)[0].sum()) / (2 * eps)
    assert numeric == pytest.approx(np.vdot(grad, dx), rel=1e-5)
    assert values.shape == (2,)


@pytest.mark.parametrize("objective", [
    Neuron("a", 1, 2, 3), channel("a", 2), Layer("a"), Direction("a", [1.0, -2.0, 0.5]),
    Direction("a", [1.0, -2.0, 0.5], cosine=True), Diversity("a"),
    2.0 * Neuron("a", 0, 1, 1) - Layer("a") + 0.5 * Diversity("a")])
def test_objective_gradients(objective):
    a = RNG.normal(size=(4, 3, 4, 5))
    values, grads = objective({"a": a})
    assert values.shape == (4,)
    da = RNG.normal(size=a.shape)
    eps = 1e-6
    numeric = (objective({"a": a + eps * da})[0].sum()
               - objective({"a": a - eps * da})[0].sum()) / (2 * eps)
    assert numeric == pytest.approx(np.vdot(grads["a"], da), rel=1e-5, abs=1e-9)


def test_diversity_on_vectors():
    a = RNG.normal(size=(3, 6))
    values, grads = Diversity("a")({"a": a})
    da = RNG.normal(size=a.shape)
    numeric = (Diversity("a")({"a": a + 1e-6 * da})[0].sum()
               - Diversity("a")({"a": a - 1e-6 * da})[0].sum()) / 2e-6
    assert numeric == pytest.approx(np.vdot(grads["a"], da), rel=1e-5)


def test_objective_specs():
    obj = parse_objective("logits[3]")
    assert isinstance(obj, Neuron) and obj.index == (3,)
    combo = parse_objective("channel(conv1, 2) - 0.5 * layer(h1) + 2 * neuron(c.out, 0, 1, 1)")
    assert [w for w, _ in combo.terms] == [1.0, -0.5, 2.0]
    assert combo.refs == ("conv1", "h1", "c.out")
    assert parse_objective("-logits[0]").terms[0][0] == -1.0
    assert parse_objective('layer("my-node")').refs == ("my-node",)
    assert isinstance(parse_objective("cosine(h, [1, 0, -1])"), Direction)
    for bad, message in [("logits", "alone is a value"), ("chanel(c, 1)", "did you mean"),
                         ("logits[1.5]", "integer"), ("2 / logits[1]", "not supported"),
                         ("__import__('os')", "unknown objective"), ("logits[", "cannot parse")]:
        with pytest.raises(FlowgradError, match=message):
            parse_objective(bad)


class Doubled(Objective):
    """A plugin objective: twice a unit."""

    def __init__(self, ref, k):
        self.refs = (ref,)
        self.k = k

    def __call__(self, acts):
        a = acts[self.refs[0]]
        grad = np.zeros_like(a)
        grad[:, self.k] = 2.0
        return 2.0 * a[:, self.k], {self.refs[0]: grad}


class ObjectivePlugin:
    @flowgrad.hookimpl
    def flowgrad_register_objectives(self, objectives):
        objectives.add("doubled", Doubled)


def test_parsed_built_in_objectives_are_reused_and_plugin_ones_are_not():
    """A spec of built-in objectives is parsed once (they are values); a plugin factory is
    called every time, and a mapping that redefines a name is honoured."""
    spec = "channel(c, 2) - layer(h)"
    assert parse_objective(spec) is parse_objective(spec)
    factories = {**objective_factories(), "doubled": Doubled}
    assert parse_objective("doubled(v, 1)", factories) is not parse_objective("doubled(v, 1)",
                                                                              factories)
    mine = {**factories, "channel": lambda ref, k: Doubled(ref, k)}
    assert isinstance(parse_objective("channel(c, 2) - layer(h)", mine).terms[0][1], Doubled)
    assert isinstance(parse_objective("channel(c, 2) - layer(h)").terms[0][1], Neuron)


def test_plugin_objective_through_hook(trained):
    registry = flowgrad.make_registry(plugins=[ObjectivePlugin()], autoload=False)
    assert objective_factories(registry)["doubled"] is Doubled
    result = visualize(trained.plan, ["doubled(logits, 4)"], steps=20, registry=registry)
    assert result.values[-1][0] > result.values[0][0]


@pytest.fixture(scope="module")
def trained():
    graph = flowgrad.load(str(GRAPHS / "digits_mlp.yaml"))
    trainer = Trainer(flowgrad.compile(graph))
    train, _ = split(load_data("digits"), 0.2, seed=0)
    trainer.fit(train)
    return trainer


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def looks_like_its_class(images):
    """Whether each image looks like its digit to someone comparing it with the mean training
    image of every class: the most similar mean (by correlation) is its own class's, and the
    similarity is high.  The start alone (the mean of all digits) fails the first test: it is
    most like the mean 8 for every class."""
    train, _ = split(load_data("digits"), 0.2, seed=0)
    means = [train.x[train.y == k].mean(axis=0) for k in range(10)]
    similar = np.array([[np.corrcoef(image.ravel(), m)[0, 1] for m in means]
                        for image in images])
    return list(similar.argmax(axis=1)) == list(range(10)) and np.diag(similar).mean() >= 0.8


def test_ten_logits_target(trained):
    """The issue's target: image k maximises logit k; classified k, probability >= 0.95; and
    with the graph's visualize: section (start from the mean digit, pixels, smoothness) the
    images look like digits."""
    settings = visualize_settings(trained.plan.graph)
    assert settings.each == "logits" and settings.start == "mean:digits"
    result = optimize_images(trained.plan)
    probs = softmax(trained.predict(result.images))
    assert list(probs.argmax(axis=1)) == list(range(10))
    assert probs[np.arange(10), np.arange(10)].min() >= 0.95
    assert result.images.shape == (10, 64)
    assert 0 <= result.images.min() and result.images.max() <= 1
    assert looks_like_its_class(result.images)
    noise = visualize(trained.plan, [f"logits[{k}]" for k in range(10)],
                      steps=settings.steps, penalties=settings.penalties,
                      transforms=parse_transforms(settings.transforms, 8))
    assert list(softmax(trained.predict(noise.images)).argmax(axis=1)) == list(range(10))


def test_ten_logits_target_on_the_cnn():
    graph = flowgrad.load(str(GRAPHS / "digits_cnn.yaml"))
    trainer = Trainer(flowgrad.compile(graph))
    train, _ = split(load_data("digits"), 0.2, seed=0)
    trainer.fit(train)
    result = optimize_images(trainer.plan)
    assert result.images.shape == (10, 1, 8, 8)
    probs = softmax(trainer.predict(result.images))
    assert list(probs.argmax(axis=1)) == list(range(10))
    assert probs[np.arange(10), np.arange(10)].min() >= 0.95
    assert looks_like_its_class(result.images)


def test_batch_equals_separate_runs_float64(trained):
    """N images chasing N objectives in one batch == N runs alone (float64 rounding)."""
    plan64 = flowgrad.compile(trained.plan.export_graph(), dtype=np.float64)
    objectives = ["logits[1]", "logits[7] - 0.5 * logits[1]", "layer(h2)", "h1[3]"]
    options = dict(steps=25, lr=0.05, transforms=parse_transforms("default", 16),
                   penalties={"l2": 0.5, "tv": 0.5, "blur": 0.1, "l1": 0.01}, seed=11)
    batch = visualize(plan64, objectives, **options)
    assert batch.images.dtype == np.float64
    for i, objective in enumerate(objectives):
        alone = visualize(plan64, [objective], ids=[i], **options)
        np.testing.assert_allclose(alone.images[0], batch.images[i], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(alone.values[-1][0], batch.values[-1][i], rtol=1e-10)
    assert not np.allclose(batch.images[0], batch.images[1])


def test_conv_net_channels_and_colour(tmp_path):
    """Channels of a feature map; a 3-channel input gets decorrelated colour; diversity."""
    path = tmp_path / "conv.yaml"
    path.write_text("""
flowgrad: 1
name: tiny_conv
inputs: {x: {shape: [3, 12, 12]}}
params:
  K: {shape: [4, 3, 3, 3], init: {kind: he_normal}}
nodes:
  conv: {op: conv, in: {x: x, W: K}}
  act: {op: relu, in: conv}
outputs: [act]
""")
    plan = flowgrad.compile(flowgrad.load(str(path)))
    result = visualize(plan, [f"channel(act, {c})" for c in range(4)], steps=30,
                       transforms=parse_transforms("default", 12), diversity=("act", 0.1),
                       snapshot_every=10)
    assert result.views.shape == (4, 3, 12, 12) and result.images.shape == (4, 3, 12, 12)
    assert all(result.values[-1] > result.values[0])
    written = save_outputs(result, str(tmp_path / "grid.png"))
    assert [p.rsplit("/", 1)[1] for p in written] == [
        "grid.png", "grid.npy", "grid_step10.png", "grid_step20.png", "grid_step30.png"]
    assert np.array_equal(np.load(tmp_path / "grid.npy"), result.images)


def test_minimise_and_errors(trained):
    up = visualize(trained.plan, ["logits[2]"], steps=15)
    down = visualize(trained.plan, ["-logits[2]"], steps=15)
    z_up, z_down = trained.predict(up.images)[0, 2], trained.predict(down.images)[0, 2]
    assert z_up > z_down
    with pytest.raises(FlowgradError, match="unknown value 'logit'"):
        visualize(trained.plan, ["logit[0]"], steps=1)
    with pytest.raises(FlowgradError, match="out of range"):
        visualize(trained.plan, ["logits[10]"], steps=1)
    with pytest.raises(FlowgradError, match="unknown parameterization"):
        visualize(trained.plan, ["logits[0]"], steps=1, param="wavelets")


def per_slice(objectives, acts):
    """The definition PerImage must match: objective i called on image i's slice alone."""
    n = len(objectives)
    values = np.zeros(n, dtype=next(iter(acts.values())).dtype)
    seeds = {r: np.zeros_like(a) for r, a in acts.items()}
    for i, obj in enumerate(objectives):
        v, grads = obj({r: acts[r][i:i + 1] for r in obj.refs})
        values[i] = v[0]
        for r, g in grads.items():
            seeds[r][i:i + 1] += g
    return values, seeds


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_objectives_of_a_batch_equal_each_image_alone(dtype):
    """Grouped evaluation (neurons and layers of one value at once) gives each image what its
    objective gives it alone: repeated and negative indices, partial indices, combinations
    mixing groups, a plugin objective and a direction (called image by image)."""
    acts = {"a": RNG.normal(size=(10, 3, 4, 5)).astype(dtype),
            "v": RNG.normal(size=(10, 6)).astype(dtype)}
    objectives = [
        channel("a", 2), channel("a", 0), Neuron("a", 1, 2, 3), Neuron("a", -1, -1, 0),
        2.0 * Neuron("v", 4) - 0.5 * Neuron("v", 4) + Neuron("v", 1),      # the same unit twice
        Layer("a") - Neuron("a", 0, 0, 0), Doubled("v", 3) + 0.25 * Layer("v"),
        Direction("a", [1.0, -2.0, 0.5]) + channel("a", 1), Neuron("v"),
        Neuron("a", -1, -1, 0) + Neuron("a", 2, 3, 0)]                    # one element twice
    refs = ("a", "v")
    values, seeds = PerImage(objectives)(acts, refs)
    expected, expected_seeds = per_slice(objectives, acts)
    assert values.dtype == dtype
    np.testing.assert_allclose(values, expected, rtol=1e-6 if dtype == np.float32 else 1e-13)
    for r in refs:
        np.testing.assert_allclose(seeds[r], expected_seeds[r], rtol=1e-6, atol=1e-7)
    with pytest.raises(FlowgradError, match="out of range"):
        PerImage([channel("a", 3)])({"a": acts["a"][:1]}, ("a",))


def test_frozen_twin_is_built_once_and_shares_the_params(trained):
    """The frozen plan a visualize call runs is cached per plan; its weights are the plan's own
    arrays (training between calls is seen, nothing copied); replacing an array rebuilds it."""
    plan = flowgrad.compile(trained.plan.export_graph())
    net = frozen_view(plan)
    assert frozen_view(plan) is net and net.trainable == []
    assert all(net.graph.node(k)["value"] is v for k, v in plan.params.items())
    before = visualize(plan, ["logits[3]"], steps=5).images
    assert frozen_view(plan) is net
    plan.params["W3"] *= -1.0                   # an in-place update, as an optimizer makes
    flipped = visualize(plan, ["logits[3]"], steps=5).images
    reference = visualize(flowgrad.compile(plan.export_graph()), ["logits[3]"], steps=5).images
    np.testing.assert_array_equal(flipped, reference)
    assert not np.allclose(flipped, before)
    plan.params["W3"] = plan.params["W3"] * -1.0  # a new array: the twin is rebuilt
    assert frozen_view(plan) is not net
    np.testing.assert_array_equal(visualize(plan, ["logits[3]"], steps=5).images, before)
    x = np.zeros((2, 64), np.float32)
    frozen_view(plan).forward({"x": x}, outputs=["logits"])
    assert list(frozen_view(plan).backward({"logits": 1.0}, wrt=["x"])) == ["x"]


CONV_BN = """
flowgrad: 1
name: conv_bn
seed: 0
inputs:
  x: {shape: [2, 6, 6]}
params:
  K1: {shape: [4, 2, 3, 3], init: {kind: he_normal}}
  c1: {shape: [4], init: {kind: uniform, low: -0.5, high: 0.5}}
  g1: {shape: [4], init: {kind: uniform, low: 0.5, high: 2.0}}
  b1: {shape: [4], init: {kind: uniform, low: -0.5, high: 0.5}}
  m1: {shape: [4], init: {kind: uniform, low: -0.5, high: 0.5}, trainable: false}
  v1: {shape: [4], init: {kind: uniform, low: 0.5, high: 2.0}, trainable: false}
  K2: {shape: [3, 4, 3, 3], init: {kind: he_normal}}
  g2: {shape: [3], init: {kind: uniform, low: 0.5, high: 2.0}}
  b2: {shape: [3], init: {kind: uniform, low: -0.5, high: 0.5}}
  m2: {shape: [3], init: {kind: uniform, low: -0.5, high: 0.5}, trainable: false}
  v2: {shape: [3], init: {kind: uniform, low: 0.5, high: 2.0}, trainable: false}
nodes:
  conv1: {op: conv, in: {x: x, W: K1, b: c1}, pads: [1, 1, 1, 1]}
  bn1: {op: batch_norm, in: {x: conv1, scale: g1, bias: b1, mean: m1, var: v1}}
  h1: {op: tanh, in: bn1}
  conv2: {op: conv, in: {x: h1, W: K2}, pads: [1, 1, 1, 1], strides: [2, 2]}
  bn2: {op: batch_norm, in: {x: conv2, scale: g2, bias: b2, mean: m2, var: v2}, epsilon: 0.01}
outputs: [bn2]
"""


def _input_grad(net, ref, x, seed):
    net.forward({"x": x}, outputs=[ref])
    return net.backward({ref: seed}, wrt=["x"])["x"]


def test_frozen_twin_folds_batch_norms_into_the_convs_before_them(tmp_path):
    """In the twin a visualize call runs, each conv read only by a batch norm becomes one conv
    with scaled weights and a bias (no batch norm runs): the same values and input gradients
    as the unfolded network, to rounding; an objective reading a conv or its batch norm keeps
    that pair unfolded; in-place changes of the weights or statistics are seen at the next
    call; and the folded gradient matches finite differences."""
    from flowgrad.visualize.optimize import _FOLDS, frozen
    path = tmp_path / "conv_bn.yaml"
    path.write_text(CONV_BN)
    plan = flowgrad.compile(flowgrad.load(str(path)), dtype=np.float64)
    x = RNG.normal(size=(3, 2, 6, 6))
    seed = RNG.normal(size=(3, 3, 3, 3))
    net = frozen_view(plan)
    assert len(_FOLDS[net]) == 2 and "batch_norm" not in {
        net.graph.op_of(n).type for n in net.graph.ops}
    plain = frozen(plan)
    np.testing.assert_allclose(net.forward({"x": x}, outputs=["conv2"], grad=False)["conv2"],
                               plain.forward({"x": x}, outputs=["bn2"], grad=False)["bn2"],
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(_input_grad(net, "conv2", x, seed),
                               _input_grad(plain, "bn2", x, seed), rtol=1e-12, atol=1e-12)
    # finite differences of the folded twin's input gradient
    f = lambda z: float(np.vdot(net.forward({"x": z}, outputs=["conv2"],  # noqa: E731
                                            grad=False)["conv2"], seed))
    g = _input_grad(net, "conv2", x, seed)
    d = RNG.normal(size=x.shape)
    eps = 1e-6
    assert (f(x + eps * d) - f(x - eps * d)) / (2 * eps) == pytest.approx(np.vdot(g, d),
                                                                          rel=1e-6)
    # an objective on a conv or on its batch norm keeps that pair as it is
    for ref, folds in (("conv2", 1), ("bn2", 1), ("bn1", 1), ("h1", 2)):
        twin = frozen_view(plan, [ref])
        assert len(_FOLDS[twin]) == folds
        assert ref in twin.graph.dag
    assert frozen_view(plan, ["bn2"]) is frozen_view(plan, ["conv2"])   # one twin per pair set
    assert frozen_view(plan) is net
    # training between calls (in place) is seen: the folded weights follow
    plan.params["g1"] *= -1.5
    plan.params["K2"] += 0.25
    plan.params["m2"] -= 0.5
    assert frozen_view(plan) is net
    np.testing.assert_allclose(_input_grad(net, "conv2", x, seed),
                               _input_grad(frozen(plan), "bn2", x, seed), rtol=1e-12, atol=1e-12)
    # visualize: the images through the folded twin equal the unfolded network's to rounding
    objectives = [f"channel(bn2, {c})" for c in range(3)]
    start = RNG.normal(scale=0.1, size=(3, 2, 6, 6))
    ours = visualize(plan, objectives, steps=3, init=start, param="pixels",
                     range_mode="none", optimizer="sgd", lr=0.1)
    reference = start.copy()
    for _ in range(3):
        seeds = np.zeros((3, 3, 3, 3))
        for i in range(3):
            seeds[i, i] = 1.0 / 9
        reference += 0.1 * _input_grad(plain, "bn2", reference, seeds)
    np.testing.assert_allclose(ours.images, reference, rtol=1e-10, atol=1e-12)


def test_a_conv_layer_computes_only_the_channels_its_objectives_read(tmp_path, monkeypatch):
    """Objectives on channels of a conv layer run a twin whose convolution computes only those
    channels: the same images and values as the whole layer (to rounding), the labels as
    written; a whole-layer term, a batch term or another objective downstream keeps every
    channel; in-place weight changes are seen."""
    import importlib
    optimize = importlib.import_module("flowgrad.visualize.optimize")
    path = tmp_path / "conv_bn.yaml"
    path.write_text(CONV_BN)
    plan = flowgrad.compile(flowgrad.load(str(path)), dtype=np.float64)
    graph = plan.graph
    sliced, renumbered = optimize.sliceable(
        graph, [channel("conv1", 3), channel("conv1", -1) + channel("conv1", 1)], ("conv1",))
    assert sliced == {"conv1": (1, 3)}
    assert [o.describe() for o in renumbered] == ["conv1[1]", "conv1[1] + conv1[0]"]
    for objectives, refs in (([channel("conv1", 3), Layer("conv1")], ("conv1",)),
                             ([channel("conv1", 3) - 0.1 * Diversity("conv1")], ("conv1",)),
                             ([channel("conv1", 3), channel("h1", 0)], ("conv1", "h1")),
                             ([channel("conv1", c) for c in range(4)], ("conv1",)),
                             ([channel("bn1", 0)], ("bn1",))):
        assert optimize.sliceable(graph, objectives, refs)[0] == {}

    settings = dict(steps=4, init=RNG.normal(scale=0.1, size=(3, 2, 6, 6)), param="pixels",
                    range_mode="none", optimizer="adam", lr=0.05)
    objectives = ["channel(conv1, 3)", "channel(conv1, 1)", "conv1[3, 2, 2] - channel(conv1, 1)"]

    def run():
        return visualize(plan, objectives, **settings)

    def whole():
        with monkeypatch.context() as m:
            m.setattr(optimize, "sliceable", lambda g, o, r: ({}, list(o)))
            return visualize(flowgrad.compile(plan.export_graph(), dtype=np.float64),
                             objectives, **settings)

    ours, reference = run(), whole()
    net = optimize.frozen_view(plan, ("conv1",), {"conv1": (1, 3)})
    assert net.graph.specs("conv1")[0].shape == (None, 2, 6, 6)
    assert ours.labels == ["conv1[3]", "conv1[1]", "conv1[3, 2, 2] - conv1[1]"]
    np.testing.assert_allclose(ours.images, reference.images, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(np.array(ours.values), np.array(reference.values), rtol=1e-12)
    plan.params["K1"] *= -0.5                   # in place: the sliced weights follow
    plan.params["c1"] += 0.25
    ours, reference = run(), whole()
    assert optimize.frozen_view(plan, ("conv1",), {"conv1": (1, 3)}) is net
    np.testing.assert_allclose(ours.images, reference.images, rtol=1e-12, atol=1e-13)
