"""Drawing a graph as text, Graphviz dot or Mermaid, with branch and merge nodes visible.

Fan-out and fan-in are where a network's gradients are summed and its values joined, so every
format shows both the same way, decided only by :meth:`Graph.is_branch` and
:meth:`Graph.is_merge` (never by op names): a branch is a small orange diamond (Mermaid: a
rhombus), a merge a green inverted trapezium, and text lines end with ``[branch]`` or
``[merge]``.  Leaves are ellipses (inputs), rounded boxes (params) or plain text (consts), other
ops boxes; an edge is labelled with the ports it joins where a node has several.
:func:`fan_summary` says how many of each a graph has (``flowgrad check`` prints it).

With ``collapse_blocks=True`` every block instance written in the graph file (a name the YAML
front end recorded in ``graph.meta["blocks"]``; its nodes are named ``instance.…``) is drawn
as one node, ``block NAME ×N`` (a 3-D box in dot, a subroutine in Mermaid), so a ResNet reads
as its stages.
"""
from __future__ import annotations

from .graph import Graph


def branches_and_merges(graph: Graph) -> tuple[list[str], list[str]]:
    """The graph's branch nodes and merge nodes, in topological order."""
    order = graph.topological_order()
    return [n for n in order if graph.is_branch(n)], [n for n in order if graph.is_merge(n)]


def fan_summary(graph: Graph) -> str:
    """``"2 branches, 1 merge"``: how many fan-out and fan-in nodes the graph has."""
    branches, merges = branches_and_merges(graph)
    return (f"{len(branches)} branch{'es' if len(branches) != 1 else ''}, "
            f"{len(merges)} merge{'s' if len(merges) != 1 else ''}")


def _role(graph: Graph, name: str) -> str | None:
    """``branch``, ``merge`` or None: what the drawings single out."""
    if graph.is_branch(name):
        return "branch"
    if graph.is_merge(name):
        return "merge"
    return None


def _type(graph: Graph, name: str) -> str:
    return graph.op_of(name).type if graph.is_op(name) else graph.kind(name)


def _label(graph: Graph, name: str) -> str:
    specs = graph.specs(name) or ()
    shape = ", ".join(str(s) for s in specs[:1]) + (" ..." if len(specs) > 1 else "")
    return f"{name}\\n{_type(graph, name)} {shape}".rstrip()


def _groups(graph: Graph, collapse_blocks: bool) -> dict[str, str]:
    """``{node: the outermost block instance holding it}``, when instances are collapsed."""
    record = graph.meta.get("blocks") if collapse_blocks else None
    if not record:
        return {}
    return {n: head for n in graph.dag if (head := n.split(".", 1)[0]) in record}


def _block_label(graph: Graph, instance: str) -> str:
    entry = graph.meta["blocks"][instance]
    return f"block {entry['block']}" + (f" ×{entry['repeat']}" if "repeat" in entry else "")


def _shown(graph: Graph, order: list[str], groups: dict[str, str]) -> list[str]:
    """``order`` with each collapsed instance in place of its first op (its params, leaves,
    would put every instance at the top)."""
    out, seen = [], set()
    for name in order:
        if name in groups and graph.is_leaf(name):
            continue
        name = groups.get(name, name)
        if name not in seen:
            seen.add(name)
            out.append(name)
    return out + [g for g in dict.fromkeys(groups.values()) if g not in seen]


def _before_branches(graph: Graph, source: tuple[str, int]) -> tuple[str, int]:
    """The value a (chain of) branch node(s) copies."""
    while graph.is_branch(source[0]):
        source = graph.input_sources(source[0])[0]
    return source


def _edges(graph: Graph, order: list[str], groups: dict[str, str] | None = None):
    """``(src, dst, port label)`` for every edge, by destination and input position; with
    ``groups``, edges between collapsed instances, once each."""
    groups = groups or {}
    seen = set()
    for dst in order:
        if graph.is_leaf(dst):
            continue
        ports = graph.port_names(dst, indexed=True)
        for dst_port, src in zip(ports, graph.input_sources(dst)):
            if src is None:
                continue
            src_names = graph.output_names(src[0])
            label = src_names[src[1]] if len(src_names) > 1 else ""
            if len(ports) > 1:
                label = f"{label}→{dst_port}" if label else dst_port
            edge = (groups.get(src[0], src[0]), groups.get(dst, dst))
            if not groups:
                yield src[0], dst, label
            elif edge[0] != edge[1] and edge not in seen:
                seen.add(edge)
                yield edge[0], edge[1], ""


def _instance_line(graph: Graph, instance: str, order: list[str],
                   groups: dict[str, str]) -> str:
    """A collapsed instance in text: what feeds it and the shapes of what leaves it."""
    members = [n for n in order if groups.get(n) == instance]
    inside = set(members)
    feeds = dict.fromkeys(graph.value_name(*_before_branches(graph, src))
                          for n in members if graph.is_op(n)
                          for src in graph.input_sources(n) if src and src[0] not in inside)
    outputs = {graph.resolve(r)[0] for r in graph.outputs}
    exits = dict.fromkeys(_before_branches(graph, (n, 0))[0] for n in members if n in outputs
                          or any(dst not in inside for dst in graph.dag.successors(n)))
    specs = ", ".join(str(s) for n in list(exits)[:1] for s in graph.specs(n) or ())
    ops = sum(1 for n in members if graph.is_op(n) and not graph.is_branch(n))
    what = f"{_block_label(graph, instance)} ({ops} ops)({', '.join(feeds)})"
    return f"  {instance:<22} {what:<48} -> {specs}"


def to_text(graph: Graph, collapse_blocks: bool = False) -> str:
    lines = [f"graph {graph.name}"]
    order = graph.topological_order()
    groups = _groups(graph, collapse_blocks)
    for name in _shown(graph, order, groups):
        if name not in graph.dag:
            lines.append(_instance_line(graph, name, order, groups))
            continue
        specs = ", ".join(str(s) for s in graph.specs(name) or ())
        sources = ""
        if graph.is_op(name):
            refs = [f"{port}={graph.value_name(*src)}" for port, src
                    in zip(graph.port_names(name, indexed=True), graph.input_sources(name))
                    if src is not None]
            sources = "(" + ", ".join(refs) + ")"
        role = _role(graph, name)
        line = f"  {name:<22} {_type(graph, name) + sources:<48} -> {specs}"
        lines.append(f"{line}  [{role}]" if role else line)
    lines.append("  outputs: " + ", ".join(graph.outputs))
    if graph.aliases:            # a model's own names for values that are not nodes of theirs
        lines.append("  aliases: " + ", ".join(f"{a} = {r}" for a, r in graph.aliases.items()))
    lines.append("  " + fan_summary(graph))
    return "\n".join(lines)


def _ids(order: list[str]) -> dict[str, str]:
    return {n: f"n{i}" for i, n in enumerate(order)}


#: Graphviz node styles by leaf kind or role
_DOT_STYLES = {
    "input": "shape=ellipse, style=filled, fillcolor=lightblue",
    "param": "shape=box, style=\"rounded,filled\", fillcolor=lightyellow",
    "const": "shape=plaintext",
    "branch": "shape=diamond, style=filled, fillcolor=orange, fontsize=8",
    "merge": "shape=invtrapezium, style=filled, fillcolor=palegreen",
    "op": "shape=box",
    "block": "shape=box3d, style=filled, fillcolor=lavender",
}

#: Mermaid node shapes (opening, closing) by leaf kind or role
_MERMAID_SHAPES = {
    "input": ('(["', '"])'), "param": ('("', '")'), "const": ('("', '")'),
    "branch": ('{"', '"}'), "merge": ('[/"', '"\\]'), "op": ('["', '"]'),
    "block": ('[["', '"]]'),
}


def _shape_key(graph: Graph, name: str) -> str:
    if name not in graph.dag:
        return "block"
    return _role(graph, name) or graph.kind(name)


def _drawn_label(graph: Graph, name: str) -> str:
    if name not in graph.dag:
        return f"{name}\\n{_block_label(graph, name)}"
    return _label(graph, name)


def to_dot(graph: Graph, collapse_blocks: bool = False) -> str:
    order = graph.topological_order()
    groups = _groups(graph, collapse_blocks)
    ids = _ids(_shown(graph, order, groups))
    outputs = {groups.get(n, n) for n in (graph.resolve(r)[0] for r in graph.outputs)}
    out = [f'digraph "{graph.name}" {{', "  rankdir=TB;",
           '  node [fontname="Helvetica", fontsize=10];']
    for name, nid in ids.items():
        label = _drawn_label(graph, name).replace('"', '\\"')
        style = _DOT_STYLES[_shape_key(graph, name)]
        if name in outputs:
            style += ", penwidth=2"
        out.append(f'  {nid} [label="{label}", {style}];')
    for src, dst, port in _edges(graph, order, groups):
        label = f' [label="{port}", fontsize=8]' if port else ""
        out.append(f"  {ids[src]} -> {ids[dst]}{label};")
    out.append("}")
    return "\n".join(out)


def to_mermaid(graph: Graph, collapse_blocks: bool = False) -> str:
    order = graph.topological_order()
    groups = _groups(graph, collapse_blocks)
    ids = _ids(_shown(graph, order, groups))
    out = ["flowchart TD"]
    for name, nid in ids.items():
        label = _drawn_label(graph, name).replace("\\n", "<br/>").replace('"', "'")
        opening, closing = _MERMAID_SHAPES[_shape_key(graph, name)]
        out.append(f"  {nid}{opening}{label}{closing}")
    for src, dst, port in _edges(graph, order, groups):
        arrow = f' -- "{port}" --> ' if port else " --> "
        out.append(f"  {ids[src]}{arrow}{ids[dst]}")
    return "\n".join(out)


FORMATS = {"text": to_text, "dot": to_dot, "mermaid": to_mermaid}
