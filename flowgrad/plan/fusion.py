"""Plan-owned fusion: run chains such as conv → batch_norm → relu as one step when evaluating.

Why: with no backward to follow, nothing needs the values between a convolution and the
per-channel or elementwise ops after it.  Run separately, each of those ops streams the whole
tensor through memory once more; fused, the chain runs on one cache-sized block of batch rows at
a time, every op of it over the block while it is still in cache, each writing over the block
in place.  A batch norm in evaluation mode right after a conv or dense layer is folded into the
weights on each call, so it costs what a bias does.  This is what onnxruntime's conv +
batch-norm folding and conv + activation fusion buy it, without baking the weights in: the
plan's params stay live, so training, ``load_state_dict`` or an optimizer step between two
evaluations is seen at once.  A frozen plan (:meth:`Plan.freeze`) bakes them in: its params
are constants, so the folded weights, and the constant operands of a region's one-pass
program, are worked out once.

The plan decides all of it from what ops *declare* (:mod:`flowgrad.op`); no op calls into its
neighbours:

* ``rowwise``: each batch row of the output depends only on the same row of the batched inputs,
  when evaluating — the plan may run the op on a block of rows;
* ``inplace``: ``forward`` may write its output over its first input (it reads each element
  before writing it), and allocates that output with ``ctx.backend.empty`` — the plan *places*
  the output over the input (:class:`Placed`), so the op runs in place without knowing it;
* ``commutative``: the inputs may be given in any order (add, sum), so the fused value can be
  passed first whichever port it came in on;
* ``affine(ctx, *rest) -> (scale, shift)``: in evaluation the op is ``scale * x + shift`` per
  channel of axis 1 (batch norm);
* ``channel_weights`` / ``channel_axis``: output channel ``c`` (on ``channel_axis``) is linear in
  slice ``c`` of these inputs along the given axes (conv: ``W`` axis 0 and ``b``; dense: ``W``
  axis 1 and ``b``) — so a following ``affine`` folds into them.

A *producer* (``rowwise``, one output) takes a *region*: the steps reading its output, and
those reading theirs, while each is ``rowwise`` and ``inplace`` with an output of the same
shape and dtype (a ``branch`` just passes the value on).  A region's values may be read more
than once inside it — hard-swish's ``x * clip(x + 3, 0, 6) / 6`` and SiLU's
``x * sigmoid(x)`` read ``x`` twice — but only inside it: the region kept is the largest in
which every value but the last has all its readers inside (and is not asked for).  A
consumer's other inputs must be ready when the producer starts — leaves, or values computed
earlier that nothing outside the region reads after the producer — so a residual ``sum``
joins the convolution before it.  Each value is placed over an input read for the last time
(its first port, any port if ``commutative``), else in a buffer whose value is dead, else in
a scratch block.  When every consumer declares ``pointwise`` and its other inputs are
per-channel or of the block's shape, the region runs as one compiled pass over the block
instead of op by op (:mod:`.pointwise`).

A model that fixes its batch (no free batch axis: onnx's ResNet-50 reshapes to
``[1, 2048]``) has no rows to cut: each of its regions runs as one block, the whole tensor.

Values asked for as outputs are never fused away.  The plan fuses only programs run
without gradient in evaluation mode.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..op import Context

#: Target size, in elements, of the block of output rows a fused chain computes at a time:
#: small enough to stay in cache while the chain's ops pass over it, large enough that the
#: producer's products stay efficient.
BLOCK_ELEMENTS = 1 << 20


@dataclass
class Chain:
    """The region fused into one producer.

    ``consumers`` are the positions of every step it absorbs (branches included); ``ops`` the
    positions of those that run, in order.  Values inside the region are numbered: 0 is the
    producer's output, ``i + 1`` the output of ``ops[i]`` (a branch passes its input's number
    on).  Per op: ``args`` gives, port by port, the number of the in-region value it reads or
    None for an input from outside (``extras``, in port order), and ``batched`` which of those
    extras have a batch axis (they are cut to the rows of each block).  ``result`` is the slot
    of the region's output.  ``hoist`` are steps computed after the producer from leaves or
    values computed before it (a bias reshaped from a constant) that the region reads: they
    run just before it."""

    consumers: list[int] = field(default_factory=list)
    ops: list[int] = field(default_factory=list)
    args: list[tuple[int | None, ...]] = field(default_factory=list)
    extras: list[tuple[int, ...]] = field(default_factory=list)
    batched: list[tuple[bool, ...]] = field(default_factory=list)
    result: int = 0
    hoist: list[int] = field(default_factory=list)


def epilogue_chains(steps: Sequence[Any], keep: set[int],
                    spec_of: Callable[[int], Any]) -> dict[int, Chain]:
    """``{producer position: Chain}`` for a program's ``steps``.

    ``steps`` are a program's steps in execution order (``op``, ``in_slots``,
    ``out_slots``), ``keep`` the slots returned to the caller, ``spec_of(slot)`` the Spec of a
    slot's value (None for the absent-input slot).
    """
    produced_at = {slot: pos for pos, step in enumerate(steps) for slot in step.out_slots}
    readers: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for pos, step in enumerate(steps):
        for port, slot in enumerate(step.in_slots):
            readers[slot].append((pos, port))
    chains: dict[int, Chain] = {}
    fused: set[int] = set()
    for pos, step in enumerate(steps):
        if pos in fused or not step.op.rowwise or len(step.out_slots) != 1:
            continue
        spec = spec_of(step.out_slots[0])
        if spec.ndim == 0:
            continue
        chain = _region(steps, pos, spec, keep, spec_of, produced_at, readers, fused)
        if chain is not None:
            chains[pos] = chain
            fused.update(chain.consumers)
            fused.update(chain.hoist)
    return chains


def _region(steps, pos, spec, keep, spec_of, produced_at, readers, fused) -> Chain | None:
    """The largest region the producer at ``pos`` can take (see the module doc), or None.

    Grows one step at a time, always taking the earliest step that reads a value of the
    region, while that step can join; the region kept is the largest one seen that is
    *closed*: every value in it but the last is read only inside it and not asked for."""
    value_of = {steps[pos].out_slots[0]: 0}      # in-region slot -> value number
    taken: set[int] = set()
    chain, best = Chain(), None
    result = steps[pos].out_slots[0]

    hoists: list[tuple[int, int]] = []           # (op index needing it, step position)

    def ready(slot: int, at: int) -> bool:
        # computed before the producer, and read by nothing that runs between the producer
        # and the region's end (its last reader then is in the region, or before it)
        if slot not in produced_at:
            return True
        q = produced_at[slot]
        if q < pos:
            return all(p < pos or p == at or p in taken for p, _ in readers[slot])
        # or computed later from leaves, or from values computed before the producer (a
        # bias reshaped from a constant, a quantized model's int32 bias cast first): it can
        # run just before the region
        step = steps[q]
        if (q < at and q not in fused and step.in_slots and len(step.out_slots) == 1
                and not step.op.updates_state
                and all(produced_at.get(s, -1) < pos for s in step.in_slots)):
            hoists.append((len(chain.ops), q))
            return True
        return False

    while True:
        waiting = [p for slot in value_of for p, _ in readers[slot] if p not in taken]
        if not waiting:
            break
        at = min(waiting)
        step = steps[at]
        op = step.op
        if at in fused:
            break
        if op.branch and len(step.in_slots) == 1:
            for slot in step.out_slots:
                value_of[slot] = value_of[step.in_slots[0]]
        else:
            if (not op.rowwise or not op.inplace or len(step.out_slots) != 1
                    or spec_of(step.out_slots[0]) != spec):
                break
            args = [value_of.get(slot) for slot in step.in_slots]
            extras = [slot for slot, v in zip(step.in_slots, args) if v is None]
            if not all(ready(slot, at) for slot in extras):
                break
            chain.ops.append(at)
            chain.args.append(tuple(args))
            chain.extras.append(tuple(extras))
            chain.batched.append(tuple(_batched(spec_of(s), spec) for s in extras))
            result = step.out_slots[0]
            value_of[result] = len(chain.ops)
        chain.consumers.append(at)
        taken.add(at)
        if all(slot == result or slot not in keep and all(p in taken for p, _ in readers[slot])
               for slot in value_of):
            best = (len(chain.consumers), len(chain.ops), result)
    if best is None or best[1] == 0:
        return None
    n, k, chain.result = best
    chain.hoist = sorted({q for i, q in hoists if i < k})
    del chain.consumers[n:]
    for items in (chain.ops, chain.args, chain.extras, chain.batched):
        del items[k:]
    return chain


def _batched(extra, spec) -> bool:
    """Whether an extra input runs along the chain's batch axis (rather than broadcasting)."""
    return extra is not None and extra.ndim == spec.ndim and extra.shape[0] != 1


class Placed:
    """A backend whose next ``empty`` of a block's shape returns that block of the output.

    How the plan puts an op's output where it wants it — in the block of the fused output, or
    over the op's own input to run it in place — through the one call ops already make to
    allocate their output.  ``target`` is the block itself, or a ``(whole, start, stop)``
    triple when the whole output is to be allocated on first use (its dtype is the op's to
    choose: a float64 plan computes in float64 whatever the specs say).  An op that allocates
    its output otherwise simply has it copied there (:func:`_run_into`).
    """

    __slots__ = ("base", "target")

    def __init__(self, base: Any, target: Any):
        self.base, self.target = base, target

    def empty(self, shape, dtype) -> np.ndarray:
        target, shape = self.target, tuple(shape)
        if isinstance(target, _Output):
            block = target.block(shape, np.dtype(dtype))
            if block is not None:
                self.target = None
                return block
        elif (target is not None and shape == target.shape
              and np.dtype(dtype) == target.dtype):
            self.target = None
            return target
        return self.base.empty(shape, dtype)

    def __getattr__(self, name):
        # everything else a backend offers (kernels, parallel, product, prepared, xp...)
        return getattr(self.base, name)


class _Output:
    """The output of a fused chain, allocated when its producer first asks for a block."""

    __slots__ = ("backend", "n", "row_shape", "whole", "start", "stop", "given")

    def __init__(self, backend: Any, n: int, row_shape: tuple[int, ...]):
        self.backend, self.n, self.row_shape, self.whole = backend, n, row_shape, None
        self.start = self.stop = 0
        self.given = None                     # the block last handed to the producer

    def block(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray | None:
        if shape != (self.stop - self.start,) + self.row_shape:
            return None
        if self.whole is None:
            self.whole = self.backend.empty((self.n,) + self.row_shape, dtype)
        elif self.whole.dtype != dtype:
            return None
        self.given = self.whole[self.start:self.stop]
        return self.given

    def take(self, out: np.ndarray) -> np.ndarray:
        """The block of the output, after the producer wrote ``out`` for it."""
        if out is self.given:
            self.given = None
            return out
        block = self.block(out.shape, out.dtype)    # a producer that allocated by itself
        if block is None:
            block = self.whole[self.start:self.stop]
        np.copyto(block, out)
        self.given = None
        return block


def _run_into(op: Any, ctx: Context, target: Any, args: Sequence[Any]) -> np.ndarray:
    """``op.forward`` on ``args`` with its output placed at ``target`` (copied there if the op
    put it elsewhere); returns the block written."""
    sub = Context(False, False, ctx.rng, Placed(ctx.backend, target))
    (out,) = op.forward(sub, *args)
    if isinstance(target, _Output):
        return target.take(out)
    if out is not target:
        np.copyto(target, out)
    return target


def fused_forward(producer: Any, producer_batched: Sequence[bool], out_spec: Any,
                  consumers: Sequence[tuple[Any, tuple[int | None, ...], tuple[bool, ...]]]
                  ) -> Callable:
    """A forward taking the producer's inputs, then each consumer's extra inputs in order, that
    runs the region block by block (see the module doc).

    ``producer_batched`` flags the producer's inputs with a batch axis, ``out_spec`` is the
    region's output Spec, ``consumers`` are ``(op, args, batched)`` triples as in
    :class:`Chain` (value 0 the producer's output, ``i + 1`` consumer ``i``'s).  A first
    consumer with ``affine``, sole reader of the producer's output, is folded into the
    producer's ``channel_weights`` when the producer declares them and scaling the weights
    costs less than a pass over the output, or costs nothing: the weights and the affine's
    inputs are constants (a frozen plan's params), and the folded weights are kept.

    Where each value lives is decided here, once per :class:`_Variant` (the region as given,
    and with its first consumer folded): the producer writes into the block of the region's
    output (buffer 0); a consumer writes over an input it reads last (its first port, any port
    if ``commutative``), else into a buffer whose value is dead, else into a scratch block;
    the last value is copied into buffer 0 if it did not end there.
    """
    n_inputs = len(producer_batched)
    plain = _Variant(consumers, out_spec)
    first = consumers[0][0]
    fold_ports = None
    if consumers[0][1][:1] == (0,) and 0 not in consumers[0][1][1:] \
            and plain.steps[0][2] == 0 and all(0 not in args for _, args, _ in consumers[1:]):
        fold_ports = _fold_ports(producer, first, out_spec.ndim)
    folded = None if fold_ports is None else _Variant(
        [(op, tuple(None if v is None else max(0, v - 1) for v in args), batched)
         for op, args, batched in consumers[1:]], out_spec)
    row_shape = out_spec.shape[1:]
    row_elements = math.prod(d or 1 for d in row_shape)
    dynamic = True if None in row_shape else None
    static_size = 0 if None in out_spec.shape else math.prod(out_spec.shape)

    batched_at = [i for i, b in enumerate(producer_batched) if b]
    block_rows = max(1, BLOCK_ELEMENTS // max(1, row_elements))
    affine_count = len(consumers[0][2])

    def fold(ctx, given):
        return _folded(fold_ports, given[:len(fold_ports)],
                       *first.affine(ctx, *given[len(fold_ports):]))

    def forward(ctx, *args):
        inputs, rest, variant = list(args[:n_inputs]), args[n_inputs:], plain
        lengths = {len(args[i]) for i in batched_at}
        n = min(lengths, default=0)
        if fold_ports is not None:
            given = tuple(inputs[i] for i, _ in fold_ports) + rest[:affine_count]
            backend = ctx.backend
            # fold when it costs nothing — what is derived from constants (a frozen plan's
            # params) is kept — or when scaling the weights costs less than a pass over the
            # output; with dims known only at run time (an ONNX model's image size), the size
            # of the first batched input stands in for the output's
            if backend.are_constants(given) or given[0].size < (
                    static_size if not lengths else n * row_elements if dynamic is None
                    else args[batched_at[0]].size):
                new = backend.prepared(given, lambda given: fold(ctx, given), "fold", id(first))
                for (i, _), value in zip(fold_ports, new):
                    inputs[i] = value
                rest, variant = rest[affine_count:], folded
        todo, one_pass, nbuf = variant.steps, variant.one_pass, variant.nbuf
        # a dynamic shape, or rows that fit one block (batch 1): the whole output is the block
        if None in row_shape or len(lengths) != 1 or n <= block_rows:
            (y,) = producer.forward(Context(False, False, ctx.rng, ctx.backend), *inputs)
            output, bounds, rows = None, [(0, len(y))], len(y)
        else:
            output = _Output(ctx.backend, n, row_shape)
            rows = block_rows
            bounds = [(start, min(n, start + rows)) for start in range(0, n, rows)]
        scratch = ()
        for start, stop in bounds:
            if output is None:
                block = y
            else:
                output.start, output.stop = start, stop
                block = _run_into(producer, ctx, output, [
                    v[start:stop] if b else v for v, b in zip(inputs, producer_batched)])
            if todo and one_pass is not None and one_pass(block, rest, start, stop,
                                                             ctx.backend):
                continue
            if nbuf > 1 and not scratch:
                scratch = [ctx.backend.empty((rows,) + block.shape[1:], block.dtype)
                           for _ in range(nbuf - 1)]
            bufs = [block] + [s[:stop - start] for s in scratch]
            i = 0
            for op, sources, target, cuts in todo:
                extras = [v[start:stop] if cut else v
                          for v, cut in zip(rest[i:i + len(cuts)], cuts)]
                i += len(cuts)
                it = iter(extras)
                _run_into(op, ctx, bufs[target],
                          [next(it) if k is None else bufs[k] for k in sources])
            if variant.final != 0:
                np.copyto(block, bufs[variant.final])
            bufs = extras = it = None
        if output is not None:
            y = output.whole
        pool = getattr(ctx.backend, "pool", None)
        if scratch and pool is not None:
            for s in scratch:
                pool.recycle(s)
        return (y,)
    return forward


class _Variant:
    """One way of running a region's consumers: their buffers (:func:`_assign_buffers`) and
    their one-pass program (:class:`_OnePass`)."""

    __slots__ = ("consumers", "steps", "nbuf", "final", "one_pass")

    def __init__(self, consumers, out_spec):
        self.consumers = list(consumers)
        self.steps, self.nbuf = _assign_buffers(self.consumers)
        self.final = self.steps[-1][2] if self.steps else 0
        self.one_pass = _OnePass(self.consumers)


_POINTWISE: Any = None      # flowgrad.plan.pointwise, imported when a region first runs
#: what the one-pass runner computes in (float16 regions run op by op, as numpy computes them)
_ONE_PASS_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class _OnePass:
    """A region of ``pointwise`` ops run as one program over the block
    (:mod:`.pointwise`), when its extra inputs fit: per-plane operands or C-contiguous ones
    of the block's shape, of the block's dtype.  What the extra inputs' shapes decide — the
    program (None: the region runs op by op), how each scalar column is filled — is worked
    out on first use and kept per block shape and extra shapes (a :class:`_Layout`): at batch 1
    a region takes tens of microseconds, and looking at each input again would be a good part
    of it.

    A block without planes — rows of features, a dense layer's or an LSTM gate's (silero VAD's
    ``sigmoid`` times the cell, on 1 x 128) — runs as one plane of all its values when each
    extra holds the block's values (leading 1s aside) or is a single value: op by op, such a
    region costs 15-30 µs of calls and temporaries for a few hundred values."""

    __slots__ = ("consumers", "cuts", "any_cut", "layouts")

    def __init__(self, consumers):
        self.consumers = [(op, args) for op, args, _ in consumers]
        #: which extras are cut to the block's rows
        self.cuts = [cut for _, _, batched in consumers for cut in batched]
        self.any_cut = any(self.cuts)
        self.layouts: dict[tuple, Any] = {}

    def __call__(self, block: np.ndarray, rest, start: int, stop: int, backend: Any) -> bool:
        dtype = block.dtype
        if dtype not in _ONE_PASS_DTYPES or not block.flags.c_contiguous:
            return False
        extras = [v[start:stop] if cut else v for v, cut in zip(rest, self.cuts)] \
            if self.any_cut else rest
        if block.ndim < 3:
            extras = _as_one_plane(block, extras)
            if extras is None:
                return False
            block = block.reshape(1, 1, -1)
        key = [block.shape]
        for e in extras:
            if type(e) is not np.ndarray or e.dtype != dtype:
                return False
            key.append(e.shape)
        key = tuple(key)
        layout = self.layouts.get(key, False)
        if layout is False:
            layout = self.layouts[key] = _Layout.make(self.consumers, block, extras, backend)
        if layout is None:
            return False
        program, template = layout.program, layout.template
        columns = layout.columns
        for k, value in layout.baked:
            if extras[k] is not value:          # (not the constant baked in: fill them all)
                columns = layout.all_columns
                break
        if columns:
            scalars = template.copy()
            for j, k, shape in columns:
                if shape is None:                       # one element
                    scalars[:, :, j] = extras[k].item()
                else:
                    scalars[:, :, j] = extras[k].reshape(shape)        # (broadcasting)
        else:
            scalars = template          # (read only by the program)
        x = block.reshape(layout.planes, -1)
        fulls = []
        for k in program.fulls:
            if not extras[k].flags.c_contiguous:
                return False
            fulls.append(extras[k].reshape(x.shape))
        fulls += [x] * (2 - len(fulls))                         # (unread)
        _POINTWISE.run_region(program.code, scalars.reshape(layout.planes, -1), x, fulls[0],
                              fulls[1], x, program.registers, program.result)
        return True


def _as_one_plane(block: np.ndarray, extras) -> list | None:
    """The extras of a block without planes (fewer than 3 axes) for its one-plane view
    ``(1, 1, size)``: those holding the block's values (its shape, leading 1s aside) reshaped
    to it, single values as they are (a constant's identity is what :class:`_Layout` bakes);
    None when another shape broadcasts (a bias along the rows of a block of several)."""
    out = []
    for e in extras:
        if type(e) is not np.ndarray:
            return None
        if e.size == 1 and e.ndim <= 3:
            out.append(e)
        elif e.ndim <= block.ndim and (1,) * (block.ndim - e.ndim) + e.shape == block.shape:
            out.append(e.reshape(1, 1, -1))
        else:
            return None
    return out


class _Layout:
    """How :class:`_OnePass` runs a region for one block shape and its extras' shapes: the
    program, the template of its per-plane scalar columns (``(N, C, columns)``) with the
    constants in place, and the columns filled from the extras at every call — ``(column,
    extra, per-plane shape or None for one element)``.  A plan's constants (a frozen plan's
    params among them) are filled in once, ``baked``: ``(extra, the array baked)``, checked by
    identity at each call."""

    __slots__ = ("program", "template", "planes", "columns", "all_columns", "baked")

    @staticmethod
    def make(consumers, block, extras, backend) -> "_Layout | None":
        """The layout for these shapes, or None when they do not fit or an op declares no
        ``pointwise``."""
        global _POINTWISE
        from . import pointwise       # (numba is imported on first use only)
        _POINTWISE = pointwise
        n, c = block.shape[:2]
        kinds, shapes = [], []
        for e in extras:
            if e.ndim > block.ndim:
                return None
            if e.shape == block.shape:
                kinds.append("full")
                shapes.append(None)
                continue
            shape = (1,) * (block.ndim - e.ndim) + e.shape
            if any(d != 1 for d in shape[2:]) or shape[0] not in (1, n) or shape[1] not in (1, c):
                return None
            kinds.append("plane")
            shapes.append(shape[:2])
        program = pointwise.translate(consumers, kinds)
        if program is None:
            return None
        self = _Layout()
        self.program, self.planes = program, n * c
        self.template = np.zeros((n, c, max(1, len(program.columns))), block.dtype)
        self.all_columns, self.columns, self.baked = [], [], []
        for j, (kind, value) in enumerate(program.columns):
            if kind == "c":
                self.template[:, :, j] = value
                continue
            shape = None if shapes[value] == (1, 1) else shapes[value]
            self.all_columns.append((j, value, shape))
            e = extras[value]
            if backend.are_constants((e,)):
                self.baked.append((value, e))
                self.template[:, :, j] = e.item() if shape is None else e.reshape(shape)
            else:
                self.columns.append((j, value, shape))
        return self


def _assign_buffers(consumers) -> tuple[list, int]:
    """``([(op, sources, target, batched)], buffers)``: per consumer, the buffer (or None:
    the next extra) each input is read from, in the order passed, and the buffer written;
    buffer 0 is the block of the region's output.  See :func:`fused_forward`."""
    last: dict[int, int] = {}
    for i, (_, args, _) in enumerate(consumers):
        for v in args:
            if v is not None:
                last[v] = i
    where, free, nbuf, steps = {0: 0}, [], 1, []
    for i, (op, args, batched) in enumerate(consumers):
        order = list(range(len(args)))
        target = None
        for p in (range(len(args)) if op.commutative else range(min(1, len(args)))):
            v = args[p]
            if v is not None and last[v] == i:
                target = where[v]
                order.insert(0, order.pop(p))       # the value overwritten goes first
                break
        if target is None:
            if free:
                target = free.pop()
            else:
                target, nbuf = nbuf, nbuf + 1
        for v in {v for v in args if v is not None}:
            if last[v] == i and where[v] != target:
                free.append(where[v])
        where[i + 1] = target
        if order != list(range(len(args))):
            # a commutative op: the extras keep their order among themselves
            args = tuple(args[p] for p in order)
        sources = tuple(None if v is None else where[v] for v in args)
        steps.append((op, sources, target, batched))
    return steps, nbuf


def _fold_ports(producer: Any, consumer: Any, ndim: int) -> list[tuple[int, int]] | None:
    """``[(input index, axis)]`` of the producer's weights a following ``affine`` folds into,
    the weight matrix first; None when the pair cannot fold."""
    if consumer.affine is None or not producer.channel_weights:
        return None
    if producer.channel_axis % ndim != 1:          # affine ops work on channel axis 1
        return None
    names = producer.input_names
    return [(names.index(name), axis) for name, axis in producer.channel_weights.items()]


def _folded(ports: list[tuple[int, int]], weights: tuple, scale: np.ndarray,
            shift: np.ndarray) -> tuple:
    """The producer's ``weights`` at ``ports`` (the weight matrix, then the bias or None) with
    a per-channel ``scale * y + shift`` folded in: the matrix scaled along its channel axis,
    the bias ``bias * scale + shift`` (``shift`` where there is none).  The producer then
    computes the affine's output; the weights given are left untouched."""
    W = weights[0]
    shape = [1] * W.ndim
    shape[ports[0][1]] = -1
    out = [W * scale.astype(W.dtype, copy=False).reshape(shape)]
    shift = shift.astype(W.dtype, copy=False)
    for b in weights[1:]:
        out.append(shift if b is None else b.reshape(-1) * scale + shift)
    return tuple(out)
