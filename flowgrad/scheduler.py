"""The scheduler: compile a prepared graph into a :class:`Plan` and run it, batch after batch.

Compiling fixes a deterministic topological order and gives every value an integer slot, so the
hot loop is list indexing and one method call per node.  Which nodes run is decided per request
and cached:

* ``forward(feeds, outputs)`` runs only the ancestors of the asked outputs, keeps each node's
  ``ctx`` (what it saved for backward) and frees every other activation after its last reader;
* ``backward(seeds, wrt)`` runs, in reverse, only the nodes that lie both downstream of a leaf
  that needs a gradient (trainable params and the inputs named in ``wrt``) and upstream of a
  seeded output: Caffe's two passes, intersected;
* ``forward(..., grad=False)`` in evaluation mode runs a program of its own, in which chains
  such as conv → batch_norm → relu are fused into one step (:mod:`flowgrad.fusion`).

Each request's program is checked thoroughly the first time it runs (arity, output shapes,
gradient shapes) and trusted afterwards, keeping per-node overhead to a few microseconds.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping, Sequence

import networkx as nx
import numpy as np

from .errors import FlowgradError, GraphError, OpError, did_you_mean
from .fusion import Chain, epilogue_chains, fused_forward
from .graph import Graph
from .backend import CPUBackend
from .memory import BufferPool
from .op import Context, format_shape

_NONE_SLOT = 0  # slot 0 always holds None: an absent optional input reads it


@dataclass
class _Step:
    index: int
    name: str
    op: Any
    in_slots: tuple[int, ...]
    out_slots: tuple[int, ...]
    sources: tuple[str | None, ...]          # source node of each input (None: absent)
    src_ports: tuple[int | None, ...]        # and its output port
    state_leaves: dict[int, str]             # input port -> param leaf it updates (stateful ops)


@dataclass
class _ForwardProgram:
    run: list                                 # (forward, in_slots, out_slots, free, step) tuples
    steps: list[_Step]
    output_slots: dict[str, int]
    feeds: frozenset[str]                     # the inputs these outputs depend on
    checked: bool = False


@dataclass
class _BackwardProgram:
    run: list                                 # (backward, step, needs, out_slots, writes) tuples
    seed_slots: dict[str, int]
    leaf_slots: dict[str, int]
    checked: bool = False


class Plan:
    """A compiled graph: call :meth:`forward` then :meth:`backward`, for any batch size.

    ``params`` maps each param name to its live array (updated in place by optimizers and by
    stateful ops); ``dtype`` is the floating type every float leaf and feed is cast to.
    """

    def __init__(self, graph: Graph, dtype: Any = np.float32, seed: int = 0):
        if any(graph.node(n).get("specs") is None for n in graph.ops):
            from .passes import prepare
            graph = prepare(graph)
        self.graph = graph
        self.dtype = np.dtype(dtype)
        if self.dtype.kind != "f":
            raise FlowgradError(f"a plan's dtype must be a float type, got {self.dtype}")
        self.training = False
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.order = graph.topological_order()
        self._slot: dict[tuple[str, int], int] = {}
        for name in self.order:
            for port in range(graph.num_outputs(name)):
                self._slot[(name, port)] = len(self._slot) + 1
        self._num_slots = len(self._slot) + 1
        self._slot_ref = {slot: ref for ref, slot in self._slot.items()}
        self.params: dict[str, np.ndarray] = {}
        self._leaf_fill: list[tuple[int, np.ndarray]] = []
        self._input_slots: dict[str, int] = {}
        for name in self.order:
            data = graph.node(name)
            if data["kind"] == "input":
                self._input_slots[name] = self._slot[(name, 0)]
            elif data["kind"] in ("param", "const"):
                value = self._cast(data["value"])
                if data["kind"] == "param":
                    value = np.array(value, copy=True)
                    self.params[name] = value
                self._leaf_fill.append((self._slot[(name, 0)], value))
        self._steps: dict[str, _Step] = {}
        for index, name in enumerate(n for n in self.order if graph.node(n)["kind"] == "op"):
            data = graph.node(name)
            sources = graph.input_sources(name)
            self._steps[name] = _Step(
                index=index, name=name, op=data["op"],
                in_slots=tuple(_NONE_SLOT if s is None else self._slot[s] for s in sources),
                out_slots=tuple(self._slot[(name, p)] for p in range(graph.num_outputs(name))),
                sources=tuple(None if s is None else s[0] for s in sources),
                src_ports=tuple(None if s is None else s[1] for s in sources),
                state_leaves=self._state_leaves(name, sources) if data["op"].updates_state else {})
        self._forward_programs: dict[tuple, _ForwardProgram] = {}
        self._backward_programs: dict[tuple, _BackwardProgram] = {}
        self._last: tuple[_ForwardProgram, list, dict[int, np.ndarray]] | None = None
        self._pool = BufferPool()
        self.backend = CPUBackend(self._pool)

    # -- modes and parameters -----------------------------------------------------------
    def train(self, mode: bool = True) -> "Plan":
        """Switch ops that differ between training and evaluation (dropout, batch norm)."""
        self.training = mode
        return self

    def eval(self) -> "Plan":
        return self.train(False)

    @property
    def trainable(self) -> list[str]:
        """Names of the params that receive gradients (declaration order)."""
        return [n for n in self.params if self.graph.node(n)["trainable"]]

    def state_dict(self) -> dict[str, np.ndarray]:
        """A copy of every param (trainable and state)."""
        return {k: v.copy() for k, v in self.params.items()}

    def load_state_dict(self, values: Mapping[str, np.ndarray]) -> None:
        """Copy ``values`` into the live params (shapes must match; unknown names are errors)."""
        for name, value in values.items():
            if name not in self.params:
                raise FlowgradError(f"unknown param '{name}'{did_you_mean(name, self.params)}")
            value = np.asarray(value)
            if value.shape != self.params[name].shape:
                raise FlowgradError(f"param '{name}' has shape {self.params[name].shape}, "
                                    f"the value given has {value.shape}")
            self.params[name][...] = value

    def export_graph(self) -> Graph:
        """The graph with the plan's current param values, e.g. after training."""
        out = self.graph.copy()
        for name, value in self.params.items():
            out.node(name)["value"] = value.copy()
        return out

    # -- forward --------------------------------------------------------------------------
    def forward(self, feeds: Mapping[str, Any], outputs: Sequence[str] | None = None,
                grad: bool = True) -> dict[str, np.ndarray]:
        """Run the graph on a batch.

        ``feeds`` maps each input needed to an array whose leading axis is the batch;
        ``outputs`` (default: the graph's declared outputs) names the values to return, as
        ``node`` or ``node.port``.  With ``grad=False`` nothing is kept for backward.
        """
        outputs = tuple(self.graph.outputs if outputs is None else outputs)
        fuse = not grad and not self.training
        if self._last is not None:      # the last forward's backward never came: its run ends
            self._last = None
            self._pool.end_run()
        program = self._forward_programs.get((outputs, fuse))
        if program is None:
            program = self._forward_programs[(outputs, fuse)] = \
                self._compile_forward(outputs, fuse)
        vals: list[Any] = [None] * self._num_slots
        for slot, value in self._leaf_fill:
            vals[slot] = value
        self._feed(vals, feeds, program)
        ctxs: list[Context | None] = [None] * len(self._steps)
        self._run_forward(program, vals, ctxs, grad)
        result = {ref: vals[slot] for ref, slot in program.output_slots.items()}
        # keep the outputs (seeds need their shapes) and the feeds (a gradient asked for an
        # input that no path reaches is zeros of the input's shape)
        kept = {s: vals[s] for s in (*program.output_slots.values(), *self._input_slots.values())}
        self._last = (program, ctxs, kept) if grad else None
        return result

    def _run_forward(self, program: _ForwardProgram, vals: list, ctxs: list, grad: bool) -> None:
        """The hot loop.  A program's first run also checks each op's contract."""
        check = not program.checked
        training, rng, pool, backend = self.training, self.rng, self._pool, self.backend
        release = pool.release
        step = None
        try:
            for forward, ins, outs, free, step in program.run:
                ctx = Context(grad, training, rng, backend)
                res = forward(ctx, *[vals[i] for i in ins])
                if check:
                    self._check_outputs(step, vals, res)
                for port, slot in enumerate(outs):     # (no loop variable holds a value:
                    vals[slot] = res[port]             # the pool recycles unreferenced ones)
                if ctx.state is not None:
                    self._apply_state(step, ctx)
                for slot in free:
                    release(vals, slot)
                if grad:
                    ctxs[step.index] = ctx
        except FlowgradError:
            raise
        except Exception as e:
            raise self._op_error(step, vals, e, "forward") from e
        finally:
            if not grad:        # with a backward to follow, the run ends after it
                pool.end_run()
        program.checked = True

    def _check_outputs(self, step: _Step, vals: list, res: Any) -> None:
        n = len(step.out_slots)
        if not isinstance(res, tuple) or len(res) != n:
            raise self._op_error(step, vals, None, "forward", f"forward() must return a tuple "
                                 f"of {n} array(s), got {_kind(res)}")
        specs = self.graph.node(step.name)["specs"]
        for port, (value, spec) in enumerate(zip(res, specs)):
            if not _fits(np.shape(value), spec):
                raise self._op_error(step, vals, None, "forward",
                                     f"output {port} has shape {np.shape(value)}, but infer() "
                                     f"said {format_shape(spec.shape)}")

    def _feed(self, vals: list, feeds: Mapping[str, Any], program: _ForwardProgram) -> None:
        needed = program.feeds
        unknown = [k for k in feeds if k not in self._input_slots]
        if unknown:
            raise FlowgradError(f"unknown input '{unknown[0]}'"
                                f"{did_you_mean(unknown[0], self._input_slots)}"
                                f" (inputs: {', '.join(self._input_slots)})")
        missing = [k for k in needed if k not in feeds]
        if missing:
            raise FlowgradError(f"missing input '{missing[0]}': the requested outputs need "
                                f"{', '.join(sorted(needed))}")
        for name, value in feeds.items():
            spec = self.graph.node(name)["spec"]
            array = np.asarray(value)
            target = self.dtype if spec.dtype.kind == "f" else spec.dtype
            if array.dtype != target:
                if spec.dtype.kind != "f" and array.dtype.kind == "f" and spec.dtype.kind in "iu":
                    if not np.all(np.mod(array, 1) == 0):
                        raise FlowgradError(f"input '{name}' holds integers ({spec.dtype}); got "
                                            f"non-integer values")
                array = array.astype(target)
            if not _fits(array.shape, spec):
                raise FlowgradError(f"input '{name}' expects shape {format_shape(spec.shape)} "
                                    f"(N is the batch), got {array.shape}")
            vals[self._input_slots[name]] = array

    def _compile_forward(self, outputs: tuple[str, ...], fuse: bool) -> _ForwardProgram:
        targets: dict[str, int] = {}
        for ref in outputs:
            try:
                node, port = self.graph.resolve(ref)
            except KeyError as e:
                raise FlowgradError(f"cannot compute output: {e.args[0]}") from None
            targets[ref] = self._slot[(node, port)]
        needed = _upstream(self.graph.dag, [self.graph.resolve(ref)[0] for ref in outputs])
        steps = [self._steps[n] for n in self.order if n in needed and n in self._steps]
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
        chains = epilogue_chains(steps, keep, self._slot_spec) if fuse else {}
        absorbed = {at for chain in chains.values() for at in chain.consumers}
        run = []
        for position, (step, free) in enumerate(zip(steps, frees)):
            if position in absorbed:
                continue
            forward = step.op.forward
            if position in chains:
                chain = chains[position]
                forward, step = self._fused(step, chain, [steps[at] for at in chain.consumers])
                # what the consumers read last (the values fused away, a residual's shortcut)
                free = free + [s for at in chain.consumers for s in frees[at]]
            run.append((forward, step.in_slots, step.out_slots, tuple(free), step))
        return _ForwardProgram(run, steps, targets,
                               frozenset(n for n in needed if n in self._input_slots))

    def _fused(self, producer: _Step, chain: Chain, consumers: list[_Step]) -> tuple[Any, _Step]:
        """The forward of a fused chain, and its step: the producer's, reading the consumers'
        extra inputs too and writing the last consumer's output (errors name the producer)."""
        in_slots = producer.in_slots + tuple(s for extras in chain.extras for s in extras)
        batched = tuple(_has_batch_axis(self._slot_spec(s)) for s in producer.in_slots)
        forward = fused_forward(producer.op, batched, self._slot_spec(producer.out_slots[0]),
                                [(c.op, port, b) for c, port, b
                                 in zip(consumers, chain.ports, chain.batched)])
        return forward, replace(producer, in_slots=in_slots, out_slots=consumers[-1].out_slots)

    def _slot_spec(self, slot: int) -> Any:
        """The Spec of the value in ``slot`` (None for the absent-input slot)."""
        if slot == _NONE_SLOT:
            return None
        name, port = self._slot_ref[slot]
        return self.graph.specs(name)[port]

    def _state_leaves(self, name: str, sources) -> dict[int, str]:
        """For a stateful op: which param leaf feeds each input (looking through branches)."""
        leaves = {}
        for port, src in enumerate(sources):
            node = None if src is None else src[0]
            while node is not None and self.graph.node(node)["kind"] == "op" \
                    and self.graph.node(node)["op"].type == "branch":
                node = self.graph.input_sources(node)[0][0]
            if node is not None and self.graph.node(node)["kind"] == "param":
                leaves[port] = node
        return leaves

    def _apply_state(self, step: _Step, ctx: Context) -> None:
        for port, value in ctx.state.items():
            leaf = step.state_leaves.get(port)
            if leaf is None or self.graph.node(leaf)["trainable"]:
                raise OpError(f"'{step.name}' ({step.op.type}) updates its input {port}, which is "
                              "not fed by a non-trainable param", node=step.name)
            self.params[leaf][...] = value

    # -- backward -------------------------------------------------------------------------
    def backward(self, seeds: Mapping[str, Any], wrt: Iterable[str] = ()) -> dict[str, np.ndarray]:
        """Backpropagate from ``seeds`` through the last forward.

        ``seeds`` maps outputs to their gradients: ``{"loss": 1.0}`` for a scalar loss (the
        lecture notes' "the input to backward is the number 1"), or an array of the output's
        shape; a number seeds every element.  Returns gradients for every trainable param that
        the seeds reach and for each leaf named in ``wrt`` (zeros where no path exists).
        """
        if self._last is None:
            raise FlowgradError("backward() needs a forward(..., grad=True) first")
        forward_program, ctxs, out_vals = self._last
        wrt = tuple(wrt)
        key = (id(forward_program), tuple(seeds), wrt)
        program = self._backward_programs.get(key)
        if program is None:
            program = self._backward_programs[key] = self._compile_backward(
                forward_program, tuple(seeds), wrt)
        g: list[Any] = [None] * self._num_slots
        for ref, slot in program.seed_slots.items():
            g[slot] = self._seed_value(ref, seeds[ref], out_vals[slot])
        check = not program.checked
        pool = self._pool
        release = pool.release
        for backward, step, needs, outs, writes in program.run:
            ctx = ctxs[step.index]
            ctx.needs_input_grad = needs
            try:
                res = backward(ctx, *[g[s] for s in outs])
            except FlowgradError:
                raise
            except Exception as e:
                raise self._op_error(step, None, e, "backward") from e
            if check:
                self._check_grads(step, ctx, res)
            for i, slot, accumulate in writes:
                if accumulate and g[slot] is not None:
                    g[slot] = g[slot] + res[i]
                else:
                    g[slot] = res[i]
            # the gradients this op consumed, and what it saved, are recycled for the
            # gradients still to come and for the next step's forward (:mod:`flowgrad.memory`)
            for slot in outs:
                release(g, slot)
            saved, ctx.saved = list(ctx.saved), ()
            ctxs[step.index] = ctx = None
            if saved:
                pool.release_all(saved)
        program.checked = True
        self._last = None
        self._pool.end_run()
        grads = {}
        for name, slot in program.leaf_slots.items():
            value = g[slot]
            if value is None:
                if name not in wrt:
                    continue
                value = np.zeros_like(self.params[name] if name in self.params
                                      else out_vals[slot])
            grads[name] = value
        return grads

    def _seed_value(self, ref: str, seed: Any, value: np.ndarray) -> np.ndarray:
        seed = np.asarray(seed, dtype=value.dtype)
        if seed.shape == value.shape:
            return seed
        if seed.ndim == 0:
            return np.full(value.shape, seed, dtype=value.dtype)
        raise FlowgradError(f"the seed for '{ref}' has shape {seed.shape}, but '{ref}' has "
                            f"shape {value.shape}")

    def _compile_backward(self, forward_program: _ForwardProgram, seed_refs: tuple[str, ...],
                          wrt: tuple[str, ...]) -> _BackwardProgram:
        graph, dag = self.graph, self.graph.dag
        for name in wrt:
            if name not in self._input_slots and name not in self.params:
                kind = graph.node(name)["kind"] if name in dag else None
                raise FlowgradError(f"cannot differentiate with respect to '{name}'"
                                    + (f": it is a {kind}" if kind else did_you_mean(
                                        name, list(self._input_slots) + list(self.params))))
            if name in self._input_slots and graph.node(name)["spec"].dtype.kind != "f":
                raise FlowgradError(f"cannot differentiate with respect to '{name}': its dtype "
                                    f"is {graph.node(name)['spec'].dtype}")
        seed_slots = {}
        for ref in seed_refs:
            if ref not in forward_program.output_slots:
                raise FlowgradError(f"cannot seed '{ref}': the last forward did not return it "
                                    f"(outputs: {', '.join(forward_program.output_slots)}); "
                                    "pass it in forward(outputs=...)")
            seed_slots[ref] = forward_program.output_slots[ref]
        leaves = list(dict.fromkeys(self.trainable + list(wrt)))
        carries = _downstream(dag, self.order, leaves)
        upstream = _gradient_ancestors(graph, [graph.resolve(ref)[0] for ref in seed_refs])
        active = [s for s in forward_program.steps if s.name in carries and s.name in upstream]
        seeded = set(seed_slots.values())
        run = []
        for step in reversed(active):
            op = step.op
            needs = tuple(src is not None and src in carries and port not in op.no_grad_inputs
                          for src, port in zip(step.sources, _ports(op, len(step.sources))))
            if not any(needs):
                continue
            if not op.differentiable:
                raise GraphError(f"'{step.name}' ({op.type}) is forward-only, but a gradient "
                                 f"must flow through it to reach {', '.join(seed_refs)}; "
                                 "detach it or choose other outputs",
                                 node=step.name, loc=graph.node(step.name)["loc"])
            writes = tuple((i, step.in_slots[i], step.in_slots[i] in seeded)
                           for i, need in enumerate(needs) if need)
            run.append((op.backward, step, needs, step.out_slots, writes))
        leaf_slots = {name: self._slot[(name, 0)] for name in leaves}
        return _BackwardProgram(run, seed_slots, leaf_slots)

    def _check_grads(self, step: _Step, ctx: Context, res: Any) -> None:
        n = len(step.in_slots)
        if not isinstance(res, tuple) or len(res) != n:
            raise self._op_error(step, None, None, "backward", f"backward() must return a tuple "
                                 f"of {n} gradient(s), one per input, got {_kind(res)}")
        for i, (need, grad) in enumerate(zip(ctx.needs_input_grad, res)):
            if not need:
                continue
            if grad is None:
                raise self._op_error(step, None, None, "backward",
                                     f"backward() returned None for input {i}, which needs a "
                                     "gradient")
            spec = self.graph.specs(step.sources[i])[step.src_ports[i]]
            if not _fits(np.shape(grad), spec):
                raise self._op_error(step, None, None, "backward",
                                     f"the gradient for input {i} has shape {np.shape(grad)}, "
                                     f"but the input has shape {format_shape(spec.shape)}")

    # -- convenience ----------------------------------------------------------------------
    def forward_backward(self, feeds: Mapping[str, Any], seeds: Mapping[str, Any],
                         wrt: Iterable[str] = (), outputs: Sequence[str] | None = None,
                         micro_batch: int | None = None, reduction: str = "mean"):
        """Forward then backward; with ``micro_batch``, split the batch and accumulate.

        Splitting bounds memory for large batches.  Outputs with a batch axis are concatenated;
        scalar outputs (losses) and gradients are combined as ``reduction`` says: ``"mean"``
        (the default, for losses that average over the batch: chunk i is weighted n_i / N) or
        ``"sum"``.  Returns ``(outputs, grads)``.
        """
        outputs = tuple(dict.fromkeys(tuple(self.graph.outputs if outputs is None else outputs)
                                      + tuple(seeds)))
        wrt = tuple(wrt)
        if reduction not in ("mean", "sum"):
            raise FlowgradError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        sizes = {np.shape(v)[0] for v in feeds.values() if np.ndim(v) > 0}
        if micro_batch is None or not sizes or max(sizes) <= micro_batch:
            out = self.forward(feeds, outputs)
            return out, self.backward(seeds, wrt)
        if len(sizes) != 1:
            raise FlowgradError(f"micro-batching needs one batch size, inputs have {sorted(sizes)}")
        total = sizes.pop()
        outs: dict[str, list] = {k: [] for k in outputs}
        grads: dict[str, list] = {}
        for start in range(0, total, micro_batch):
            chunk = {k: (v[start:start + micro_batch] if np.ndim(v) > 0 else v)
                     for k, v in feeds.items()}
            weight = 1.0 if reduction == "sum" else min(micro_batch, total - start) / total
            for k, v in self.forward(chunk, outputs).items():
                outs[k].append((v, weight))
            for k, v in self.backward(seeds, wrt).items():
                grads.setdefault(k, []).append((v, weight))
        # A value with a batch axis is per sample: its chunks are concatenated (gradients of
        # batched inputs scaled by their chunk's weight).  Anything else (a loss, a param's
        # gradient) was reduced over the chunk: the chunks are combined by weight.
        merged = {}
        for k, parts in outs.items():
            node, port = self.graph.resolve(k)
            per_sample = self.graph.specs(node)[port].shape[:1] == (None,)
            merged[k] = (np.concatenate([v for v, _ in parts]) if per_sample
                         else _weighted_sum(parts))
        combined = {k: (np.concatenate([v * w for v, w in parts]) if k in self._input_slots
                        else _weighted_sum(parts)) for k, parts in grads.items()}
        return merged, combined

    # -- helpers --------------------------------------------------------------------------
    def _cast(self, value: np.ndarray) -> np.ndarray:
        value = np.asarray(value)
        return value.astype(self.dtype, copy=False) if value.dtype.kind == "f" else value

    def _op_error(self, step: _Step, vals: list | None, error: Exception | None, phase: str,
                  message: str | None = None) -> OpError:
        data = self.graph.node(step.name)
        shapes = ""
        if vals is not None:
            shapes = " with inputs " + ", ".join(
                "-" if vals[s] is None else str(np.shape(vals[s])) for s in step.in_slots)
        cause = message or f"{type(error).__name__}: {error}"
        return OpError(f"{phase} of '{step.name}' ({step.op.type}) failed{shapes}: {cause}",
                       node=step.name, loc=data.get("loc"))


def _fits(shape: tuple[int, ...], spec) -> bool:
    """Whether a concrete shape matches a spec's (``None`` dims match anything)."""
    return len(shape) == spec.ndim and all(d is None or d == n for d, n in zip(spec.shape, shape))


def _has_batch_axis(spec) -> bool:
    return spec is not None and spec.ndim > 0 and spec.shape[0] is None


def _weighted_sum(parts: list[tuple[np.ndarray, float]]) -> np.ndarray:
    total = parts[0][0] * parts[0][1]
    for value, weight in parts[1:]:
        total = total + value * weight
    return np.asarray(total, dtype=parts[0][0].dtype)


def _ports(op, n: int) -> tuple[str, ...]:
    return (op.input_names[0],) * n if op.variadic else op.input_names


def _upstream(dag: nx.MultiDiGraph, nodes: list[str]) -> set[str]:
    """``nodes`` and all their ancestors, in one traversal (linear in the graph's size)."""
    seen, stack = set(nodes), list(nodes)
    while stack:
        for src in dag.predecessors(stack.pop()):
            if src not in seen:
                seen.add(src)
                stack.append(src)
    return seen


def _downstream(dag: nx.MultiDiGraph, order: list[str], leaves: list[str]) -> set[str]:
    """``leaves`` and every node they reach: one sweep in topological order, where a node is
    reached when one of its predecessors is (linear, where a ``descendants`` call per leaf is
    quadratic on a long chain with a param at every step)."""
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
        data = graph.node(name)
        if data["kind"] != "op":
            continue
        op = data["op"]
        ports = _ports(op, data["num_inputs"])
        for src, _, e in graph.dag.in_edges(name, data=True):
            if ports[e["dst_port"]] not in op.no_grad_inputs and src not in seen:
                seen.add(src)
                stack.append(src)
    return seen


def _kind(value: Any) -> str:
    return f"a tuple of {len(value)}" if isinstance(value, tuple) else type(value).__name__


def compile(graph: Graph, dtype: Any = np.float32, seed: int = 0) -> Plan:  # noqa: A001
    """Compile a graph (prepared by :func:`flowgrad.passes.prepare` if it is not yet)."""
    return Plan(graph, dtype=dtype, seed=seed)
