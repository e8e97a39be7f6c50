"""Graph passes.  Each is a pure function ``Graph -> Graph`` and idempotent.

:func:`prepare` runs them in order: validate the wiring, route fan-out through explicit
``branch`` nodes, then infer every value's shape and dtype.  Each pass reports all the problems it
finds at once, located at the offending node's source position.

Passes run once per graph: the front ends (:mod:`flowgrad.loaders`) prepare what they load,
:func:`flowgrad.compile` prepares a graph built by hand, and :func:`prepare` returns a graph
that is already prepared (``graph.prepared``) as it is, so no consumer re-runs them.
"""
from __future__ import annotations

import networkx as nx

from .errors import DiagnosticList, GraphError, ShapeError
from .graph import Graph
from .op import Spec, format_shape
from .ops.merge import Branch


def validate(graph: Graph) -> Graph:
    """Check the wiring: no cycles, every required port connected once, declared outputs exist."""
    errors = DiagnosticList()
    dag = graph.dag
    declared = graph.ordered_nodes()
    try:  # find_cycle is slow on large multigraphs; a topological sort settles the usual case
        cycle = None if nx.is_directed_acyclic_graph(dag) else nx.find_cycle(dag)
    except nx.NetworkXNoCycle:
        cycle = None
    if cycle:
        names = [edge[0] for edge in cycle]
        first = next(n for n in declared if n in set(names))
        errors.add("the graph has a cycle: " + " -> ".join(names + [names[0]])
                   + "; a network must be a DAG", loc=graph.location(first), node=first)
    for name in declared:
        loc = graph.location(name)
        if graph.is_leaf(name):
            if dag.in_degree(name):
                errors.add(f"leaf '{name}' cannot have inputs", loc=loc, node=name)
            continue
        op = graph.op_of(name)
        seen: dict[int, int] = {}
        for _, _, e in dag.in_edges(name, data=True):
            seen[e["dst_port"]] = seen.get(e["dst_port"], 0) + 1
        ports = graph.port_names(name, indexed=True)
        for index, port in enumerate(ports):
            count = seen.get(index, 0)
            if count > 1:
                errors.add(f"input '{port}' of '{name}' is connected {count} times",
                           loc=loc, node=name)
            elif count == 0 and port not in op.optional_inputs:
                errors.add(f"'{name}' ({op.type}) is missing its input '{port}'"
                           f" (inputs: {', '.join(op.inputs)})", loc=loc, node=name)
        if op.variadic and graph.num_inputs(name) < op.min_inputs:
            errors.add(f"'{name}' ({op.type}) needs at least {op.min_inputs} inputs, "
                       f"got {graph.num_inputs(name)}", loc=loc, node=name)
        for src, _, e in dag.in_edges(name, data=True):
            if e["dst_port"] >= len(ports):
                errors.add(f"'{name}' ({op.type}) has no input position {e['dst_port']}",
                           loc=loc, node=name)
            if e["src_port"] >= graph.num_outputs(src):
                errors.add(f"'{src}' has no output {e['src_port']}", loc=loc, node=name)
    for ref in graph.outputs:
        try:
            graph.resolve(ref)
        except KeyError as e:
            errors.add(f"graph output: {e.args[0]}")
    errors.raise_if_any(GraphError)
    return graph


def insert_branches(graph: Graph) -> Graph:
    """Route every output read by more than one input port through an explicit ``branch`` node.

    This is Caffe's split insertion and the lecture notes' branch module (§14.7-14.8): a
    parameter used by two layers (a tied weight) gets a branch too, so its gradient is the sum of
    both uses, computed in exactly one place.  Running it again changes nothing.
    """
    out = graph.copy()
    dag = out.dag
    for name in graph.topological_order():
        for port in range(graph.num_outputs(name)):
            readers = out.consumers(name, port)
            if len(readers) < 2:
                continue
            branch = f"{name}#branch" if port == 0 else f"{name}.{port}#branch"
            # a fractional order between the source and the next declared node keeps the
            # topological order deterministic and close to declaration order
            order = out.order_of(name) + (port + 1) / (graph.num_outputs(name) + 1)
            out.add_op(branch, Branch(n=len(readers)), num_inputs=1, loc=out.location(name),
                       order=order)
            stale = [(dst, key) for _, dst, key, d in dag.out_edges(name, keys=True, data=True)
                     if d["src_port"] == port]
            for dst, key in stale:
                dag.remove_edge(name, dst, key)
            out.connect(name, port, branch, 0)
            for i, (dst, dst_port) in enumerate(readers):
                out.connect(branch, i, dst, dst_port)
    return out


def infer_shapes(graph: Graph) -> Graph:
    """Give every op node ``specs``: the shape and dtype of each output.

    A node whose op rejects its input shapes is reported with the shapes it got; nodes that
    depend on it are skipped, and every independent failure is reported together.
    """
    out = graph.copy()
    errors = DiagnosticList()
    for name in out.topological_order():
        if out.is_leaf(name):
            continue
        out.set_specs(name, None)
        sources = out.input_sources(name)
        in_specs: list[Spec | None] = []
        for src in sources:
            if src is None:
                in_specs.append(None)
                continue
            specs = out.specs(src[0])
            if specs is None:
                break
            in_specs.append(specs[src[1]])
        else:
            op = out.op_of(name)
            try:
                specs = tuple(op.infer(*in_specs))
            except ShapeError as e:
                shown = ", ".join(f"{p}: {'-' if s is None else s}"
                                  for p, s in zip(out.port_names(name, indexed=True), in_specs))
                errors.add(f"'{name}' ({op.type}): {e} [inputs: {shown}]",
                           loc=out.location(name), node=name)
                continue
            expected = out.num_outputs(name)
            if len(specs) != expected or not all(isinstance(s, Spec) for s in specs):
                errors.add(f"'{name}' ({op.type}): infer() returned {specs!r}, expected "
                           f"{expected} Spec(s)", loc=out.location(name), node=name)
                continue
            out.set_specs(name, specs)
    errors.raise_if_any(GraphError)
    return out


def prepare(graph: Graph) -> Graph:
    """Validate, insert branches and infer shapes: what every front end runs after loading.

    Returns a new graph marked ``prepared``; a graph that already is comes back unchanged, so
    calling it again (as :func:`flowgrad.compile` does) costs nothing."""
    if graph.prepared:
        return graph
    out = infer_shapes(insert_branches(validate(graph)))
    out.prepared = True
    return out


def describe(graph: Graph) -> list[tuple[str, str, str]]:
    """``(node, op type, output shapes)`` rows in topological order, for ``flowgrad check``."""
    rows = []
    for name in graph.topological_order():
        kind = graph.op_of(name).type if graph.is_op(name) else graph.kind(name)
        specs = graph.specs(name) or ()
        rows.append((name, kind, ", ".join(str(s) for s in specs)))
    return rows


__all__ = ["validate", "insert_branches", "infer_shapes", "prepare", "describe", "format_shape"]
