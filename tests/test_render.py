"""Drawing graphs: branches and merges shown alike in text, dot and Mermaid, by the graph's
``is_branch`` / ``is_merge`` (never by op names), and counted for ``flowgrad check``."""
from __future__ import annotations

import re

import numpy as np
import pytest

import flowgrad
from flowgrad import Graph, Spec
from flowgrad.render import FORMATS, branches_and_merges, fan_summary, to_dot, to_mermaid, to_text

YAML = """
flowgrad: 1
name: fans
inputs: {x: {shape: [4]}}
params:
  b: {shape: [4], init: {kind: zeros}}
nodes:
  h:    {op: relu, in: x}
  s:    {op: sigmoid, in: h}
  t:    {op: tanh, in: h}
  prod: {op: mul, in: [s, t]}
  big:  {op: max, in: [s, t, prod]}
  avg:  {op: mean, in: [big, prod]}
  out:  {op: add, in: [avg, b]}
outputs: [out]
"""

MERGES = ["prod", "big", "avg"]     # mul, max and mean joining activations; add(avg, b) is not


@pytest.fixture
def graph(tmp_path):
    path = tmp_path / "fans.yaml"
    path.write_text(YAML)
    return flowgrad.load(str(path))


def test_branches_and_merges_come_from_the_graph(graph):
    branches, merges = branches_and_merges(graph)
    assert branches == ["h#branch", "s#branch", "t#branch", "prod#branch"]
    assert merges == MERGES
    assert fan_summary(graph) == "4 branches, 3 merges"


def test_fan_summary_counts_in_the_singular_too():
    g = Graph("one")
    g.add_input("x", Spec((None, 2), np.float32))
    reg = flowgrad.default_registry()
    g.add_op("a", reg.get("relu")()); g.connect("x", 0, "a", 0)
    g.add_op("m", reg.get("mul")()); g.connect("a", 0, "m", 0); g.connect("a", 0, "m", 1)
    g.outputs = ["m"]
    g = flowgrad.prepare(g)
    assert fan_summary(g) == "1 branch, 1 merge"          # mul(a, a): a branch, then a merge
    assert fan_summary(flowgrad.prepare(_chain())) == "0 branches, 0 merges"


def _chain():
    g = Graph("chain")
    g.add_input("x", Spec((None, 2), np.float32))
    g.add_op("a", flowgrad.default_registry().get("relu")()); g.connect("x", 0, "a", 0)
    g.outputs = ["a"]
    return g


def test_text_marks_each_branch_and_merge_and_sums_them_up(graph):
    text = to_text(graph)
    marked = {line.split()[0]: line.rsplit("[", 1)[1].rstrip("]") for line in text.splitlines()
              if line.endswith(("[branch]", "[merge]"))}
    assert marked == {**dict.fromkeys(["h#branch", "s#branch", "t#branch", "prod#branch"],
                                      "branch"), **dict.fromkeys(MERGES, "merge")}
    assert text.splitlines()[-1].strip() == "4 branches, 3 merges"
    assert "max(xs[0]=s#branch.1, xs[1]=t#branch.1, xs[2]=prod#branch)" in text


def _dot_shapes(dot: str) -> dict[str, str]:
    shapes = {}
    for label, shape in re.findall(r'label="([^"\\]+)\\n[^"]*", shape=(\w+)', dot):
        shapes[label] = shape
    return shapes


def test_dot_draws_branches_as_diamonds_and_merges_as_trapezia(graph):
    shapes = _dot_shapes(to_dot(graph))
    assert {n for n, s in shapes.items() if s == "diamond"} == {
        "h#branch", "s#branch", "t#branch", "prod#branch"}
    assert {n for n, s in shapes.items() if s == "invtrapezium"} == set(MERGES)
    assert shapes["out"] == "box" and shapes["x"] == "ellipse"


def test_mermaid_draws_branches_as_rhombi_and_merges_as_trapezia(graph):
    mermaid = to_mermaid(graph)
    rhombi = re.findall(r'n\d+\{"([^<"]+)<br/>', mermaid)
    trapezia = re.findall(r'n\d+\[/"([^<"]+)<br/>[^"]*"\\\]', mermaid)
    assert rhombi == ["h#branch", "s#branch", "t#branch", "prod#branch"]
    assert trapezia == MERGES


def test_edges_are_labelled_with_branch_outputs_and_variadic_positions(graph):
    mermaid = to_mermaid(graph)
    for label in ("0→a", "1→xs[0]", "0→xs[2]", "xs[0]", "b"):
        assert f'-- "{label}" -->' in mermaid
    assert 'label="1→xs[1]", fontsize=8' in to_dot(graph)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_format_draws_every_node(graph, fmt):
    drawn = FORMATS[fmt](graph)
    for name in graph.topological_order():
        assert name in drawn
