"""Blocks, repeats and includes in YAML graphs, merge keys, and the ResNets written with them.

Expanded graphs are checked by their namespaced names (in the graph, a checkpoint and an ONNX
model), by what they compute (against numpy, or onnxruntime for ResNet-18), and every mistake
by where it is reported: inside the block and at each instantiation site.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import flowgrad
from flowgrad.checkpoint import load_checkpoint, save_checkpoint
from flowgrad.errors import GraphError
from flowgrad.loaders import yaml_source
from flowgrad.loaders.yaml_source import read_yaml
from flowgrad.render import to_dot, to_mermaid, to_text

from .conftest import GRAPHS

LINEAR = """\
flowgrad: 1
inputs: {x: {shape: [3]}}
blocks:
  lin:                                  # dense + leaky relu
    args: {n_in: ~, n: ~, slope: 0.5}
    inputs: [x]
    params:
      W: {shape: [$n_in, $n], init: {kind: glorot_uniform}}
      b: {shape: [$n], init: {kind: uniform, low: -1, high: 1}}
    nodes:
      fc: {op: dense, in: {x: x, W: W, b: b}}
      act: {op: leaky_relu, in: fc, alpha: $(slope / 2)}
nodes:
  first: {block: lin, in: x, with: {n_in: 3, n: 4}}
  stack: {block: lin, repeat: 3, in: first, with: {n_in: 4, n: 4},
          each: [{}, {slope: 0.1}, {n: 2}]}
  loss: {op: reduce_sum, in: stack}
outputs: [stack, loss]
"""


def write(tmp_path, text, name="g.yaml"):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def load_error(path) -> GraphError:
    with pytest.raises(GraphError) as info:
        flowgrad.load(path)
    return info.value


def lin(x, w, b, alpha):
    z = x @ w + b
    return np.where(z > 0, z, alpha * z)


def test_arguments_reach_shapes_and_attributes_and_repeat_chains(tmp_path):
    graph = flowgrad.load(write(tmp_path, LINEAR))
    assert graph.spec_of("first.W").shape == (3, 4)
    assert graph.spec_of("stack.block3.W").shape == (4, 2)       # per-instance argument
    assert graph.op_of("first.act").alpha == 0.25                # an expression
    assert graph.op_of("stack.block2.act").alpha == pytest.approx(0.05)
    assert graph.outputs == ["stack.block3.act", "loss"]         # an instance: its output
    assert graph.meta["blocks"]["stack"] == {"block": "lin", "repeat": 3}
    assert graph.meta["blocks"]["stack.block2"] == {"block": "lin"}

    plan = flowgrad.compile(graph, dtype="float64")
    x = np.random.default_rng(0).normal(size=(5, 3))
    p = plan.params
    h = lin(x, p["first.W"], p["first.b"], 0.25)
    for k, alpha in ((1, 0.25), (2, 0.05), (3, 0.25)):           # each feeds the next
        h = lin(h, p[f"stack.block{k}.W"], p[f"stack.block{k}.b"], alpha)
    np.testing.assert_allclose(plan.forward({"x": x})["stack.block3.act"], h, rtol=1e-12)


def test_namespaced_names_in_checkpoint_and_onnx(tmp_path):
    graph = flowgrad.load(write(tmp_path, LINEAR))
    names = {"first.W", "first.b", "stack.block1.W", "stack.block3.b"}
    assert names <= set(graph.params)
    plan = flowgrad.compile(graph)
    save_checkpoint(tmp_path / "c.npz", {"params": plan.state_dict()}, {})
    assert names <= set(load_checkpoint(tmp_path / "c.npz").params)
    proto = flowgrad.save_onnx(graph, str(tmp_path / "m.onnx"))
    assert names <= {t.name for t in proto.graph.initializer}
    assert "stack.block2.fc" in {n.name for n in proto.graph.node}


def test_tied_weight_passed_into_every_instance(tmp_path):
    path = write(tmp_path, """\
        flowgrad: 1
        inputs: {x: {shape: [3]}}
        params: {W: {shape: [3, 3], init: {kind: glorot_uniform}}}
        blocks:
          layer:
            inputs: [x, W]
            nodes:
              fc: {op: matmul, in: [x, W]}
              out: {op: tanh, in: fc}
        nodes:
          deep: {block: layer, repeat: 3, in: {x: x, W: W}}
          loss: {op: reduce_sum, in: deep}
        outputs: [loss]
        """)
    graph = flowgrad.load(path)
    assert graph.params == ["W"]
    plan = flowgrad.compile(graph, dtype="float64")
    x = np.random.default_rng(1).normal(size=(2, 3))
    w = plan.params["W"]
    plan.forward({"x": x})
    grad = plan.backward({"loss": 1.0})["W"]
    eps, numeric = 1e-6, np.zeros_like(w)

    def loss(w):
        h = x
        for _ in range(3):
            h = np.tanh(h @ w)
        return h.sum()
    for i in np.ndindex(w.shape):
        d = np.zeros_like(w)
        d[i] = eps
        numeric[i] = (loss(w + d) - loss(w - d)) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


def test_include_is_relative_to_the_including_file(tmp_path):
    write(tmp_path, """\
        include: act.yaml
        blocks:
          lin:
            args: {n: ~}
            inputs: [x]
            params: {W: {shape: [$n, $n], init: {kind: glorot_uniform}}}
            nodes:
              fc: {op: matmul, in: [x, W]}
              act: {block: act, in: fc}
        """, "lib/blocks.yaml")
    write(tmp_path, """\
        blocks:
          act: {inputs: [x], nodes: {r: {op: relu, in: x}}}
        """, "lib/act.yaml")
    path = write(tmp_path, """\
        flowgrad: 1
        include: [lib/blocks.yaml]
        inputs: {x: {shape: [2]}}
        nodes:
          a: {block: lin, in: x, with: {n: 2}}
        """, "net/../g.yaml")
    graph = flowgrad.load(path)
    assert graph.outputs == ["a.act.r"]
    assert graph.meta["blocks"]["a.act"] == {"block": "act"}


def test_a_file_included_twice_is_read_once(tmp_path):
    write(tmp_path, "blocks: {act: {inputs: [x], nodes: {r: {op: relu, in: x}}}}\n", "base.yaml")
    write(tmp_path, "include: base.yaml\n", "a.yaml")
    write(tmp_path, "include: base.yaml\n", "b.yaml")
    path = write(tmp_path, "flowgrad: 1\ninclude: [a.yaml, b.yaml]\ninputs: {x: {shape: [2]}}\n"
                           "nodes: {h: {block: act, in: x}}\n")
    assert flowgrad.load(path).outputs == ["h.r"]


def test_include_cycle_names_the_chain(tmp_path):
    write(tmp_path, "include: b.yaml\n", "lib/a.yaml")
    write(tmp_path, "blocks: {}\ninclude: [a.yaml]\n", "lib/b.yaml")
    path = write(tmp_path, "flowgrad: 1\ninclude: lib/a.yaml\nnodes: {}\n")
    error = load_error(path)
    [d] = error.diagnostics
    assert d.message == (f"include cycle: {path} -> {tmp_path}/lib/a.yaml -> "
                         f"{tmp_path}/lib/b.yaml -> {tmp_path}/lib/a.yaml")
    assert (d.loc.path, d.loc.line, d.loc.col) == (f"{tmp_path}/lib/b.yaml", 2, 11)


def test_missing_include_is_located(tmp_path):
    path = write(tmp_path, "flowgrad: 1\ninclude: [ok.yaml, nope.yaml]\n"
                           "inputs: {x: {shape: [1]}}\nnodes: {a: {block: b, in: x}}\n")
    write(tmp_path, "blocks: {}\n", "ok.yaml")
    [d] = load_error(path).diagnostics          # not also "unknown block 'b'"
    assert (d.loc.line, d.loc.col) == (2, 20)
    assert d.message == f"cannot include 'nope.yaml': no such file '{tmp_path}/nope.yaml'"


def test_error_inside_a_block_reports_the_block_and_the_instance(tmp_path):
    write(tmp_path, """\
        blocks:
          lin:
            args: {n: ~}
            inputs: [x]
            params: {W: {shape: [$n, $n], init: {kind: glorot_uniform}}}
            nodes:
              fc: {op: matmul, in: [x, W]}
              out: {op: relu, in: fcc}
        """, "lib.yaml")
    path = write(tmp_path, """\
        flowgrad: 1
        include: lib.yaml
        inputs: {x: {shape: [2]}}
        nodes:
          a: {block: lin, in: x, with: {n: 2}}
          b: {block: lin, repeat: 2, in: a, with: {n: 2}}
        """)
    error = load_error(path)
    assert len(error.diagnostics) == 1          # once, not once per instance
    assert str(error) == textwrap.dedent(f"""\
        {tmp_path}/lib.yaml:8:27: error: unknown value 'fcc' in block 'lin'; did you mean 'fc'? \
(a block sees its inputs, params, constants and nodes; pass other values in through its 'inputs')
            8 |       out: {{op: relu, in: fcc}}
              |                           ^
        {path}:5:3: note: in 'a', an instance of block 'lin'
            5 |   a: {{block: lin, in: x, with: {{n: 2}}}}
              |   ^""")


def test_shape_error_in_a_nested_instance_names_every_site(tmp_path):
    path = write(tmp_path, """\
        flowgrad: 1
        inputs: {x: {shape: [2]}}
        blocks:
          lin:
            args: {n: ~}
            inputs: [x]
            params: {W: {shape: [$n, $n], init: {kind: glorot_uniform}}}
            nodes: {fc: {op: matmul, in: [x, W]}}
          two:
            inputs: [x]
            nodes:
              l1: {block: lin, in: x, with: {n: 2}}
              l2: {block: lin, in: l1, with: {n: 3}}
        nodes:
          net: {block: two, repeat: 2, in: x}
        """)
    error = load_error(path)
    first = error.diagnostics[0]
    assert (first.loc.line, first.loc.col) == (8, 13)        # the matmul, in the block
    assert "net.block1.l2.fc" in first.message
    report = str(error).split("\n")
    assert report[3:9] == [
        f"{path}:13:7: note: in 'net.block1.l2', an instance of block 'lin'",
        "   13 |       l2: {block: lin, in: l1, with: {n: 3}}",
        "      |       ^",
        f"{path}:15:3: note: in 'net.block1', an instance of block 'two'",
        "   15 |   net: {block: two, repeat: 2, in: x}",
        "      |   ^"]


@pytest.mark.parametrize("old,new,line,col,fragment", [
    ("block: lin, in: x", "block: ln, in: x", 14, 18, "unknown block 'ln'; did you mean 'lin'?"),
    ("with: {n_in: 3, n: 4}", "with: {n_in: 3}", 14, 3,
     "'first' needs argument(s) n of block 'lin'"),
    ("with: {n_in: 3, n: 4}", "with: {n_in: 3, n: 4, m: 1}", 14, 52,
     "block 'lin' has no argument 'm' (arguments: n_in, n, slope)"),
    ("{n: 2}]", "{n: $x}]", 16, 40, "unknown block argument 'x' (arguments: none)"),
    ("$n_in, $n]", "$n_in, $nn]", 8, 26, "unknown block argument 'nn'; did you mean 'n_in'?"),
    ("$(slope / 2)", "$(slope ** 2)", 12, 44, "only + - * / // %"),
    ("$(slope / 2)", "$(" + "(" * 500 + "slope" + ")" * 500 + ")", 12, 44, "cannot read"),
    ("with: {n_in: 3, n: 4}", "with: {n_in: {a: 1}, n: 4}", 14, 43,
     "argument 'n_in' must be a number, a string, true/false or a list of them"),
    ("{x: x, W: W, b: b}", "{x: x, W: W, b: c}", 11, 43, "unknown value 'c' in block 'lin'"),
    ("repeat: 3", "repeat: 0", 15, 31, "'repeat' of 'stack' must be an integer from 1 to 10000"),
    ("{slope: 0.1}, {n: 2}]", "{slope: 0.1}]", 16, 17, "must be a list of 3 mappings"),
    ("in: first,", "in: {y: first},", 15, 39, "block 'lin' has no input 'y'"),
    ("  loss:", "  first.W: {op: relu, in: x}\n  loss:", 17, 3, "may not contain '#', '.'"),
    ("inputs: {x: {shape: [3]}}", "inputs: {x: {shape: [3]}, first: {shape: [1]}}", 14, 3,
     "'first' is already declared at line 2"),
    ("act: {op", "fc2: {block: lin, in: fc, with: {n_in: $n, n: $n}}\n      act: {op", 12, 20,
     "block 'lin' instantiates itself: lin -> lin"),
])
def test_block_mistake_is_located(tmp_path, old, new, line, col, fragment):
    text = LINEAR.replace(old, new, 1)
    assert text != LINEAR
    error = load_error(write(tmp_path, text))
    d = error.diagnostics[0]
    assert (d.loc.line, d.loc.col) == (line, col), str(error)
    assert fragment in d.message
    assert "Traceback" not in str(error)


def test_left_out_node_stands_for_its_first_input(tmp_path):
    path = write(tmp_path, """\
        flowgrad: 1
        inputs: {x: {shape: [2]}}
        blocks:
          maybe:
            args: {keep: ~}
            inputs: [x]
            nodes:
              t: {op: tanh, in: x, if: $keep}
              out: {op: relu, in: t}
        nodes:
          kept: {block: maybe, in: x, with: {keep: true}}
          left: {block: maybe, in: kept, with: {keep: false}}
        """)
    graph = flowgrad.load(path)
    assert "kept.t" in graph.ops and "left.t" not in graph.ops
    assert graph.input_sources("left.out") == [("kept.out", 0)]


def read_both(monkeypatch, text):
    """What the C (libyaml) and the pure-Python loaders make of ``text``: the same."""
    results = []
    for loader in (yaml_source.CMarkedLoader, yaml_source.PyMarkedLoader):
        if loader is None:
            continue
        monkeypatch.setattr(yaml_source, "MarkedLoader", loader)
        try:
            data = read_yaml("g.yaml", text)[0]
            results.append(("data", yaml_source.plain(data),
                            {k: str(data["c"].value_locs[k]) for k in data["c"]}))
        except GraphError as e:
            results.append(("error", str(e)))
    assert all(r == results[0] for r in results)
    return results[0]


def test_merge_keys_with_overrides_on_both_loaders(monkeypatch):
    kind, data, locs = read_both(monkeypatch, textwrap.dedent("""\
        a: &A {x: 1, y: 2}
        b: &B {y: 3, z: 4, w: 0}
        c:
          <<: [*A, *B]
          z: 5
        """))
    assert data["c"] == {"x": 1, "y": 2, "w": 0, "z": 5}     # earlier maps win, own keys most
    assert locs == {"x": "g.yaml:1:11", "y": "g.yaml:1:17", "w": "g.yaml:2:23",
                    "z": "g.yaml:5:6"}
    kind, report = read_both(monkeypatch, "a: &A {x: 1}\nc: {<<: *A, x: 2, x: 3}\n")
    assert kind == "error" and "g.yaml:2:19: error: duplicate key 'x'" in report


def test_merge_keys_in_a_graph(monkeypatch, tmp_path):
    text = LINEAR.replace("      b: {shape: [$n],", "      b: {<<: *w, shape: [$n],").replace(
        "      W: {shape", "      W: &w {lr_mult: 3.0, shape")
    for loader in (yaml_source.CMarkedLoader, yaml_source.PyMarkedLoader):
        if loader is not None:
            monkeypatch.setattr(yaml_source, "MarkedLoader", loader)
            graph = flowgrad.load(write(tmp_path, text))
            assert graph.lr_mult("stack.block1.b") == 3.0
            assert graph.spec_of("stack.block1.b").shape == (4,)


def test_show_collapses_instances(tmp_path):
    graph = flowgrad.load(write(tmp_path, LINEAR))
    text = to_text(graph, collapse_blocks=True)
    assert "stack" in text and "stack.block1" not in text and "first.W" not in text
    assert "block lin ×3" in text
    for draw in (to_dot, to_mermaid):
        drawn = draw(graph, collapse_blocks=True)
        assert "block lin ×3" in drawn and "stack.block2" not in drawn
    assert "stack.block2.fc" in to_text(graph)


def test_cli_show_collapse_blocks_and_check_notes(tmp_path):
    def flowgrad_cli(*args):
        return subprocess.run([sys.executable, "-m", "flowgrad", *map(str, args)],
                              capture_output=True, text=True, timeout=120)
    shown = flowgrad_cli("show", write(tmp_path, LINEAR), "--collapse-blocks")
    assert shown.returncode == 0, shown.stderr
    assert "  stack                  block lin ×3 (6 ops)(first.act)" in shown.stdout
    bad = write(tmp_path, LINEAR.replace("in: fc, alpha", "in: fx, alpha"), "bad.yaml")
    checked = flowgrad_cli("check", bad)
    assert checked.returncode == 1 and "Traceback" not in checked.stderr
    assert f"{bad}:14:3: note: in 'first', an instance of block 'lin'" in checked.stderr


def test_files_without_blocks_are_not_expanded(tmp_path):
    from flowgrad.loaders.blocks import uses_blocks
    for path in GRAPHS.glob("*.yaml"):
        data = read_yaml(str(path))[0]
        assert uses_blocks(data) == ("blocks" in data), path


def test_resnet18_matches_onnxruntime():
    """ImageNet ResNet-18 from 56 lines of YAML, random weights and batch-norm statistics:
    flowgrad and onnxruntime (on the exported model) give the same logits."""
    ort = pytest.importorskip("onnxruntime")
    lines = (GRAPHS / "resnet18.yaml").read_text().count("\n")
    assert lines < 80
    graph = flowgrad.load(GRAPHS / "resnet18.yaml")
    assert len(graph.params) == 102            # 62 weights + 2 running statistics x 20 norms
    assert graph.spec_of("stage4.block1.proj.W").shape == (512, 256, 1, 1)
    assert "stage1.block1.proj.W" not in graph.params
    rng = np.random.default_rng(0)
    for name in graph.params:
        shape = graph.spec_of(name).shape
        if name.endswith((".m", ".g", ".b")):
            graph.set_value(name, rng.normal(0, 0.1, shape) + name.endswith(".g"))
        elif name.endswith(".v"):
            graph.set_value(name, rng.uniform(0.5, 1.5, shape))
    plan = flowgrad.compile(graph).eval()
    x = rng.normal(size=(1, 3, 224, 224)).astype(np.float32)
    ours = plan.forward({"x": x})["fc"]
    proto = flowgrad.save_onnx(graph, "/dev/null")
    assert "stage2.block1.proj.W" in {t.name for t in proto.graph.initializer}
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    (theirs,) = session.run(None, {"x": x})
    assert ours.shape == (1, 1000)
    np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-3 * np.abs(theirs).max())


def test_cifar_resnet20_loads_and_runs():
    lines = (GRAPHS / "resnet20_cifar.yaml").read_text().count("\n")
    assert lines < 80
    graph = flowgrad.load(GRAPHS / "resnet20_cifar.yaml")
    convs = [n for n in graph.ops if graph.op_of(n).type == "conv"]
    assert len(convs) == 21                       # 19 3x3 + 2 projections
    plan = flowgrad.compile(graph)
    out = plan.forward({"x": np.zeros((2, 3, 32, 32), np.float32),
                        "label": np.array([1, 2])})
    assert out["logits"].shape == (2, 10) and np.isfinite(out["loss"]).all()
