"""Reading YAML with libyaml's C parser: the same data, locations and errors as the pure parser.

Every case is read twice, once with each parser, and must give the same graph or the same
report word for word; then a long chain of nodes, each with its own param, is loaded, compiled
and differentiated against numpy.
"""
from __future__ import annotations

import random

import numpy as np
import pytest
import yaml

import flowgrad
from flowgrad.errors import GraphError
from flowgrad.loaders import yaml_source
from flowgrad.loaders.yaml_source import MarkedDict, MarkedList, read_yaml

from . import test_yaml_errors
from .conftest import GRAPHS

GOOD = test_yaml_errors.GOOD
#: (old, new, line, col, fragment) cases of tests/test_yaml_errors.py, reused as they stand
MISTAKES = [args[:2] for args in test_yaml_errors.test_mistake_is_located.pytestmark[0].args[1]]

needs_libyaml = pytest.mark.skipif(yaml_source.CMarkedLoader is None,
                                   reason="PyYAML was built without libyaml")

EDGE_CASES = [
    ("tab as separator", "flowgrad: 1\nnodes:\t{}\n"),
    ("tab indentation", "flowgrad: 1\nnodes:\n\th: {op: relu, in: x}\n"),
    ("tab in a plain value", GOOD.replace("in: fc}", "in: f\tc}")),
    ("form feed", GOOD.replace("h:    {", "h:\x0c    {")),
    ("NUL", GOOD + "\x00"),
    ("lone surrogate", GOOD.replace("relu", "re\ud800lu")),
    ("byte-order mark inside", GOOD.replace("relu", "re\ufefflu")),
    ("byte-order mark first", "\ufeff" + GOOD),
    ("question mark in a flow value", GOOD.replace("relu", "re?lu")),
    ("explicit key", GOOD.replace("  h:    {", "  ? h\n  : {")),
    ("tag with a flow indicator", GOOD.replace("outputs: [h, loss]", "outputs: [h, !, loss]")),
    ("python tag", GOOD.replace("flowgrad: 1", "flowgrad: !!python/name:os.system")),
    ("bad !!int", GOOD.replace("flowgrad: 1", "flowgrad: !!int one")),
    ("impossible date", GOOD.replace("flowgrad: 1", "flowgrad: 2001-13-45")),
    ("!!map on a scalar", GOOD.replace("{op: relu, in: fc}", "!!map relu")),
    ("!!seq on a mapping", GOOD.replace("[h, loss]", "!!seq {h: loss}")),
    ("empty value in a flow mapping", GOOD.replace("{shape: [3]}", "{shape: }")),
    ("empty value before a comma", GOOD.replace("in: {x: x, W: W", "in: {x: , W: W")),
    ("empty key in a flow mapping", GOOD.replace("{op: relu, in: fc}", "{: relu, in: fc}")),
    ("empty block value", GOOD.replace("outputs: [h, loss]", "outputs:")),
    ("non-ASCII before the mistake", GOOD.replace("in: fc}", "in: fcé}  # é")),
    ("wide characters", GOOD.replace("relu", "日本")),
    ("CRLF line ends", GOOD.replace("\n", "\r\n").replace("in: fc}", "in: fcc}")),
    ("CR line ends", GOOD.replace("\n", "\r").replace("in: fc}", "in: fcc}")),
    ("NEL line break", GOOD.replace("\nnodes:", "\x85nodes:")),
    ("unclosed quote", GOOD.replace("{op: relu", "{op: 'relu")),
    ("mapping value where not allowed", GOOD.replace("in: fc}", "in: fc: x}")),
    ("bad indentation", GOOD.replace("  b: {shape", " b: {shape")),
    ("two documents", GOOD + "---\nflowgrad: 1\n"),
    ("undefined alias", GOOD.replace("in: fc}", "in: *fc}")),
    ("anchor and merge", GOOD.replace("  b: {shape: [4], init: {kind: zeros}}",
                                      "  b: &B {shape: [4], init: {kind: zeros}}\n"
                                      "  c: {<<: *B, lr_mult: 2.0}")),
    ("merge key with an override", GOOD.replace("  b: {shape: [4], init: {kind: zeros}}",
                                                 "  b: &B {shape: [4], init: {kind: zeros}}\n"
                                                 "  c: {<<: *B, shape: [5]}")),
    ("merge keys, a list", GOOD.replace("  b: {shape: [4], init: {kind: zeros}}",
                                        "  b: &B {shape: [4], init: {kind: zeros}}\n"
                                        "  c: &C {shape: [5], lr_mult: 2}\n"
                                        "  d:\n    <<: [*C, *B]\n    trainable: false")),
    ("merge key and a duplicate", GOOD.replace("  b: {shape: [4], init: {kind: zeros}}",
                                               "  b: &B {shape: [4], init: {kind: zeros}}\n"
                                               "  c: {<<: *B, shape: [5], shape: [6]}")),
    ("merge key on a scalar", GOOD.replace("  b: {shape: [4], init: {kind: zeros}}",
                                           "  b: &B 4\n  c: {<<: *B}")),
    ("duplicate anchor", GOOD.replace("{kind: zeros}", "&a {kind: zeros}").replace(
        "{kind: glorot_uniform}", "&a {kind: glorot_uniform}")),
    ("directive", "%YAML 1.1\n---\n" + GOOD),
    ("unsupported YAML version", "%YAML 2.0\n---\n" + GOOD),
    ("block scalars", GOOD.replace("outputs: [h, loss]",
                                   "doc: |\n  two\n  lines\nname: >-\n  folded\n  name\n"
                                   "outputs: [h, loss]")),
    ("nesting too deep", "flowgrad: " + "[" * 5000 + "]" * 5000 + "\n"),
    ("nesting at the limit", "flowgrad: " + "[" * 63 + "]" * 63 + "\n"),
    ("nesting past the limit", "flowgrad: " + "[" * 64 + "]" * 64 + "\n"),
    ("block nesting past the limit", "a:\n" + "".join("  " * i + "- b:\n" for i in range(40))),
    ("alias bomb", test_yaml_errors.BOMB),
    ("alias nesting past the limit", "a: &a " + "[" * 40 + "]" * 40 + "\nb: " + "[" * 30
     + "*a" + "]" * 30 + "\n"),
    ("many aliases", "a: &a 1\nb: [" + ", ".join(["*a"] * 1001) + "]\n"),
    ("empty file", ""),
    ("only a comment", "# nothing\n"),
]


def shape_of(value):
    """A value with every location in it, to compare two readings exactly."""
    if isinstance(value, MarkedDict):
        return ("map", value.loc, [(k, value.key_locs[k], value.value_locs[k], shape_of(v))
                                   for k, v in value.items()])
    if isinstance(value, MarkedList):
        return ("seq", value.loc, list(value.item_locs), [shape_of(v) for v in value])
    return (type(value).__name__, repr(value))


def outcome(monkeypatch, loader, text, load=False, tmp_path=None):
    """What reading ``text`` gives with ``loader``: the data with its locations, or the
    error report (any other exception propagates: a user must never see one)."""
    monkeypatch.setattr(yaml_source, "MarkedLoader", loader)
    try:
        if load:
            path = tmp_path / "g.yaml"
            path.write_text(text, encoding="utf-8", errors="surrogatepass")
            return "graph", repr(flowgrad.load(path))
        return "data", shape_of(read_yaml("g.yaml", text)[0])
    except GraphError as e:
        return "error", [(d.loc, d.message) for d in e.diagnostics], str(e)


@needs_libyaml
def test_libyaml_is_used_for_ordinary_files(monkeypatch):
    assert yaml_source.MarkedLoader is yaml_source.CMarkedLoader

    def refuse(*args, **kwargs):
        raise AssertionError("the pure-Python parser was used")
    monkeypatch.setattr(yaml_source.PyMarkedLoader, "__init__", refuse)
    for path in sorted(GRAPHS.glob("*.yaml")):
        read_yaml(str(path))
    flowgrad.load(GRAPHS / "lenet.yaml")


@needs_libyaml
@pytest.mark.parametrize("old,new", MISTAKES)
def test_every_located_mistake_reads_the_same(monkeypatch, tmp_path, old, new):
    """The cases of test_yaml_errors.py, loaded through either parser: the same report."""
    text = GOOD.replace(old, new, 1)
    fast = outcome(monkeypatch, yaml_source.CMarkedLoader, text, load=True, tmp_path=tmp_path)
    pure = outcome(monkeypatch, yaml_source.PyMarkedLoader, text, load=True, tmp_path=tmp_path)
    assert fast[0] == "error"
    assert fast == pure


@needs_libyaml
@pytest.mark.parametrize("name,text", EDGE_CASES, ids=[c[0] for c in EDGE_CASES])
def test_edge_cases_read_the_same(monkeypatch, name, text):
    fast = outcome(monkeypatch, yaml_source.CMarkedLoader, text)
    pure = outcome(monkeypatch, yaml_source.PyMarkedLoader, text)
    assert fast == pure
    if fast[0] == "error":
        assert all(loc is not None for loc, _ in fast[1]) or "invalid YAML" in fast[2]


@needs_libyaml
def test_edge_case_errors_are_located():
    """Characters the reader refuses point at their line and column, shown harmlessly."""
    with pytest.raises(GraphError) as info:
        read_yaml("g.yaml", "a: 1\r\nb: x\x01y\n")
    assert str(info.value).splitlines() == [
        "g.yaml:2:5: error: invalid YAML: unacceptable character #x0001: special characters "
        "are not allowed",
        "    2 | b: x\ufffdy",
        "      |     ^"]
    with pytest.raises(GraphError, match=r"g.yaml:1:4: error: invalid YAML: cannot read "
                                         r"'one' as an integer"):
        read_yaml("g.yaml", "a: !!int one\n")


@needs_libyaml
def test_mutated_graph_files_read_the_same(monkeypatch):
    """Graph files with random edits (the way the differences above were found): whatever
    the pure parser makes of each, reading with libyaml makes exactly the same."""
    rng = random.Random(7)
    seeds = [p.read_text() for p in sorted(GRAPHS.glob("*.yaml"))] + [GOOD]
    seeds += [yaml.safe_dump(yaml.safe_load(t), default_flow_style=False, sort_keys=False)
              for t in seeds]
    pieces = list(":-[]{},#&*|>'\" \n.\r") + [
        "\x85", "\u2028", "\x0c", "é", "  ", "\n  ", ": ", "- ", "---\n", "&a ", "*a", "~",
        "'", "\"\\x41\"", "1e5", "0x1F", "yes", "null", "<<: ", "\r\n", "|\n  ", "2001-12-14"]
    kinds = {}
    for _ in range(150):
        text = rng.choice(seeds)
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(text) + 1)
            if rng.random() < 0.6:
                text = text[:i] + rng.choice(pieces) + text[i:]
            else:
                text = text[:i] + text[i + rng.randint(1, 3):]
        fast = outcome(monkeypatch, yaml_source.CMarkedLoader, text)
        pure = outcome(monkeypatch, yaml_source.PyMarkedLoader, text)
        assert fast == pure, repr(text)
        kinds[fast[0]] = kinds.get(fast[0], 0) + 1
    assert kinds.get("data", 0) > 20 and kinds.get("error", 0) > 20


def chain_yaml(n: int, width: int = 4) -> str:
    """n nodes in a line, alternately ``dense`` (its own W) and ``add`` (its own bias)."""
    lines = ["flowgrad: 1", "name: chain", f"inputs: {{x: {{shape: [{width}]}}}}", "params:"]
    for i in range(n):
        if i % 2 == 0:
            lines.append(f"  W{i}: {{shape: [{width}, {width}], init: {{kind: glorot_uniform}}}}")
        else:
            lines.append(f"  b{i}: {{shape: [{width}], init: {{kind: uniform}}}}")
    lines.append("nodes:")
    prev = "x"
    for i in range(n):
        if i % 2 == 0:
            lines.append(f"  n{i}: {{op: dense, in: {{x: {prev}, W: W{i}}}}}")
        else:
            lines.append(f"  n{i}: {{op: add, in: [{prev}, b{i}]}}")
        prev = f"n{i}"
    lines += [f"  loss: {{op: reduce_mean, in: {prev}}}", "outputs: [loss]"]
    return "\n".join(lines) + "\n"


def test_long_chain_loads_compiles_and_differentiates(tmp_path):
    """2,000 nodes, each with a trainable param: every gradient agrees with numpy."""
    n = 2000
    path = tmp_path / "chain.yaml"
    path.write_text(chain_yaml(n))
    plan = flowgrad.compile(flowgrad.load(path), dtype=np.float64)
    assert len(plan.trainable) == n
    x = np.random.default_rng(0).normal(size=(3, 4))
    loss = plan.forward({"x": x})["loss"]
    grads = plan.backward({"loss": 1.0})
    assert sorted(grads) == sorted(plan.trainable)

    p = plan.params
    acts = [x]
    for i in range(n):
        acts.append(acts[-1] @ p[f"W{i}"] if i % 2 == 0 else acts[-1] + p[f"b{i}"])
    np.testing.assert_allclose(loss, acts[-1].mean(), rtol=1e-10)
    g = np.full_like(acts[-1], 1.0 / acts[-1].size)
    for i in reversed(range(n)):
        if i % 2 == 0:
            np.testing.assert_allclose(grads[f"W{i}"], acts[i].T @ g, rtol=1e-8, atol=1e-300)
            g = g @ p[f"W{i}"].T
        else:
            np.testing.assert_allclose(grads[f"b{i}"], g.sum(axis=0), rtol=1e-8, atol=1e-300)
