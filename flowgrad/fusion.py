"""Epilogue fusion: run chains such as conv → batch_norm → relu as one step when evaluating.

Why: with no backward to follow, nothing needs the values between a convolution and the
per-channel or elementwise ops after it.  Run separately, each of those ops allocates a fresh
output (page faults on every call) and streams the whole tensor through memory once more; fused,
they run in place on each cache-sized chunk of the producer's output while it is still in cache.
A batch norm in evaluation mode right after a conv or dense layer is folded into its weights on
each call (``affine`` / ``fold_affine``), so it costs what a bias does.  This is what onnxruntime's
conv + batch-norm folding and conv + activation fusion buy it, without baking the weights in:
the plan's params stay live, so training, ``load_state_dict`` or an optimizer step between two
evaluations is seen at once.

The contract is the op's (see :mod:`flowgrad.op`): a *producer* declares ``accepts_epilogue``
and applies ``ctx.epilogue`` to its fresh output; a *consumer* has an ``inplace`` method.  A
consumer joins its producer's chain when it is the only reader of the value, reads it on its
first port (any port if the op is ``commutative``), and its output has the same shape and
dtype.  Its other inputs must be ready when the producer starts — leaves, or values computed
earlier that nothing between the producer and the consumer reads — so a residual ``sum`` joins
the convolution before it, and the shortcut is freed as before.  Values asked for as outputs are
never fused away.  The scheduler fuses only programs run without gradient in evaluation mode.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence


@dataclass
class Chain:
    """Consumers fused into one producer: their positions, each one's extra inputs (slots),
    and which of those have a batch axis (they are cut to the rows of each chunk)."""

    consumers: list[int] = field(default_factory=list)
    extras: list[tuple[int, ...]] = field(default_factory=list)
    batched: list[tuple[bool, ...]] = field(default_factory=list)


def epilogue_chains(steps: Sequence[Any], keep: set[int],
                    spec_of: Callable[[int], Any]) -> dict[int, Chain]:
    """``{producer position: Chain}`` for a program's ``steps``.

    ``steps`` are the scheduler's steps in execution order (``op``, ``in_slots``,
    ``out_slots``), ``keep`` the slots returned to the caller, ``spec_of(slot)`` the Spec of a
    slot's value (None for the absent-input slot).
    """
    produced_at = {slot: pos for pos, step in enumerate(steps) for slot in step.out_slots}
    readers: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for pos, step in enumerate(steps):
        for port, slot in enumerate(step.in_slots):
            readers[slot].append((pos, port))

    def ready(slot: int, producer: int, consumer: int) -> bool:
        return slot not in produced_at or produced_at[slot] < producer and all(
            pos < producer or pos == consumer for pos, _ in readers[slot])

    chains: dict[int, Chain] = {}
    fused: set[int] = set()
    for pos, step in enumerate(steps):
        if pos in fused or not step.op.accepts_epilogue or len(step.out_slots) != 1:
            continue
        slot = step.out_slots[0]
        spec = spec_of(slot)
        if spec.ndim == 0:                     # numpy returns scalars, not arrays, for 0-d
            continue
        chain = Chain()
        while slot not in keep and len(readers[slot]) == 1:
            at, port = readers[slot][0]
            consumer = steps[at]
            extras = consumer.in_slots[:port] + consumer.in_slots[port + 1:]
            if (port != 0 and not consumer.op.commutative or consumer.op.inplace is None
                    or len(consumer.out_slots) != 1 or spec_of(consumer.out_slots[0]) != spec
                    or not all(ready(s, pos, at) for s in extras)):
                break
            chain.consumers.append(at)
            chain.extras.append(extras)
            chain.batched.append(tuple(_batched(spec_of(s), spec) for s in extras))
            slot = consumer.out_slots[0]
        if chain.consumers:
            chains[pos] = chain
            fused.update(chain.consumers)
    return chains


def _batched(extra, spec) -> bool:
    """Whether an extra input runs along the chain's batch axis (rather than broadcasting)."""
    return extra is not None and extra.ndim == spec.ndim and extra.shape[0] != 1


def fused_forward(producer: Any, consumers: Sequence[tuple[Any, tuple[bool, ...]]],
                  n_inputs: int) -> Callable:
    """A forward taking the producer's ``n_inputs`` inputs, then each consumer's extra inputs
    in order, that runs the producer with the consumers as its epilogue.  ``consumers`` are
    ``(op, batched)`` pairs, ``batched`` flagging the extras to cut to each chunk's rows.

    A first consumer with ``affine`` is folded into the producer's weights instead, when the
    producer has ``fold_affine`` and says folding is cheaper on this call's shapes.
    """
    plan = [(op.inplace, len(batched), batched) for op, batched in consumers]
    first, first_n = consumers[0][0], len(consumers[0][1])
    foldable = producer.fold_affine is not None and first.affine is not None

    def forward(ctx, *args):
        inputs, rest, steps = args[:n_inputs], args[n_inputs:], plan
        if foldable:
            folded = producer.fold_affine(inputs, *first.affine(ctx, *rest[:first_n]))
            if folded is not None:
                inputs, rest, steps = folded, rest[first_n:], plan[1:]
        if steps:
            def epilogue(part, start):
                stop, i = start + len(part), 0
                for inplace, n, batched in steps:
                    inplace(ctx, part, *[v[start:stop] if cut else v
                                         for v, cut in zip(rest[i:i + n], batched)])
                    i += n
            ctx.epilogue = epilogue
        try:
            return producer.forward(ctx, *inputs)
        finally:        # the closure holds the extras, which the plan may now recycle
            ctx.epilogue = None
    return forward
