"""Running programs: the two hot loops, and the contract checks of a program's first run.

Why checks only once: a plugin op can return the wrong number of values, a wrong shape or a
gradient for an input that needs none, and the user must hear which node did it — but checking
every call would double the per-node overhead of small ops.  So the first run of each compiled
program checks everything (arity, output shapes against ``infer``, gradient shapes against the
inputs) and marks the program checked; later runs trust it.  An exception raised inside an op
is always re-raised naming the node, its op type and its input shapes.

Without gradient, the forward loop runs a program's ``static_run`` when it has one (a frozen
plan's shape-only steps memoised, :mod:`.memo`): the list is chosen once per call and its
memoised groups are entries like any other, so the loops test nothing more per step.

Values live in a list indexed by slot (:mod:`.programs`).  A value is released to the plan's
:class:`~.memory.BufferPool` after its last reader, a gradient once the op that consumed it has
run backward.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..errors import FlowgradError, OpError, did_you_mean
from ..graph import Graph
from ..op import Context, format_shape
from .memory import BufferPool
from .params import ParamStore
from .programs import BackwardProgram, ForwardProgram, Layout, Step


def feed(layout: Layout, dtype: np.dtype, vals: list, feeds: Mapping[str, Any],
         program: ForwardProgram) -> None:
    """Check the inputs a program needs and put them, cast to ``dtype``, in their slots."""
    graph, slots = layout.graph, layout.input_slots
    unknown = [k for k in feeds if k not in slots]
    if unknown:
        raise FlowgradError(f"unknown input '{unknown[0]}'{did_you_mean(unknown[0], slots)}"
                            f" (inputs: {', '.join(slots)})")
    missing = [k for k in program.feeds if k not in feeds]
    if missing:
        raise FlowgradError(f"missing input '{missing[0]}': the requested outputs need "
                            f"{', '.join(sorted(program.feeds))}")
    specs = layout.input_specs
    for name, value in feeds.items():
        spec = specs[name]
        array = np.asarray(value)
        target = dtype if spec.dtype.kind == "f" else spec.dtype
        if array.dtype != target:
            if spec.dtype.kind in "iu" and array.dtype.kind == "f":
                if not np.all(np.mod(array, 1) == 0):
                    raise FlowgradError(f"input '{name}' holds integers ({spec.dtype}); got "
                                        f"non-integer values")
            array = array.astype(target)
        if array.shape != spec.shape and not fits(array.shape, spec):
            why = graph.extra(name, "fixed_batch")     # an ONNX model's own fixed batch
            raise FlowgradError(f"input '{name}' expects shape {format_shape(spec.shape)} "
                                f"(N is the batch), got {array.shape}"
                                + (f"; {why}" if why else ""))
        vals[slots[name]] = array


def run_forward(program: ForwardProgram, vals: list, ctxs: list, grad: bool, training: bool,
                rng: np.random.Generator, backend: Any, pool: BufferPool,
                store: ParamStore) -> None:
    """The forward hot loop: one call per step, state updates applied, values freed after
    their last reader; with ``grad``, each step gets its own ``Context``, kept in ``ctxs`` for
    backward (and the run left open for it).  Without ``grad`` nothing outlives a step, so one
    ``Context`` serves every step, emptied of what an op saved or updated after each."""
    release = pool.release
    step = None
    try:
        if not program.checked:
            _run_checked(program, vals, ctxs, grad, training, rng, backend, release, store)
        elif grad:
            for forward, get, arity, outs, free, step in program.run:
                ctx = Context(True, training, rng, backend)
                res = forward(ctx, get(vals)) if arity == 1 else forward(ctx, *get(vals))
                for port, slot in enumerate(outs):     # (no loop variable holds a value:
                    vals[slot] = res[port]             # the pool recycles unreferenced ones)
                if ctx.state is not None:
                    store.apply_state(step, ctx.state)
                for slot in free:
                    release(vals, slot)
                ctxs[step.index] = ctx
        else:
            ctx = Context(False, training, rng, backend)
            # (a frozen plan's static steps memoised, if it has any: chosen once per call)
            for forward, get, arity, outs, free, step in program.static_run or program.run:
                res = forward(ctx, get(vals)) if arity == 1 else forward(ctx, *get(vals))
                if len(outs) == 1:
                    vals[outs[0]] = res[0]
                else:
                    for port, slot in enumerate(outs):
                        vals[slot] = res[port]
                res = None
                if ctx.saved:
                    ctx.saved = ()
                if ctx.state is not None:
                    store.apply_state(step, ctx.state)
                    ctx.state = None
                for slot in free:
                    release(vals, slot)
    except FlowgradError:
        raise
    except Exception as e:
        raise op_error(store.graph, step, vals, e, "forward") from e
    finally:
        if not grad:        # with a backward to follow, the run ends after it
            pool.end_run()
    program.checked = True


def _run_checked(program: ForwardProgram, vals: list, ctxs: list, grad: bool, training: bool,
                 rng: np.random.Generator, backend: Any, release: Any, store: ParamStore
                 ) -> None:
    """A program's first run: as :func:`run_forward`, with every step's outputs checked
    against ``infer`` (errors name the step, re-raised by the caller as they are)."""
    step = None
    try:
        for forward, get, arity, outs, free, step in program.run:
            ctx = Context(grad, training, rng, backend)
            res = forward(ctx, get(vals)) if arity == 1 else forward(ctx, *get(vals))
            _check_outputs(store.graph, step, vals, res)
            for port, slot in enumerate(outs):
                vals[slot] = res[port]
            res = None
            if ctx.state is not None:
                store.apply_state(step, ctx.state)
            for slot in free:
                release(vals, slot)
            if grad:
                ctxs[step.index] = ctx
    except FlowgradError:
        raise
    except Exception as e:
        raise op_error(store.graph, step, vals, e, "forward") from e


def run_backward(graph: Graph, program: BackwardProgram, ctxs: list, g: list,
                 pool: BufferPool) -> None:
    """The backward hot loop over the gradient slots ``g`` (the seeds already in place).

    The gradients an op consumed, and what its forward saved, are recycled for the gradients
    still to come and for the next step's forward (:mod:`.memory`); the run then ends."""
    check = not program.checked
    release = pool.release
    for backward, step, needs, outs, writes in program.run:
        ctx = ctxs[step.index]
        ctx.needs_input_grad = needs
        try:
            res = backward(ctx, *[g[s] for s in outs])
        except FlowgradError:
            raise
        except Exception as e:
            raise op_error(graph, step, None, e, "backward") from e
        if check:
            _check_grads(graph, step, ctx, res)
        for i, slot, accumulate in writes:
            if accumulate and g[slot] is not None:
                g[slot] = g[slot] + res[i]
            else:
                g[slot] = res[i]
        for slot in outs:
            release(g, slot)
        saved, ctx.saved = list(ctx.saved), ()
        ctxs[step.index] = ctx = None
        if saved:
            pool.release_all(saved)
    program.checked = True
    pool.end_run()


def seed_value(ref: str, seed: Any, value: np.ndarray) -> np.ndarray:
    """The gradient seeding output ``ref``: ``seed`` as an array of the output's shape and
    dtype (a number seeds every element)."""
    seed = np.asarray(seed, dtype=value.dtype)
    if seed.shape == value.shape:
        return seed
    if seed.ndim == 0:
        return np.full(value.shape, seed, dtype=value.dtype)
    raise FlowgradError(f"the seed for '{ref}' has shape {seed.shape}, but '{ref}' has "
                        f"shape {value.shape}")


def fits(shape: tuple[int, ...], spec) -> bool:
    """Whether a concrete shape matches a spec's (``None`` dims match anything)."""
    return len(shape) == spec.ndim and all(d is None or d == n for d, n in zip(spec.shape, shape))


def op_error(graph: Graph, step: Step, vals: list | None, error: Exception | None, phase: str,
             message: str | None = None) -> OpError:
    """The error naming the node, its op type and (forward) its input shapes."""
    shapes = ""
    if vals is not None:
        shapes = " with inputs " + ", ".join(
            "-" if vals[s] is None else str(np.shape(vals[s])) for s in step.in_slots)
    cause = message or f"{type(error).__name__}: {error}"
    return OpError(f"{phase} of '{step.name}' ({step.op.type}) failed{shapes}: {cause}",
                   node=step.name, loc=graph.location(step.name))


def _check_outputs(graph: Graph, step: Step, vals: list, res: Any) -> None:
    n = len(step.out_slots)
    if not isinstance(res, tuple) or len(res) != n:
        raise op_error(graph, step, vals, None, "forward", f"forward() must return a tuple "
                       f"of {n} array(s), got {_kind(res)}")
    for port, (value, spec) in enumerate(zip(res, graph.specs(step.name))):
        if not fits(np.shape(value), spec):
            raise op_error(graph, step, vals, None, "forward",
                           f"output {port} has shape {np.shape(value)}, but infer() "
                           f"said {format_shape(spec.shape)}")


def _check_grads(graph: Graph, step: Step, ctx: Context, res: Any) -> None:
    n = len(step.in_slots)
    if not isinstance(res, tuple) or len(res) != n:
        raise op_error(graph, step, None, None, "backward", f"backward() must return a tuple "
                       f"of {n} gradient(s), one per input, got {_kind(res)}")
    for i, (need, grad) in enumerate(zip(ctx.needs_input_grad, res)):
        if not need:
            continue
        if grad is None:
            raise op_error(graph, step, None, None, "backward",
                           f"backward() returned None for input {i}, which needs a gradient")
        spec = graph.specs(step.sources[i])[step.src_ports[i]]
        if not fits(np.shape(grad), spec):
            raise op_error(graph, step, None, None, "backward",
                           f"the gradient for input {i} has shape {np.shape(grad)}, "
                           f"but the input has shape {format_shape(spec.shape)}")


def _kind(value: Any) -> str:
    return f"a tuple of {len(value)}" if isinstance(value, tuple) else type(value).__name__
