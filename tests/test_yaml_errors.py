"""Every user mistake in a YAML graph gives path:line:col, the source line and a caret."""
from __future__ import annotations

import functools
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


# -- hostile and careless files: one located message each, exit 1, fast (issue 12) -----------

BOMB = "flowgrad: 1\nnodes: {}\n" + "".join(
    f"l{i}: &l{i} [{', '.join([f'*l{i - 1}' if i else 'lol'] * 9)}]\n" for i in range(9))
HUGE_PARAM = GOOD.replace("shape: [3, 4]", "shape: [100000, 100000]")


def cli_outcome(tmp_path, data: bytes | str, command="check"):
    """``flowgrad check --no-gradients`` (or ``show``) on ``data``: the outcome (its ``peak``
    the most memory Python and numpy held at once during the call, a measure of the work done
    that, unlike a time, a busy machine does not move) and the path."""
    import tracemalloc
    from tests.fuzz import harness
    path = tmp_path / "g.yaml"
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    argv = [command, "--no-gradients", str(path)] if command == "check" else [command, str(path)]
    _warm_up(str(tmp_path / "warm.yaml"))
    tracemalloc.start()
    try:
        outcome = harness.run_cli(argv)
        outcome.peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return outcome, str(path)


#: what refusing a hostile file may hold at once: a runaway (an alias bomb expanded, a
#: 74 GiB param initialized, a million block instances) holds far more long before it ends
MAX_PEAK = 20 << 20


@functools.cache
def _warm_up(path: str) -> None:
    """Run the CLI once on a good file with every section, so a timed case does not pay for
    the first import of the commands, the op registry and the section readers."""
    from tests.fuzz import harness
    with open(path, "w") as f:
        f.write(GOOD + "train: {epochs: 1}\nvisualize: {steps: 2}\n")
    assert harness.run_cli(["check", "--no-gradients", path]).rc == 0


HOSTILE = [
    # (what, file bytes, line, col, fragment)
    ("invalid UTF-8", GOOD.replace("in: fc}", "in: f\udcffc}").encode("utf-8", "surrogateescape"),
     8, 25, "not UTF-8 text (byte 0xff at offset 245 cannot start a character)"),
    ("truncated UTF-8", GOOD.encode() + b"doc: \xc3", 11, 6, "not UTF-8"),
    ("control character", GOOD.replace("in: fc}", "in: f\x1bc}"), 8, 25,
     "unacceptable character #x001b"),
    ("NUL", GOOD.replace("in: fc}", "in: f\x00c}"), 8, 25, "unacceptable character #x0000"),
    ("flow nesting", "flowgrad: 1\nnodes: " + "[" * 250 + "]" * 250 + "\n", 2, 71,
     "collections nested deeper than 64 levels"),
    ("block nesting", "flowgrad: 1\nnodes:\n" + "".join(
        "  " * (i + 1) + f"a{i}:\n" for i in range(250)), 66, 129, "nested deeper than 64"),
    ("alias bomb", BOMB, 7, 10, "alias '*l3' takes the file's aliases past 10000 values"),
    ("alias nests deep", "flowgrad: 1\na: &a " + "[" * 40 + "]" * 40 + "\nb: [" + "[" * 30
     + "*a" + "]" * 30 + "]\nnodes: {}\n", 3, 35, "alias '*a' nests collections deeper than 64"),
    ("!!int abc", GOOD.replace("flowgrad: 1", "flowgrad: !!int abc"), 1, 11,
     "cannot read 'abc' as an integer"),
    ("!!binary", GOOD.replace("in: fc}", "in: !!binary aGVsbG8=}"), 8, 24,
     "got bytes b'hello'"),
    ("!!python", GOOD.replace("flowgrad: 1", "flowgrad: !!python/object/apply:os.system [ls]"),
     1, 11, "could not determine a constructor for the tag"),
    ("zero size", GOOD.replace("shape: [3, 4]", "shape: [0, 4]"), 4, 14,
     "must be a list of positive integers"),
    ("negative size", GOOD.replace("shape: [3]", "shape: [-3]"), 2, 21,
     "must be a list of positive integers or null (a free dim)"),
    ("free param dim", GOOD.replace("shape: [3, 4]", "shape: [null, 4]"), 4, 14,
     "'shape' of param 'W' must be a list of positive integers (at most 32"),
    ("huge size", GOOD.replace("shape: [3]", "shape: [99999999999999999999999]"), 2, 21,
     "each at most 2147483647"),
    ("too many axes", GOOD.replace("shape: [3]", "shape: [" + ", ".join(["1"] * 40) + "]"),
     2, 21, "at most 32 sizes"),
    ("params too big", HUGE_PARAM, 4, 14,
     "the params would take 74.5 GiB, more than the 1 GiB a graph may hold; the biggest is 'W' "
     "(shape [100000, 100000], 74.5 GiB"),
    ("input too big", GOOD.replace("shape: [3]", "shape: [3, 100000, 100000]"), 2, 21,
     "one sample of input 'x' (shape [3, 100000, 100000]) would take 224 GiB"),
    ("negative std", GOOD.replace("kind: glorot_uniform", "kind: normal, std: -1"), 4, 48,
     "'std' of the 'normal' initializer of param 'W' must be a finite number >= 0, got -1"),
    ("NaN std", GOOD.replace("kind: glorot_uniform", "kind: normal, std: .nan"), 4, 48,
     "must be a finite number >= 0, got nan"),
    ("negative gain", GOOD.replace("kind: glorot_uniform", "kind: he_normal, gain: -2"), 4, 52,
     "'gain' of the 'he_normal' initializer"),
    ("huge integer std", GOOD.replace("kind: glorot_uniform", f"kind: normal, std: {10**400}"),
     4, 48, "must be a finite number >= 0"),
    ("uniform range", GOOD.replace("kind: glorot_uniform", "kind: uniform, low: -1e308, "
                                   "high: 1e308"), 4, 28, "needs low <= high, with a range a float can hold"),
    ("uniform upside down", GOOD.replace("kind: glorot_uniform", "kind: uniform, low: 2, high: 1"),
     4, 28, "needs low <= high"),
    ("negative seed", GOOD.replace("kind: glorot_uniform", "kind: glorot_uniform, seed: -1"),
     4, 57, "'seed' of the initializer of param 'W' must be a non-negative integer"),
    ("infinite lr_mult", GOOD.replace("init: {kind: zeros}", "init: {kind: zeros}, "
                                      "lr_mult: .inf"), 5, 49, "'lr_mult' of param 'b' must be"),
    ("huge constant", GOOD.replace("nodes:", f"constants: {{c: {{value: {10**400}}}}}\nnodes:"),
     6, 24, "must be a finite number or a (nested, rectangular) list of finite numbers"),
    ("NaN in a value", GOOD.replace("{kind: zeros}", "{kind: value, value: [1, .nan, 3, 4]}"),
     5, 46, "list of finite numbers"),
    ("huge epochs", GOOD + f"train: {{epochs: {10**30}}}\n", 11, 17,
     "'epochs' must be at most 9223372036854775807"),
    ("visualize input too big", GOOD + "visualize: {input_shape: [100000, 100000, 3]}\n", 11, 26,
     "input shape [100000, 100000, 3] is too large"),
    ("huge lr", GOOD + f"train: {{optimizer: {{kind: sgd, lr: {10**400}}}}}\n", 11, 36,
     "'lr' must be a number"),
]


@pytest.mark.parametrize("what,data,line,col,fragment", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_file_gets_one_located_message(tmp_path, what, data, line, col, fragment):
    outcome, path = cli_outcome(tmp_path, data)
    assert outcome.rc == 1, outcome.describe()
    assert outcome.peak < MAX_PEAK, (outcome.peak, outcome.describe())
    head = outcome.stderr.splitlines()[0]
    assert head.startswith(f"{path}:{line}:{col}: error: "), outcome.stderr
    assert fragment in outcome.stderr, outcome.stderr
    assert "Traceback" not in outcome.stderr


@pytest.mark.parametrize("text", [BOMB, HUGE_PARAM], ids=["alias bomb", "huge param"])
def test_refused_without_allocating(tmp_path, text):
    import tracemalloc
    path = tmp_path / "g.yaml"
    path.write_text(text)
    tracemalloc.start()
    with pytest.raises(GraphError):
        flowgrad.load(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < MAX_PEAK, peak


BLOCKS = """\
flowgrad: 1
inputs: {x: {shape: [3]}}
blocks:
  a: {inputs: [x], nodes: {r: {op: relu, in: x}}}
  b: {inputs: [x], nodes: {r: {block: a, in: x, repeat: 1000}}}
  self: {inputs: [x], nodes: {r: {block: self, in: x}}}
nodes:
  s: {block: b, in: x, repeat: 1000}
"""


@pytest.mark.parametrize("old,new,line,col,fragment", [
    ("  s: {block: b, in: x, repeat: 1000}", "  s: {block: a, in: x, repeat: 1e9}", 8, 32,
     "'repeat' of 's' must be an integer from 1 to 10000, got 1000000000.0"),
    ("  s: {block: b, in: x, repeat: 1000}", "  s: {block: a, in: x, repeat: 1000000000}", 8,
     32, "'repeat' of 's' must be an integer from 1 to 10000, got 1000000000"),
    ("", "", 8, 32, "'s' would make 1001000 params, constants and nodes, more than the 20000"),
    ("  s: {block: b, in: x, repeat: 1000}", "  s: {block: self, in: x}", 6, 42,
     "block 'self' instantiates itself: self -> self"),
])
def test_runaway_blocks_are_refused_fast(tmp_path, old, new, line, col, fragment):
    outcome, path = cli_outcome(tmp_path, BLOCKS.replace(old, new) if old else BLOCKS)
    assert outcome.rc == 1 and outcome.peak < MAX_PEAK, (outcome.peak, outcome.describe())
    assert outcome.stderr.startswith(f"{path}:{line}:{col}: error: "), outcome.stderr
    assert fragment in outcome.stderr, outcome.stderr


@pytest.mark.parametrize("command", ["check", "show"])
def test_empty_nodes_is_no_crash(tmp_path, command):
    outcome, _ = cli_outcome(tmp_path, "flowgrad: 1\nnodes: {}\n", command)
    assert outcome.rc in (0, 1), outcome.describe()
