"""lucid's objectives, products and quotients of objectives, batch terms inside expressions:
values against direct numpy (lucid's formulas written plainly), gradients by finite
differences, and the parser."""
from __future__ import annotations

import numpy as np
import pytest

import flowgrad
from flowgrad.errors import FlowgradError
from flowgrad.visualize import (Alignment, ChannelInterpolate, DirectionNeuron, Diversity,
                                Layer, Neuron, Product, Quotient, parse_objective, visualize)
from flowgrad.visualize.batch import BatchTerms
from flowgrad.visualize.objectives import PerImage

RNG = np.random.default_rng(3)


def acts_for(objective, shapes):
    return {r: RNG.normal(size=shapes[r]) for r in objective.refs}


def check_gradient(objective, acts, eps=1e-6):
    """Every returned gradient equals the finite-difference gradient of ``sum(values)``."""
    values, grads = objective(acts)
    assert set(grads) == set(objective.refs)
    for ref in objective.refs:
        d = RNG.normal(size=acts[ref].shape)
        up = dict(acts, **{ref: acts[ref] + eps * d})
        down = dict(acts, **{ref: acts[ref] - eps * d})
        numeric = (objective(up)[0].sum() - objective(down)[0].sum()) / (2 * eps)
        assert np.vdot(grads[ref], d) == pytest.approx(numeric, rel=1e-6, abs=1e-8)
    return values


def lucid_dot_cossim(x, v, cossim_pow):
    """lucid's ``_dot_cossim`` on one position: ``x`` (N, C)."""
    dot = x @ v
    if cossim_pow == 0:
        return dot
    cos = dot / (1e-4 + np.sqrt((x * x).sum(1))) / (1e-4 + np.linalg.norm(v))
    return dot * np.maximum(0.1, cos) ** cossim_pow


@pytest.mark.parametrize("cossim_pow", [0, 1, 2.5])
def test_direction_neuron(cossim_pow):
    v = RNG.normal(size=4)
    a = RNG.normal(size=(5, 4, 6, 7))
    a[0, :, 3, 3] = v * 2.0                       # an aligned image: cosine 1, above the floor
    obj = DirectionNeuron("h", v, cossim_pow=cossim_pow)        # default: the centre (3, 3)
    values = check_gradient(obj, {"h": a})
    np.testing.assert_allclose(values, lucid_dot_cossim(a[:, :, 3, 3], v, cossim_pow))
    at = DirectionNeuron("h", v, 1, 5, cossim_pow=cossim_pow)
    np.testing.assert_allclose(check_gradient(at, {"h": a}),
                               lucid_dot_cossim(a[:, :, 1, 5], v, cossim_pow))
    assert np.count_nonzero(at({"h": a})[1]["h"][:, :, :, :5]) == 0   # one position only
    flat = RNG.normal(size=(3, 4))                # a dense layer: no positions
    np.testing.assert_allclose(check_gradient(DirectionNeuron("d", v), {"d": flat}), flat @ v)
    with pytest.raises(FlowgradError, match="does not fit"):
        DirectionNeuron("h", v, 9, 9)({"h": a})


def test_channel_interpolate_is_lucids_sum():
    a = RNG.normal(size=(5, 3, 4, 4))
    b = RNG.normal(size=(5, 6))
    obj = ChannelInterpolate("a", 1, "b", 4)
    values = check_gradient(obj, {"a": a, "b": b})
    lucid = sum((1 - n / 4) * a[n, 1].mean() + n / 4 * b[n, 4] for n in range(5))
    assert values.sum() == pytest.approx(lucid)
    assert values[0] == pytest.approx(a[0, 1].mean()) and values[-1] == pytest.approx(b[4, 4])
    same = ChannelInterpolate("a", 0, "a", 2)                       # one value, two channels
    assert same.refs == ("a",)
    check_gradient(same, {"a": a})


def test_alignment_is_lucids_penalty():
    a = RNG.normal(size=(7, 2, 3, 3))
    values = check_gradient(Alignment("a", 3.0), {"a": a})
    lucid = -sum(((a[i] - a[i + d]) ** 2).mean() / 3.0 ** d
                 for d in range(1, 5) for i in range(7 - d))
    assert values.sum() == pytest.approx(lucid)
    same = np.broadcast_to(a[:1], a.shape)                           # identical images: 0
    np.testing.assert_array_equal(Alignment("a")({"a": same})[0], 0.0)


def test_products_and_quotients():
    shapes = {"h": (4, 3, 5), "z": (4, 6)}
    product = Neuron("z", 2) * Layer("h")
    quotient = Neuron("z", 1) / (Layer("h") + Neuron("z", 0) * 0.0 + Layer("z"))
    acts = {"h": RNG.normal(size=shapes["h"]), "z": RNG.normal(size=shapes["z"])}
    layer_h = (acts["h"].reshape(4, -1) ** 2).mean(1)
    layer_z = (acts["z"] ** 2).mean(1)
    np.testing.assert_allclose(check_gradient(product, acts), acts["z"][:, 2] * layer_h)
    np.testing.assert_allclose(check_gradient(quotient, acts),
                               acts["z"][:, 1] / (layer_h + layer_z))
    assert isinstance(product, Product) and isinstance(quotient, Quotient)
    assert repr(product) == "z[2] * layer(h)"
    # a product is per image: a batch computes what each image alone does
    values, seeds = PerImage([product, quotient, product, Neuron("z", 0)])(acts, ("h", "z"))
    alone = product({r: acts[r][2:3] for r in ("h", "z")})
    assert values[2] == pytest.approx(alone[0][0])
    np.testing.assert_allclose(seeds["h"][2:3], alone[1]["h"])
    with pytest.raises(FlowgradError, match="depends on the whole batch"):
        Neuron("z", 0) * Diversity("h")


def test_the_parser_accepts_every_new_form():
    product = parse_objective("logits[0] * layer(h1)")
    assert isinstance(product, Product)
    assert isinstance(parse_objective("logits[0] / logits[1]"), Quotient)
    halved = parse_objective("logits[3] / 4")
    assert halved.terms[0][0] == 0.25
    dn = parse_objective("direction_neuron(h1, [1, 0, -1], 2, 3, cossim_pow=1)")
    assert isinstance(dn, DirectionNeuron) and dn.position == (2, 3) and dn.cossim_pow == 1
    ci = parse_objective("channel_interpolate(conv, 1, h.out, 4)")
    assert ci.pairs == (("conv", 1), ("h.out", 4))
    combo = parse_objective("channel_interpolate(c, 0, c, 1) - 100 * alignment(c, 2)")
    assert [w for w, _ in combo.terms] == [1.0, -100.0]
    assert parse_objective("channel(h, 0) + 0.1 * diversity(h)").terms[1][1].refs == ("h",)
    for bad, message in [("2 / logits[0]", "not supported"), ("logits[0] / 0", "zero"),
                         ("logits[0] * diversity(h)", "whole batch"),
                         ("alignment(h, decay=[1])", "expected a number"),
                         ("channel(h, 0, bogus=1)", "bad arguments")]:
        with pytest.raises(FlowgradError, match=message):
            parse_objective(bad)


def test_batch_terms_in_expressions():
    """A batch term written in images' expressions acts on exactly those images: the same
    values and gradients as the term evaluated on their rows alone, added to the per-image
    parts; the same term with another weight makes another group."""
    a = RNG.normal(size=(6, 3, 4, 4))
    specs = ["channel(h, 0) - 0.5 * diversity(h)"] * 3 + ["channel(h, 1) + diversity(h)"] * 2 \
        + ["layer(h)"]
    objectives = [parse_objective(s) for s in specs]
    batch = BatchTerms(objectives)
    values, seeds = PerImage(batch.per_image)({"h": a}, ("h",))
    batch({"h": a}, values, seeds)
    expected = np.array([a[i, 0].mean() for i in range(3)] + [a[i, 1].mean() for i in (3, 4)]
                        + [(a[5] ** 2).mean()])
    g_expected = np.zeros_like(a)
    g_expected[:3, 0] = 1 / 16
    g_expected[3:5, 1] = 1 / 16
    g_expected[5] = 2 * a[5] / a[5].size
    for rows, weight in ((slice(0, 3), -0.5), (slice(3, 5), 1.0)):
        v, g = Diversity("h")({"h": a[rows]})
        expected[rows] += weight * v
        g_expected[rows] += weight * g["h"]
    np.testing.assert_allclose(values, expected, rtol=1e-12)
    np.testing.assert_allclose(seeds["h"], g_expected, rtol=1e-12, atol=1e-15)
    # written twice in one expression: one term of the summed weight
    twice = BatchTerms([parse_objective("diversity(h) + diversity(h)")] * 2)
    assert [(w, list(rows)) for w, _, rows in twice.groups] == [(2.0, [0, 1])]


def test_diversity_inside_expressions_drives_the_images(tmp_path):
    """``channel(...) + w * diversity(act)`` in every image's expression is the batch-wide
    ``diversity=(act, w)`` option exactly, and it changes the images (it is not ignored)."""
    path = tmp_path / "conv.yaml"
    path.write_text("""
flowgrad: 1
name: tiny_conv
inputs: {x: {shape: [3, 6, 6]}}
params:
  K: {shape: [4, 3, 3, 3], init: {kind: he_normal, seed: 1}}
nodes:
  conv: {op: conv, in: {x: x, W: K}}
outputs: [conv]
""")
    plan = flowgrad.compile(flowgrad.load(str(path)), dtype="float64")
    options = dict(steps=6, lr=0.1, seed=2)
    written = visualize(plan, [f"channel(conv, {k}) + 3 * diversity(conv)" for k in range(3)],
                        **options)
    option = visualize(plan, [f"channel(conv, {k})" for k in range(3)],
                       diversity=("conv", 3.0), **options)
    plain = visualize(plan, [f"channel(conv, {k})" for k in range(3)], **options)
    np.testing.assert_array_equal(written.views, option.views)
    np.testing.assert_array_equal(written.values[-1], option.values[-1])
    assert not np.allclose(written.views, plain.views)
    interpolated = visualize(plan, ["channel_interpolate(conv, 0, conv, 1) - alignment(conv)"]
                             * 3, **options)
    assert interpolated.labels[0] == "channel_interpolate(conv, 0, conv, 1) - alignment(conv)"
    assert all(interpolated.values[-1] > interpolated.values[0])
