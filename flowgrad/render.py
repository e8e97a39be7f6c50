"""Drawing a graph as text, Graphviz dot or Mermaid, with branch and merge nodes visible.

Leaves are drawn as ellipses (inputs), boxes with rounded corners (params) or plain text (consts),
ops as boxes, ``branch`` nodes as small diamonds, and edges are labelled with the ports they join
where a node has several.
"""
from __future__ import annotations

from .graph import Graph

MERGE_OPS = frozenset({"concat", "sum", "add"})


def _label(graph: Graph, name: str) -> str:
    data = graph.node(name)
    specs = graph.specs(name) or ()
    shape = ", ".join(str(s) for s in specs[:1]) + (" ..." if len(specs) > 1 else "")
    if data["kind"] == "op":
        return f"{name}\\n{data['op'].type} {shape}".rstrip()
    return f"{name}\\n{data['kind']} {shape}".rstrip()


def _edges(graph: Graph):
    for src, dst, d in sorted(graph.dag.edges(data=True),
                              key=lambda e: (graph.node(e[1])["order"], e[2]["dst_port"])):
        src_names = graph.output_names(src)
        dst_data = graph.node(dst)
        port = ""
        if len(src_names) > 1:
            port = src_names[d["src_port"]]
        if dst_data["kind"] == "op" and dst_data["num_inputs"] > 1:
            op = dst_data["op"]
            dst_port = (f"{op.input_names[0]}[{d['dst_port']}]" if op.variadic
                        else op.input_names[d["dst_port"]])
            port = f"{port}→{dst_port}" if port else dst_port
        yield src, dst, port


def to_text(graph: Graph) -> str:
    lines = [f"graph {graph.name}"]
    for name in graph.topological_order():
        data = graph.node(name)
        specs = ", ".join(str(s) for s in graph.specs(name) or ())
        kind = data["op"].type if data["kind"] == "op" else data["kind"]
        sources = ""
        if data["kind"] == "op":
            refs = []
            for port, src in zip(_ports(data), graph.input_sources(name)):
                if src is not None:
                    refs.append(f"{port}={graph.value_name(*src)}")
            sources = "(" + ", ".join(refs) + ")"
        lines.append(f"  {name:<22} {kind + sources:<48} -> {specs}")
    lines.append("  outputs: " + ", ".join(graph.outputs))
    return "\n".join(lines)


def _ports(data) -> tuple[str, ...]:
    op = data["op"]
    if op.variadic:
        return tuple(f"{op.input_names[0]}[{i}]" for i in range(data["num_inputs"]))
    return op.input_names


def _ids(graph: Graph) -> dict[str, str]:
    return {n: f"n{i}" for i, n in enumerate(graph.topological_order())}


def to_dot(graph: Graph) -> str:
    ids = _ids(graph)
    out = [f'digraph "{graph.name}" {{', "  rankdir=TB;",
           '  node [fontname="Helvetica", fontsize=10];']
    for name, nid in ids.items():
        data = graph.node(name)
        label = _label(graph, name).replace('"', '\\"')
        if data["kind"] == "input":
            style = "shape=ellipse, style=filled, fillcolor=lightblue"
        elif data["kind"] == "param":
            style = "shape=box, style=\"rounded,filled\", fillcolor=lightyellow"
        elif data["kind"] == "const":
            style = "shape=plaintext"
        elif data["op"].type == "branch":
            style = "shape=diamond, style=filled, fillcolor=orange, fontsize=8"
        elif data["op"].type in MERGE_OPS:
            style = "shape=invtrapezium, style=filled, fillcolor=palegreen"
        else:
            style = "shape=box"
        if name in {graph.resolve(r)[0] for r in graph.outputs}:
            style += ", penwidth=2"
        out.append(f'  {nid} [label="{label}", {style}];')
    for src, dst, port in _edges(graph):
        label = f' [label="{port}", fontsize=8]' if port else ""
        out.append(f"  {ids[src]} -> {ids[dst]}{label};")
    out.append("}")
    return "\n".join(out)


def to_mermaid(graph: Graph) -> str:
    ids = _ids(graph)
    out = ["flowchart TD"]
    for name, nid in ids.items():
        data = graph.node(name)
        label = _label(graph, name).replace("\\n", "<br/>").replace('"', "'")
        if data["kind"] == "input":
            out.append(f'  {nid}(["{label}"])')
        elif data["kind"] in ("param", "const"):
            out.append(f'  {nid}("{label}")')
        elif data["op"].type == "branch":
            out.append(f'  {nid}{{"{label}"}}')
        elif data["op"].type in MERGE_OPS:
            out.append(f'  {nid}[/"{label}"\\]')
        else:
            out.append(f'  {nid}["{label}"]')
    for src, dst, port in _edges(graph):
        arrow = f' -- "{port}" --> ' if port else " --> "
        out.append(f"  {ids[src]}{arrow}{ids[dst]}")
    return "\n".join(out)


FORMATS = {"text": to_text, "dot": to_dot, "mermaid": to_mermaid}
