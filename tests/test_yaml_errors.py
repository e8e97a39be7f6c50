"""Every user mistake in a YAML graph gives path:line:col, the source line and a caret."""
from __future__ import annotations

import textwrap

import pytest

import flowgrad
from flowgrad.errors import GraphError

GOOD = """\
flowgrad: 1
inputs: {x: {shape: [3]}, label: {shape: [], dtype: int64}}
params:
  W: {shape: [3, 4], init: {kind: glorot_uniform}}
  b: {shape: [4], init: {kind: zeros}}
nodes:
  fc:   {op: dense, in: {x: x, W: W, b: b}}
  h:    {op: relu, in: fc}
  loss: {op: softmax_cross_entropy, in: {logits: h, labels: label}}
outputs: [h, loss]
"""


def load_text(tmp_path, text):
    path = tmp_path / "g.yaml"
    path.write_text(textwrap.dedent(text))
    return flowgrad.load(path), str(path)


def errors_of(tmp_path, text):
    path = tmp_path / "g.yaml"
    path.write_text(text)
    with pytest.raises(GraphError) as info:
        flowgrad.load(path)
    return [(d.loc.line, d.loc.col, d.message) for d in info.value.diagnostics], str(info.value)


def test_good_graph_loads(tmp_path):
    graph, _ = load_text(tmp_path, GOOD)
    assert graph.outputs == ["h", "loss"]


@pytest.mark.parametrize("old,new,line,col,fragment", [
    ("{op: relu, in: fc}", "{op: relu, in: fcc}", 8, 24, "unknown value 'fcc'; did you mean 'fc'?"),
    ("{op: relu, in: fc}", "{op: reluu, in: fc}", 8, 14, "unknown op 'reluu'; did you mean 'relu'?"),
    ("{op: relu, in: fc}", "{op: relu, in: fc, alpha: 1}", 8, 28, "has no attribute 'alpha'"),
    ("init: {kind: zeros}}", "init: {kind: zeros}, lr_mul: 2}", 5, 40,
     "unknown key 'lr_mul' in param 'b'; did you mean 'lr_mult'?"),
    ("kind: glorot_uniform", "kind: glorot", 4, 35, "did you mean 'glorot_uniform'?"),
    ("shape: [3, 4]", "shape: [3, x]", 4, 14, "'shape' of param 'W' must be a list of"),
    ("labels: label}", "labls: label}", 9, 53, "has no input 'labls'; did you mean 'labels'?"),
    ("outputs: [h, loss]", "outputs: [h, los]", 10, 14, "unknown value 'los'; did you mean 'loss'?"),
    ("flowgrad: 1", "flowgrad: 2", 1, 11, "unsupported schema version 2"),
    ("inputs: {x:", "inputz: {x:", 2, 1, "unknown key 'inputz' in the graph; did you mean 'inputs'?"),
    ("{op: dense, in: {x: x, W: W, b: b}}", "{op: dense, in: x}", 7, 25,
     "is missing input(s) W"),
    ("{op: relu, in: fc}", "{op: relu, in: [fc, W]}", 8, 24, "takes at most 1 input(s)"),
    ("{op: relu, in: fc}", "{op: relu, in: fc}\n  W: {op: relu, in: fc}", 9, 3,
     "'W' is already declared at line 4"),
    ("{op: relu, in: fc}", "{op: relu, in: fc}\n  h: {op: relu, in: fc}", 9, 3,
     "duplicate key 'h' (first defined at line 8)"),
    ("{op: relu, in: fc}", "{op: relu, in: fc}\n  no: {op: relu, in: fc}", 9, 3,
     "key 'no' is not a string (YAML reads it as a boolean)"),
    ("{op: relu, in: fc}", "{op: relu, in: fc, in: fc}", 8, 28, "duplicate key 'in'"),
    ("{op: relu, in: fc}", "{op: relu, in: [fc}", 8, 27, "invalid YAML"),
])
def test_mistake_is_located(tmp_path, old, new, line, col, fragment):
    text = GOOD.replace(old, new, 1)
    assert text != GOOD
    found, report = errors_of(tmp_path, text)
    assert any(l == line and c == col and fragment in m for l, c, m in found), report


def test_report_shows_source_line_and_caret(tmp_path):
    _, report = errors_of(tmp_path, GOOD.replace("in: fc}", "in: fcc}"))
    path = str(tmp_path / "g.yaml")
    assert report.splitlines() == [
        f"{path}:8:24: error: unknown value 'fcc'; did you mean 'fc'?",
        "    8 |   h:    {op: relu, in: fcc}",
        "      |                        ^",
    ]


def test_all_errors_of_a_pass_are_reported_together(tmp_path):
    text = GOOD.replace("in: fc}", "in: fcc}").replace("kind: zeros", "kind: zero")
    text = text.replace("outputs: [h, loss]", "outputs: [h, loss, nope]")
    found, report = errors_of(tmp_path, text)
    assert len(found) == 3, report
    assert report.endswith("3 errors")


def test_failed_declaration_does_not_cascade(tmp_path):
    # W's initializer is wrong: the error is reported once, not again where W is used
    found, report = errors_of(tmp_path, GOOD.replace("kind: glorot_uniform", "kind: nope"))
    assert len(found) == 1, report


def test_cycle_names_its_nodes(tmp_path):
    text = GOOD.replace("{op: relu, in: fc}", "{op: relu, in: h2}\n  h2:   {op: relu, in: h}")
    found, report = errors_of(tmp_path, text)
    assert any("cycle: h -> h2 -> h" in m and l == 8 for l, _, m in found), report


def test_shape_mismatch_is_located_at_the_node(tmp_path):
    found, report = errors_of(tmp_path, GOOD.replace("shape: [3, 4]", "shape: [5, 4]"))
    (line, col, message), = found
    assert (line, col) == (7, 3)
    assert "x has 3 features but W expects 5" in message


def test_independent_shape_errors_are_all_reported(tmp_path):
    text = GOOD.replace("shape: [3, 4]", "shape: [5, 4]").replace(
        "outputs: [h, loss]", "outputs: [h, loss, g]").replace(
        "  loss:", "  g:    {op: dense, in: {x: x, W: b}}\n  loss:")
    found, report = errors_of(tmp_path, text)
    assert sorted(l for l, _, _ in found) == [7, 9], report


def test_value_initializer_shape_must_match(tmp_path):
    found, _ = errors_of(tmp_path, GOOD.replace(
        "b: {shape: [4], init: {kind: zeros}}", "b: {shape: [4], init: {kind: value, value: [1, 2]}}"))
    assert found[0][:2] == (5, 46) and "declares shape [4] but its value has shape [2]" in found[0][2]


def test_top_level_must_be_a_mapping(tmp_path):
    found, _ = errors_of(tmp_path, "- just\n- a list\n")
    assert found[0][:2] == (1, 1)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(GraphError, match="cannot read"):
        flowgrad.load(tmp_path / "missing.yaml")


def test_yaml_tags_cannot_run_code(tmp_path):
    found, _ = errors_of(tmp_path, "flowgrad: !!python/object/apply:os.system ['echo hi']\n")
    assert found and "invalid YAML" in found[0][2]


def test_yaml_1_2_floats_are_numbers(tmp_path):
    from flowgrad.loaders.yaml_source import read_yaml
    path = tmp_path / "f.yaml"
    path.write_text("a: 1e-4\nb: 1.0e6\nc: -2E+3\nd: 1_000\ne: 3.5\nf: e5\ng: '1e3'\n")
    data, _ = read_yaml(str(path))
    assert data == {"a": 1e-4, "b": 1e6, "c": -2e3, "d": 1000, "e": 3.5, "f": "e5", "g": "1e3"}
