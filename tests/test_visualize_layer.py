"""Whole-layer rendering: batches of channels, a labelled grid, resumable parts."""
from __future__ import annotations

import os

import numpy as np
import pytest

import flowgrad
from flowgrad.errors import FlowgradError
from flowgrad.visualize import InactiveObjectiveWarning, render_channels, render_layer, visualize
from flowgrad.visualize.objectives import Neuron

from .conftest import LAYER_OPTIONS as OPTIONS, SIX_CHANNEL_CONV as CONV


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    path = tmp_path_factory.mktemp("graphs") / "conv.yaml"
    path.write_text(CONV)
    return flowgrad.compile(flowgrad.load(str(path)), dtype="float64")


class Stop(Exception):
    pass


def test_a_resumed_render_makes_the_same_grid(plan, tmp_path):
    whole = render_layer(plan, "conv", batch=4, out=str(tmp_path / "a" / "grid.png"), **OPTIONS)
    assert whole.channels == list(range(6)) and whole.views.shape == (6, 3, 8, 8)
    assert whole.resumed == 0
    out = str(tmp_path / "b" / "grid.png")
    calls = []

    def stop_after_one_batch(done, total):
        calls.append((done, total))
        raise Stop

    os.makedirs(os.path.dirname(out))
    with pytest.raises(Stop):
        render_layer(plan, "conv", batch=4, out=out, on_batch=stop_after_one_batch, **OPTIONS)
    assert calls == [(4, 6)] and not os.path.exists(out)
    assert sorted(os.listdir(out + ".parts")) == [f"channel_{k:04d}.npz" for k in range(4)] \
        + ["settings.json"]
    again = render_layer(plan, "conv", batch=4, out=out, **OPTIONS)
    assert again.resumed == 4
    with open(out, "rb") as f, open(whole.files[0], "rb") as g:
        assert f.read() == g.read()
    np.testing.assert_array_equal(np.load(out[:-4] + ".npy"), whole.views)
    # each channel's image is visualize's for that objective with the channel's id
    alone = visualize(plan, [Neuron("conv", 5)], ids=[5], **OPTIONS)
    np.testing.assert_allclose(whole.views[5], alone.views[0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(whole.values[5], alone.values[-1][0], rtol=1e-10)
    with pytest.raises(FlowgradError, match=r"other settings \(options differ\)"):
        render_layer(plan, "conv", batch=4, out=out, **dict(OPTIONS, steps=4))


@pytest.mark.filterwarnings("ignore::flowgrad.visualize.InactiveObjectiveWarning")
def test_render_channels_is_independent_of_batching(plan):
    one = render_channels(plan, "act", [4, 1], batch=1, **OPTIONS)
    two = render_channels(plan, "act", [1, 2, 4], batch=3, **OPTIONS)
    for k in (1, 4):
        np.testing.assert_allclose(one[k].view, two[k].view, rtol=1e-10, atol=1e-12)
        assert one[k].value == pytest.approx(two[k].value, rel=1e-10)


def test_choices_and_mistakes(plan, tmp_path):
    with pytest.warns(InactiveObjectiveWarning, match=r"act\[3\]"):
        some = render_layer(plan, "act", channels=[3, 0], batch=8, out=str(tmp_path / "s.png"),
                            progress=True, **OPTIONS)
    assert some.channels == [3, 0] and some.views.shape == (2, 3, 8, 8)
    assert some.inactive == [3]          # a ReLU channel off for the start: named, kept in parts
    for bad in ([6], [1, 1], []):
        with pytest.raises(FlowgradError, match="distinct ids"):
            render_layer(plan, "act", channels=bad, out=str(tmp_path / "x.png"), **OPTIONS)
    with pytest.raises(FlowgradError, match="does not take thresholds"):
        render_layer(plan, "act", out=str(tmp_path / "y.png"), thresholds=(2,), **OPTIONS)
    with pytest.raises(FlowgradError, match="layer: unknown value"):
        render_layer(plan, "nope", out=str(tmp_path / "z.png"), **OPTIONS)
