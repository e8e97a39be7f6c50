"""Every kind of extension goes through one registration path: a plugin adds a schedule, a
parameterization, a transform and a data loader, each is used where the built-ins are, and a
name that clashes with a built-in is an error naming both plugins."""
from __future__ import annotations

import numpy as np
import pytest

import flowgrad
from flowgrad.data import Dataset, load_data
from flowgrad.errors import FlowgradError, PluginError
from flowgrad.loaders.yaml_loader import load_yaml
from flowgrad.optim import Schedule, make_schedule, schedule_kinds
from flowgrad.plugins import KINDS, make_registry
from flowgrad.visualize import Pipeline, parse_transforms


class Halving(Schedule):
    """Halve the rate every ``every`` steps."""

    kind = "halving"
    defaults = {"every": 2}

    def rate(self, step):
        return self.lr * 0.5 ** (step // self.settings["every"])


class Constant01:
    """A parameterization: the image is the parameter plus 0.1 (an easy-to-check map)."""

    def __init__(self, shape, sd, decay):
        self.shape, self.sd = shape, sd

    def init(self, rng):
        return np.zeros(self.shape)

    def forward(self, p):
        return p + 0.1, lambda g: 2 * g       # backward deliberately distinct from identity


class Flip:
    """A transform: mirror every image left-right (its own transpose)."""

    identity = False

    def __init__(self, value):
        self.on = value in ("1", "yes", "true")

    def apply(self, x, rngs):
        if not self.on:
            return x, lambda g: g
        return x[..., ::-1], lambda g: g[..., ::-1]


def _squares(spec):
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    return Dataset(x, (x[:, 0] > 5).astype(np.int64), name=spec)


class Everything:
    """One plugin object registering one thing of each of these kinds."""

    @flowgrad.hookimpl
    def flowgrad_register_schedules(self, schedules):
        schedules.add(Halving)

    @flowgrad.hookimpl
    def flowgrad_register_parameterizations(self, parameterizations):
        parameterizations.add("plus_tenth", Constant01)

    @flowgrad.hookimpl
    def flowgrad_register_transforms(self, transforms):
        transforms.add("flip", Flip)

    @flowgrad.hookimpl
    def flowgrad_register_data_loaders(self, data_loaders):
        data_loaders.add("squares", _squares)
        data_loaders.add(".sq", _squares)


@pytest.fixture
def registry():
    return make_registry(plugins=[Everything()], autoload=False)


def test_a_plugin_schedule_is_made_by_name_with_the_shared_warm_up(registry):
    assert schedule_kinds(registry)["halving"] is Halving
    schedule = make_schedule(1.0, 100, 10, kind="halving", registry=registry, every=3)
    assert [schedule(s) for s in (0, 2, 3, 6)] == [1.0, 1.0, 0.5, 0.25]
    warm = make_schedule(1.0, 100, 10, kind="halving", registry=registry, warmup_steps=4)
    assert [warm(s) for s in (0, 3, 4)] == [0.25, 1.0, 0.25]       # rate(4) = 0.5 ** 2
    with pytest.raises(FlowgradError, match="schedule 'halving' has no setting 'evry'; did you "
                                            "mean 'every'"):
        make_schedule(1.0, 10, 1, kind="halving", registry=registry, evry=2)


def test_a_plugin_schedule_is_accepted_in_a_train_section(registry):
    graph = load_yaml("s.yaml", text=(
        "flowgrad: 1\ninputs: {x: {shape: [2]}}\nparams: {W: {shape: [2, 2], init: {kind: zeros}}}\n"
        "nodes: {y: {op: dense, in: {x: x, W: W}}}\noutputs: [y]\n"
        "train: {minimize: {y: 1.0}, schedule: {kind: halving, every: 5}}\n"),
        registry=registry)
    from flowgrad.train_config import from_graph
    assert from_graph(graph, registry).schedule == {"kind": "halving", "every": 5}


def test_a_plugin_parameterization_drives_the_pipeline(registry):
    pipeline = Pipeline((1, 2, 2), kind="plus_tenth", range_mode="none", registry=registry)
    image, backward = pipeline.forward(np.zeros((1, 1, 2, 2)))
    np.testing.assert_allclose(image, 0.1)
    np.testing.assert_allclose(backward(np.ones((1, 1, 2, 2))), 2.0)
    with pytest.raises(FlowgradError, match="unknown parameterization 'plus_tenht'; did you mean "
                                            "'plus_tenth'"):
        Pipeline((1, 2, 2), kind="plus_tenht", registry=registry)


def test_a_plugin_transform_chains_after_the_folded_affine_one(registry):
    x = np.arange(8, dtype=np.float64).reshape(1, 1, 2, 4)
    alone = parse_transforms("flip=1", 4, registry=registry)
    out, back = alone.apply(x, [np.random.default_rng(0)])
    np.testing.assert_array_equal(out, x[..., ::-1])
    np.testing.assert_array_equal(back(out), x)
    chain = parse_transforms("pad=1,value=0.5,flip=1", 4, registry=registry)
    assert [type(s).__name__ for s in chain.steps] == ["Transforms", "Flip"]
    assert (chain.steps[0].pad, chain.steps[0].pad_value) == (1, 0.5)   # folded into one
    assert not chain.identity
    g = np.random.default_rng(1).normal(size=x.shape)
    out, back = chain.apply(x, [np.random.default_rng(0)])
    affine, back_affine = chain.steps[0].apply(x, [np.random.default_rng(0)])
    np.testing.assert_allclose(out, affine[..., ::-1])
    np.testing.assert_allclose(back(g), back_affine(g[..., ::-1]))
    with pytest.raises(FlowgradError, match="unknown transform 'flp'; did you mean 'flip'"):
        parse_transforms("flp=1", 4, registry=registry)


def test_a_plugin_data_loader_reads_a_name_and_a_suffix(registry, tmp_path):
    assert load_data("squares", registry=registry).x.shape == (6, 2)
    path = tmp_path / "data.sq"
    path.write_text("anything")
    assert load_data(str(path), registry=registry).name == str(path)
    other = tmp_path / "data.parquet"
    other.write_text("x")
    with pytest.raises(FlowgradError, match=r"unsupported data format '\.parquet' \(use .csv, "
                                            r"\.npy, \.npz, \.sq"):
        load_data(str(other), registry=registry)
    with pytest.raises(FlowgradError, match="give a data set name \\(digits, squares\\)"):
        load_data("nope", registry=registry)


@pytest.mark.parametrize("hook,arg,entry,table,name", [
    ("flowgrad_register_schedules", "schedules", "Cosine2", "schedule", "cosine"),
    ("flowgrad_register_parameterizations", "parameterizations", "'pixels', len",
     "parameterization", "pixels"),
    ("flowgrad_register_transforms", "transforms", "'jitter', len", "transform", "jitter"),
    ("flowgrad_register_data_loaders", "data_loaders", "'.npz', len", "data_loader", ".npz"),
])
def test_a_name_taken_by_a_builtin_is_an_error_naming_both(hook, arg, entry, table, name):
    namespace = {"Schedule": Schedule, "flowgrad": flowgrad}
    exec(f"class Cosine2(Schedule):\n    kind = 'cosine'\n\n"
         f"class Clash:\n    @flowgrad.hookimpl\n    def {hook}(self, {arg}):\n"
         f"        {arg}.add({entry})\n", namespace)
    registry = make_registry(plugins=[namespace["Clash"]()], autoload=False)
    with pytest.raises(PluginError, match=rf"{table.replace('_', ' ')} '{name}' is registered "
                                          rf"by more than one plugin: 'flowgrad' \(flowgrad\) "
                                          rf"and 'Clash'"):
        registry.table(table)


def test_every_kind_has_a_hook_and_a_registrar_argument_pluggy_checks():
    """A misspelt argument is refused when the plugin is registered, naming it."""
    assert {k.hook for k in KINDS} >= {"flowgrad_register_ops", "flowgrad_register_onnx",
                                       "flowgrad_register_data_loaders"}

    class Misspelt:
        @flowgrad.hookimpl
        def flowgrad_register_schedules(self, schedule):
            schedule.add(Halving)

    with pytest.raises(PluginError, match="plugin 'Misspelt' is invalid.*schedule"):
        make_registry(plugins=[Misspelt()], autoload=False)
