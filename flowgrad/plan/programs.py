"""Compiling: turn a prepared graph into programs, the lists of calls the hot loops run.

Why programs: deciding at every call which nodes to run, where each value lives and when it can
go would cost more than the small ops themselves.  So a :class:`Layout` fixes once, per graph,
a deterministic topological order and one integer *slot* per value (the hot loop indexes a list,
never a dict), and each request — a forward for some outputs, a backward for some seeds and
leaves — is compiled once into a program that the plan caches and reruns for every batch:

* a forward program runs only the ancestors of the asked outputs and frees every activation
  after its last reader (what backward needs stays in the node's ``ctx``); evaluated without
  gradient, it runs chains such as conv → batch_norm → relu as one step (:mod:`.fusion`);
* a backward program runs, in reverse, only the nodes that lie both downstream of a leaf that
  needs a gradient and upstream of a seeded output: Caffe's two passes, intersected;
* a frozen plan's forward program without gradient may have a second run list,
  ``static_run``, in which each run of steps that depend only on input shapes and constants is
  one memoised entry, computed once per shape (:mod:`.memo`).

Every step is linear in the number of nodes.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from operator import itemgetter
from typing import Any

from ..errors import FlowgradError, GraphError, did_you_mean
from ..graph import Graph
from .fusion import Chain, epilogue_chains, fused_forward

NONE_SLOT = 0  # slot 0 always holds None: an absent optional input reads it


@dataclass
class Step:
    """One op node as the hot loops see it: its op and the slots it reads and writes."""

    index: int                               # position among the op nodes (its ctx's index)
    name: str
    op: Any
    in_slots: tuple[int, ...]
    out_slots: tuple[int, ...]
    sources: tuple[str | None, ...]          # source node of each input (None: absent)
    src_ports: tuple[int | None, ...]        # and its output port
    state_leaves: dict[int, str]             # input port -> param leaf it updates (stateful ops)
    #: every node the step runs: its own, and for a fused step the nodes it absorbed (branches
    #: included), in order — what a profile or an error shows the step as
    fused: tuple[str, ...] = ()

    @property
    def nodes(self) -> tuple[str, ...]:
        return self.fused or (self.name,)


@dataclass
class ForwardProgram:
    run: list                                 # (forward, get, arity, out_slots, free, step)
    steps: list[Step]                         # the op nodes run, unfused, in order
    output_slots: dict[str, int]
    feeds: frozenset[str]                     # the inputs these outputs depend on
    checked: bool = False                     # contracts checked on the first run
    #: a frozen plan's run list without gradient, its static steps memoised (:mod:`.memo`);
    #: None when nothing is static, or the program is not for a frozen plan's evaluation
    static_run: list | None = None


@dataclass
class BackwardProgram:
    run: list                                 # (backward, step, needs, out_slots, writes) tuples
    seed_slots: dict[str, int]
    leaf_slots: dict[str, int]
    checked: bool = False


class Layout:
    """What compiling fixes once per graph: the order, the slots, a :class:`Step` per op."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.order = graph.topological_order()
        self.slot: dict[tuple[str, int], int] = {}
        for name in self.order:
            for port in range(graph.num_outputs(name)):
                self.slot[(name, port)] = len(self.slot) + 1
        self.num_slots = len(self.slot) + 1
        self._slot_ref = {slot: ref for ref, slot in self.slot.items()}
        self.input_slots = {n: self.slot[(n, 0)] for n in self.order if graph.is_input(n)}
        self.input_specs = {n: graph.spec_of(n) for n in self.input_slots}
        self.steps: dict[str, Step] = {}
        for index, name in enumerate(n for n in self.order if graph.is_op(n)):
            sources = graph.input_sources(name)
            op = graph.op_of(name)
            self.steps[name] = Step(
                index=index, name=name, op=op,
                in_slots=tuple(NONE_SLOT if s is None else self.slot[s] for s in sources),
                out_slots=tuple(self.slot[(name, p)] for p in range(graph.num_outputs(name))),
                sources=tuple(None if s is None else s[0] for s in sources),
                src_ports=tuple(None if s is None else s[1] for s in sources),
                state_leaves=_state_leaves(graph, sources) if op.updates_state else {})

    def slot_spec(self, slot: int) -> Any:
        """The Spec of the value in ``slot`` (None for the absent-input slot)."""
        if slot == NONE_SLOT:
            return None
        name, port = self._slot_ref[slot]
        return self.graph.specs(name)[port]


def compile_forward(layout: Layout, outputs: tuple[str, ...], fuse: bool) -> ForwardProgram:
    """The program computing ``outputs`` (``node`` or ``node.port``); ``fuse`` for evaluation
    without gradient."""
    graph = layout.graph
    targets: dict[str, int] = {}
    for ref in outputs:
        try:
            targets[ref] = layout.slot[graph.resolve(ref)]
        except KeyError as e:
            raise FlowgradError(f"cannot compute output: {e.args[0]}") from None
    needed = _upstream(graph, [graph.resolve(ref)[0] for ref in outputs])
    steps = [layout.steps[n] for n in layout.order if n in needed and n in layout.steps]
    keep = set(targets.values())
    last_read: dict[int, int] = {}
    for position, step in enumerate(steps):
        for slot in step.in_slots:
            last_read[slot] = position
    frees: list[list[int]] = [[] for _ in steps]
    for position, step in enumerate(steps):
        for slot in step.out_slots:
            if slot not in keep:
                frees[last_read.get(slot, position)].append(slot)
    chains = epilogue_chains(steps, keep, layout.slot_spec) if fuse else {}
    absorbed = {at for chain in chains.values() for at in chain.consumers + chain.hoist}
    run = []
    for position, (step, free) in enumerate(zip(steps, frees)):
        if position in absorbed:
            continue
        forward = step.op.forward
        if position in chains:
            chain = chains[position]
            for at in chain.hoist:      # computed from leaves alone: moved before the region
                hoisted = steps[at]
                run.append((hoisted.op.forward, _getter(hoisted.in_slots),
                            len(hoisted.in_slots), hoisted.out_slots, tuple(frees[at]), hoisted))
            # the values inside the region are never stored: only what the consumers read
            # last from outside it (a residual's shortcut) is freed after the step
            inside = {s for at in [position, *chain.consumers] for s in steps[at].out_slots}
            inside.discard(chain.result)
            free = [s for s in free + [s for at in chain.consumers for s in frees[at]]
                    if s not in inside]
            forward, step = _fused(layout, step, chain, steps)
        run.append((forward, _getter(step.in_slots), len(step.in_slots), step.out_slots,
                    tuple(free), step))
    return ForwardProgram(run, steps, targets,
                          frozenset(n for n in needed if n in layout.input_slots))


def _fused(layout: Layout, producer: Step, chain: Chain, steps: list[Step]
           ) -> tuple[Any, Step]:
    """The forward of a fused region, and its step: the producer's, reading the consumers'
    extra inputs too and writing the region's output (errors name the producer)."""
    in_slots = producer.in_slots + tuple(s for extras in chain.extras for s in extras)
    batched = tuple(_has_batch_axis(layout.slot_spec(s)) for s in producer.in_slots)
    forward = fused_forward(producer.op, batched, layout.slot_spec(producer.out_slots[0]),
                            [(steps[at].op, args, b) for at, args, b
                             in zip(chain.ops, chain.args, chain.batched)])
    fused = (producer.name,) + tuple(steps[at].name for at in chain.consumers)
    return forward, replace(producer, in_slots=in_slots, out_slots=(chain.result,), fused=fused)


def compile_backward(layout: Layout, forward: ForwardProgram, seed_refs: tuple[str, ...],
                     wrt: tuple[str, ...], trainable: list[str]) -> BackwardProgram:
    """The program backpropagating from ``seed_refs`` (outputs of ``forward``) to the
    ``trainable`` params and the leaves named in ``wrt``."""
    graph = layout.graph
    for name in wrt:
        if name not in layout.input_slots and not (name in graph.dag and graph.is_param(name)):
            known = list(layout.input_slots) + [n for n in layout.order if graph.is_param(n)]
            raise FlowgradError(f"cannot differentiate with respect to '{name}'"
                                + (f": it is a {graph.kind(name)}" if name in graph.dag
                                   else did_you_mean(name, known)))
        if name in layout.input_slots and graph.spec_of(name).dtype.kind != "f":
            raise FlowgradError(f"cannot differentiate with respect to '{name}': its dtype "
                                f"is {graph.spec_of(name).dtype}")
    seed_slots = {}
    for ref in seed_refs:
        if ref not in forward.output_slots:
            raise FlowgradError(f"cannot seed '{ref}': the last forward did not return it "
                                f"(outputs: {', '.join(forward.output_slots)}); "
                                "pass it in forward(outputs=...)")
        seed_slots[ref] = forward.output_slots[ref]
    leaves = list(dict.fromkeys(trainable + list(wrt)))
    carries = _downstream(graph, layout.order, leaves)
    upstream = _gradient_ancestors(graph, [graph.resolve(ref)[0] for ref in seed_refs])
    active = [s for s in forward.steps if s.name in carries and s.name in upstream]
    seeded = set(seed_slots.values())
    run = []
    for step in reversed(active):
        op = step.op
        ports = graph.port_names(step.name)
        needs = tuple(src is not None and src in carries and port not in op.no_grad_inputs
                      for src, port in zip(step.sources, ports))
        if not any(needs):
            continue
        if not op.differentiable:
            raise GraphError(f"'{step.name}' ({op.type}) is forward-only, but a gradient "
                             f"must flow through it to reach {', '.join(seed_refs)}; "
                             "detach it or choose other outputs"
                             + getattr(op, "forward_only_hint", ""),
                             node=step.name, loc=graph.location(step.name))
        # a seeded output that is also read downstream receives two gradients: added here
        writes = tuple((i, step.in_slots[i], step.in_slots[i] in seeded)
                       for i, need in enumerate(needs) if need)
        run.append((op.backward, step, needs, step.out_slots, writes))
    leaf_slots = {name: layout.slot[(name, 0)] for name in leaves}
    return BackwardProgram(run, seed_slots, leaf_slots)


def _getter(slots: tuple[int, ...]) -> Any:
    """``get(vals)``: the values in ``slots`` — a tuple, or the one value when there is one
    (the hot loop calls ``forward(ctx, get(vals))`` then, sparing a tuple)."""
    return itemgetter(*slots) if slots else _no_values


def _no_values(vals: list) -> tuple:
    return ()


def _state_leaves(graph: Graph, sources) -> dict[int, str]:
    """For a stateful op: which param leaf feeds each input (looking through branches)."""
    leaves = {}
    for port, src in enumerate(sources):
        node = None if src is None else src[0]
        while node is not None and graph.is_branch(node):
            node = graph.input_sources(node)[0][0]
        if node is not None and graph.is_param(node):
            leaves[port] = node
    return leaves


def _has_batch_axis(spec) -> bool:
    return spec is not None and spec.ndim > 0 and spec.shape[0] is None


def _upstream(graph: Graph, nodes: list[str]) -> set[str]:
    """``nodes`` and all their ancestors, in one traversal (linear in the graph's size)."""
    dag = graph.dag
    seen, stack = set(nodes), list(nodes)
    while stack:
        for src in dag.predecessors(stack.pop()):
            if src not in seen:
                seen.add(src)
                stack.append(src)
    return seen


def _downstream(graph: Graph, order: list[str], leaves: list[str]) -> set[str]:
    """``leaves`` and every node they reach: one sweep in topological order, where a node is
    reached when one of its predecessors is (linear, where a ``descendants`` call per leaf is
    quadratic on a long chain with a param at every step)."""
    dag = graph.dag
    reached = set(leaves)
    for name in order:
        if name not in reached and any(src in reached for src in dag.predecessors(name)):
            reached.add(name)
    return reached


def _gradient_ancestors(graph: Graph, nodes: list[str]) -> set[str]:
    """``nodes`` and every node a gradient can flow back to from them: ancestors reached
    through edges into ports that take a gradient.  A comparison feeding ``where``'s condition
    or a ``shape`` feeding a reshape's shape port is not upstream of the loss for backward.
    """
    seen, stack = set(nodes), list(nodes)
    while stack:
        name = stack.pop()
        if graph.is_leaf(name):
            continue
        blocked = graph.op_of(name).no_grad_inputs
        ports = graph.port_names(name)
        for port, src in zip(ports, graph.input_sources(name)):
            if src is not None and port not in blocked and src[0] not in seen:
                seen.add(src[0])
                stack.append(src[0])
    return seen
