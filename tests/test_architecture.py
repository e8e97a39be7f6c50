"""Meta-tests of the layout docs/architecture.md describes: imports point one way, and node
records are read through the Graph's typed accessors everywhere but the graph and the ops.

Both read the source with ``ast`` (nothing is imported), so a violation names file and line.
"""
from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "flowgrad"

#: bottom to top; a module may import (at module level) from its own layer and those below.
#: The same table is in docs/architecture.md.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "parallel", "backend", "kernels", "arrays"),
    ("op",),
    ("graph", "ops", "optim", "data", "datasets", "checkpoint", "initializers", "plots"),
    ("hookspecs", "plugins", "builtins", "passes"),
    ("plan", "gradcheck", "numerics", "render", "summary"),
    ("loaders", "onnx", "train_config"),
    ("train", "visualize", "testing"),
    ("workflows",),
    ("distributed",),
    ("cli", "__main__", "__init__"),
)
LEVEL = {name: i for i, layer in enumerate(LAYERS) for name in layer}

#: where node records may be read and written by key
RECORD_OWNERS = ("graph.py", "ops/")


def modules() -> list[pathlib.Path]:
    return sorted(PACKAGE.rglob("*.py"))


def part(path: pathlib.Path) -> str:
    """The top-level part of the package a file belongs to (``plan`` for plan/run.py)."""
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def flowgrad_imports(path: pathlib.Path) -> list[tuple[int, str]]:
    """``(line, top-level part)`` of every module-level import of flowgrad code."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = list(path.relative_to(ROOT).with_suffix("").parts)
    package = package if path.name == "__init__.py" else package[:-1]
    package = package[:-1] if package[-1] == "__init__" else package
    found = []
    statements = [n for node in tree.body
                  for n in ([node] if not isinstance(node, ast.If) else node.body)]
    for node in statements:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                target = base + (node.module.split(".") if node.module else [])
            else:
                target = (node.module or "").split(".")
            if target[0] != "flowgrad":
                continue
            names = [target + [a.name] for a in node.names] if len(target) == 1 else [target]
            found += [(node.lineno, (t[1] if len(t) > 1 else "__init__")) for t in names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name.split(".")[1]) for a in node.names
                      if a.name.startswith("flowgrad.")]
    return found


def test_every_part_of_the_package_has_a_layer():
    parts = {part(p) for p in modules()}
    assert parts <= set(LEVEL), f"add these to LAYERS and docs/architecture.md: {parts - set(LEVEL)}"


def test_imports_point_one_way():
    wrong = []
    for path in modules():
        here = part(path)
        for line, target in flowgrad_imports(path):
            if target in LEVEL and LEVEL[target] > LEVEL[here]:
                wrong.append(f"{path.relative_to(ROOT)}:{line}: {here} imports {target}")
    assert not wrong, "imports against the layering (import inside the function, or move " \
                      "the code down):\n" + "\n".join(wrong)


def _raw_record_reads(tree: ast.AST) -> list[int]:
    """Lines reading a node record by key: ``graph.node(n)[...]``, ``dag.nodes[n][...]`` and the
    same with ``.get(...)``, or any ``graph.node(...)`` call (it hands out the raw record)."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr == "node":
            receiver = ast.unparse(node.func.value)
            if receiver.endswith("graph") or receiver in ("g", "out"):
                lines.append(node.lineno)
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Call) \
                and isinstance(node.value.func, ast.Attribute) \
                and node.value.func.attr == "node" and ast.unparse(node.value.func.value) != "c":
            lines.append(node.lineno)                       # anything.node(n)[key]
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) \
                and node.value.attr == "nodes" and ast.unparse(node.value.value).endswith("dag"):
            lines.append(node.lineno)
    return sorted(set(lines))


@pytest.mark.parametrize("path", [p for p in modules()
                                  if not any(str(p.relative_to(PACKAGE)).startswith(o)
                                             for o in RECORD_OWNERS)],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_node_records_are_read_through_typed_accessors(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    lines = _raw_record_reads(tree)
    if path.name == "export.py":   # the ONNX export context has a node(...) method of its own
        lines = []
    assert not lines, (f"{path.relative_to(ROOT)} reads node records by key at lines {lines}: "
                       "use Graph's typed accessors (kind, op_of, spec_of, value_of, is_branch…)")


def test_the_detectors_can_fail():
    assert _raw_record_reads(ast.parse("x = graph.node(n)['op']\n")) == [1]
    assert _raw_record_reads(ast.parse("x = self.dag.nodes[n]['kind']\n")) == [1]
    assert _raw_record_reads(ast.parse("x = out.node(n)['order']\n")) == [1]
    assert _raw_record_reads(ast.parse("x = graph.op_of(n)\n")) == []
    assert _raw_record_reads(ast.parse("y = c.node('Shape', [x])[0]\n")) == []
