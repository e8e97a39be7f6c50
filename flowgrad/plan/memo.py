"""Memoising a frozen plan's static steps: what depends only on input *shapes* is computed once
per shape.

Why: an ONNX model exported with free dims (an image's height and width) computes, at every
run, a subgraph that reads only the shapes of its inputs — Shape → Gather → Cast → Range →
Expand → Concat → Reshape, a YOLO head's anchor grid — up to 112 of NudeNet's 251 steps, a
tenth of its run at batch 1.  onnxruntime folds them once per session; a frozen plan
(:meth:`Plan.freeze`), whose params can no longer change, does it once per input shape.

What is *static*, in a frozen program run without gradient:

* a param or constant leaf (frozen: read-only for the plan's life);
* the output of a ``shape`` or ``size`` step — a *root*: it still runs every time, cheaply,
  and its value is the memo's key;
* the outputs of a run entry (a fused entry included, with all the extra inputs it reads)
  whose every input is static, and none of whose ops updates state (``updates_state``) or
  runs a body graph (``body_attrs``: control flow is never memoised).

The static entries are grouped into maximal runs of consecutive entries, and each group is
replaced, in a second run list (:attr:`ForwardProgram.static_run`), by one entry —
a :class:`StaticGroup` — which the hot loops call like any other step (:mod:`.run` is
unchanged).  The group's key is the bytes of the roots its entries depend on (directly or
through earlier static values): equal roots give equal static values, whether a shape comes
from the input's size or from values (the Shape of a NonZero's output).  On a hit it hands
back the values it kept — only those read after it or asked for — and computes nothing; on a
miss it runs its entries, exactly as the plain list would, and keeps their values for the
last :data:`MEMO_KEYS` keys.  Groups stay where their entries were: nothing runs in another
order than without the memo, so outputs are bit for bit the same.  The plain list still runs
a program's first call (the contract checks), a live plan's calls (its params may change
between them) and every call with gradient (each step's context is kept for backward).

Random ops are found, not declared: a miss runs each entry between two looks at the plan's
generator state (``ctx.rng``); an entry that moved it drew random numbers, so the group keeps
nothing, its ops are marked and the run list is compiled again without them (that run already
drew exactly what the plain list draws).  An op seeded by its own attribute (a fresh
``RandomState(seed)`` at each call) moves nothing and gives the same values every time: it is
memoised, correctly.  Values that are not arrays (a sequence is a list, which ops may share)
are treated the same way.  An op drawing from anything but ``ctx.rng`` (numpy's global
generator) is not seen — and not deterministic with or without the memo.

Memory: the values a group keeps are referenced by it, so :meth:`BufferPool.release` never
recycles them (it recycles only what nothing else refers to), and no fused region writes over
an input it did not allocate (:mod:`.fusion`).  A kept value the caller asked for is handed
over as a copy: the caller may write into its outputs.  The roots stay in the value list until
the run ends (a later group's key may read them): they are small vectors the pool never takes.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from ..errors import FlowgradError
from .programs import NONE_SLOT, ForwardProgram, Layout
from .run import op_error

#: keys (root values) each group keeps values for: an application alternating between a few
#: input sizes keeps hitting; a new size recomputes and pushes the oldest out
MEMO_KEYS = 4

#: the ops whose output reads only their input's shape: the memo's roots
ROOT_OPS = frozenset({"shape", "size"})


class StaticGroup:
    """A run of consecutive static entries, as one entry of the static run list: called as
    ``group(ctx, vals)`` (``get`` is :func:`_whole`), it returns the values of ``out_slots``.

    ``entries`` are the plain run entries it replaces, ``positions`` their indices in the
    program's run list, ``key_slots`` the roots they depend on, ``copies`` the indices in
    ``out_slots`` of the values asked for as outputs (handed over as copies).  ``cache`` holds
    ``(key, values)``, most recent first."""

    __slots__ = ("memo", "entries", "positions", "key_slots", "out_slots", "copies", "cache")

    def __init__(self, memo: "Memo", entries: list, positions: tuple[int, ...],
                 key_slots: tuple[int, ...], out_slots: tuple[int, ...],
                 copies: tuple[int, ...], cache: list | None = None):
        self.memo, self.entries, self.positions = memo, entries, positions
        self.key_slots, self.out_slots, self.copies = key_slots, out_slots, copies
        self.cache = [] if cache is None else cache

    def __call__(self, ctx: Any, vals: list) -> tuple:
        key = tuple([vals[s].tobytes() for s in self.key_slots])
        for known, values in self.cache:
            if known == key:
                return self._handed(values) if self.copies else values
        values = self._compute(ctx, vals)
        if values is None:          # not memoisable after all: the values of this run
            return tuple(vals[s] for s in self.out_slots)
        self.cache.insert(0, (key, values))
        del self.cache[MEMO_KEYS:]
        return self._handed(values) if self.copies else values

    def _handed(self, values: tuple) -> tuple:
        """``values`` with copies of those asked for as outputs: the caller may write into
        what it gets, and what is kept must not change."""
        values = list(values)
        for i in self.copies:
            if values[i] is not None:
                values[i] = values[i].copy()
        return tuple(values)

    def _compute(self, ctx: Any, vals: list) -> tuple | None:
        """Run the entries on ``vals`` (their values stay there; the run frees them after the
        group) and return the values to keep, or None when an entry turned out random or gave
        a value that is not an array — then the memo is compiled again without its ops."""
        rng = getattr(ctx.rng, "bit_generator", None)
        unfit = []
        for entry in self.entries:
            forward, get, arity, outs, _, step = entry
            before = None if rng is None else rng.state
            try:
                res = forward(ctx, get(vals)) if arity == 1 else forward(ctx, *get(vals))
            except FlowgradError:
                raise
            except Exception as e:
                raise op_error(self.memo.layout.graph, step, vals, e, "forward") from e
            for port, slot in enumerate(outs):
                vals[slot] = res[port]
            res = None
            ctx.saved = ()
            if rng is not None and rng.state != before or not all(
                    _keepable(vals[s]) for s in outs):
                unfit.append(step)
        if unfit:
            self.memo.exclude(n for step in unfit for n in step.nodes)
            return None
        return tuple(vals[s] for s in self.out_slots)

    def with_entries(self, entries: list) -> "StaticGroup":
        """This group running other entries for the same steps (a profile's timed ones),
        sharing its cache."""
        return StaticGroup(self.memo, entries, self.positions, self.key_slots,
                           self.out_slots, self.copies, self.cache)


def _keepable(value: Any) -> bool:
    """Whether a value can be kept and handed out again: an array (never written in place
    by anyone but its maker), a numpy scalar or None — not a list (a sequence) ops may
    share."""
    return value is None or type(value) is np.ndarray or isinstance(value, np.generic)


def _whole(vals: list) -> list:
    """A group's ``get``: it reads the whole value list (keys, and its entries' inputs on a
    miss)."""
    return vals


class Memo:
    """The static analysis of one frozen program and its static run list.

    ``excluded`` are the nodes found random (or giving values that are not arrays): never
    static again.  :meth:`build` sets ``program.static_run`` (None when nothing is static, so
    the plan runs the plain list at no cost)."""

    def __init__(self, layout: Layout, program: ForwardProgram):
        self.layout, self.program = layout, program
        self.excluded: set[str] = set()

    def build(self) -> None:
        layout, program = self.layout, self.program
        run = program.run
        kinds, deps = classify(layout, run, self.excluded)
        # a group's key may hold roots that an earlier reader would free: roots are small
        # vectors, never pooled (:data:`.memory.MIN_BYTES`), so they stay till the run's end
        roots = {slot for slot, below in deps.items() if below == {slot}}
        keep = set(program.output_slots.values())
        readers = defaultdict(list)
        for position, entry in enumerate(run):
            for slot in entry[5].in_slots:
                readers[slot].append(position)
        static_run, groups = [], 0
        position = 0
        while position < len(run):
            if not kinds[position]:
                entry = run[position]
                if roots.intersection(entry[4]):
                    entry = entry[:4] + (tuple(s for s in entry[4] if s not in roots),
                                         entry[5])
                static_run.append(entry)
                position += 1
                continue
            end = position
            while end < len(run) and kinds[end]:
                end += 1
            static_run.append(self._group(run, range(position, end), deps, keep, readers,
                                          roots))
            groups += 1
            position = end
        program.static_run = static_run if groups else None

    def _group(self, run: list, positions: range, deps: dict, keep: set, readers: dict,
               roots: set) -> tuple:
        """The run entry replacing the static entries at ``positions``."""
        entries = [run[p] for p in positions]
        key = sorted({root for e in entries for s in e[5].in_slots for root in deps[s]})
        outs = [s for e in entries for s in e[3]
                if s in keep or any(p >= positions.stop for p in readers[s])]
        free = tuple(s for e in entries for s in e[4] if s not in roots)
        group = StaticGroup(self, entries, tuple(positions), tuple(key), tuple(outs),
                            tuple(i for i, s in enumerate(outs) if s in keep))
        return (group, _whole, 1, tuple(outs), free, entries[0][5])

    def exclude(self, nodes) -> None:
        """Never treat ``nodes`` as static again, and compile the static run list anew (the
        groups' kept values go with the old one)."""
        self.excluded.update(nodes)
        self.build()


def classify(layout: Layout, run: list, excluded: set[str]
             ) -> tuple[list[bool], dict[int, frozenset[int]]]:
    """Which entries of ``run`` are static (see the module doc), and for every static value's
    slot the roots it depends on (empty for leaves)."""
    graph = layout.graph
    deps: dict[int, frozenset[int]] = {NONE_SLOT: frozenset()}
    for name in layout.order:
        if graph.is_param(name) or graph.is_const(name):
            deps[layout.slot[(name, 0)]] = frozenset()
    kinds = []
    for entry in run:
        step = entry[5]
        ins = step.in_slots
        ops = [layout.steps[n].op for n in step.nodes]
        if all(s in deps for s in ins):
            static = not any(n in excluded for n in step.nodes) and not any(
                op.updates_state or getattr(op, "body_attrs", ()) for op in ops)
            if static:
                below = frozenset().union(*(deps[s] for s in ins))
                for slot in entry[3]:
                    deps[slot] = below
            kinds.append(static)
        else:
            if len(ops) == 1 and ops[0].type in ROOT_OPS:
                for slot in entry[3]:
                    deps[slot] = frozenset((slot,))
            kinds.append(False)
    return kinds, deps


def attach(layout: Layout, program: ForwardProgram) -> None:
    """Give a frozen program evaluated without gradient its static run list (if any entry is
    static): :attr:`ForwardProgram.static_run`."""
    Memo(layout, program).build()


def retimed(static_run: list, timed: list) -> list:
    """``static_run`` with each plain entry running the timed function of its step in
    ``timed`` (a profile's timed copy of the program's run list), and each group running the
    timed entries — sharing its kept values, so a timed run hits as the plan's own runs do."""
    index = {id(entry[5]): i for i, entry in enumerate(timed)}
    out = []
    for entry in static_run:
        group = entry[0]
        if isinstance(group, StaticGroup):
            group = group.with_entries([timed[p] for p in group.positions])
            out.append((group,) + tuple(entry[1:]))
        else:
            out.append((timed[index[id(entry[5])]][0],) + tuple(entry[1:]))
    return out
