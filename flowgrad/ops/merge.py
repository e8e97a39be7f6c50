"""Topology ops (lecture notes §14.7): ``branch`` fans one value out, merges fan values in.

``branch`` is the only place activation gradients are summed: the graph pass
``insert_branches`` routes every value with several consumers through one, so every other op and
the scheduler only ever write a gradient once.
"""
from __future__ import annotations

from itertools import accumulate

import numpy as np

from ..op import (Attr, Op, ShapeError, Spec, broadcast_shapes, format_shape, normalize_axis,
                  result_dtype, unbroadcast)


class Branch(Op):
    """Copies its input to ``n`` outputs (without copying memory); backward sums the gradients."""

    type = "branch"
    branch = True
    attrs = {"n": Attr("int", 2, doc="number of consumers")}

    def check(self):
        if self.n < 2:
            from ..errors import AttrError
            raise AttrError("branch needs n >= 2", attr="n")

    def num_outputs(self, num_inputs):
        return self.n

    def output_names(self, num_inputs):
        return tuple(str(i) for i in range(self.n))

    def infer(self, x):
        return (x,) * self.n

    def forward(self, ctx, x):
        return (x,) * self.n

    def backward(self, ctx, *grads):
        grads = [g for g in grads if g is not None]
        if not grads:
            return (None,)
        # the sum in a pooled buffer (a fresh one is fresh pages, a fault each: memory.py)
        total = ctx.backend.empty(grads[0].shape, grads[0].dtype)
        if len(grads) == 1:
            np.copyto(total, grads[0])
        else:
            np.add(grads[0], grads[1], out=total)
        for g in grads[2:]:
            np.add(total, g, out=total)
        return (total,)


#: outputs smaller than this are left to numpy's allocator, as the plan's pool does
#: (``flowgrad.plan.memory.MIN_BYTES``; not imported: listing ops must not load the plan)
_SMALL = 1 << 16


def concat_shape(xs, axis: int) -> tuple:
    """The shape of ``xs`` (Specs) joined along ``axis``: one rank, equal dims off the axis
    (unknown dims match anything), the sum along it (unknown if any part is).  Shared by
    ``concat`` and the quantized concatenation."""
    ndim = xs[0].ndim
    if any(x.ndim != ndim for x in xs):
        raise ShapeError("concat inputs have different ranks: "
                         + ", ".join(format_shape(x.shape) for x in xs))
    axis = normalize_axis(axis, ndim)
    shape = []
    for i in range(ndim):
        dims = [x.shape[i] for x in xs]
        if i == axis:
            shape.append(None if None in dims else sum(dims))
        else:
            known = {d for d in dims if d is not None}
            if len(known) > 1:
                raise ShapeError(f"concat inputs differ on axis {i} (not the concat axis "
                                 f"{axis}): " + ", ".join(format_shape(x.shape) for x in xs))
            shape.append(known.pop() if known else None)
    return tuple(shape)


class Concat(Op):
    """Concatenates any number of inputs along ``axis``; backward slices the gradient."""

    type = "concat"
    merge = True
    inputs = ("xs",)
    variadic = True
    attrs = {"axis": Attr("int", -1, doc="axis to join along (negative counts from the end)")}

    def infer(self, *xs):
        return (Spec(concat_shape(xs, self.axis), result_dtype(*xs)),)

    def forward(self, ctx, *xs):
        axis = self.axis % xs[0].ndim
        cuts = list(accumulate(x.shape[axis] for x in xs))
        if ctx.grad_enabled:
            ctx.save(axis, cuts[:-1])
        if sum([x.nbytes for x in xs]) < _SMALL:
            # the shape arithmetic of exported models joins a few int64 scalars, several
            # times per run: numpy's own allocation costs less than asking the pool
            return (np.concatenate(xs, axis=axis),)
        shape = list(xs[0].shape)
        shape[axis] = cuts[-1]
        return (np.concatenate(xs, axis=axis,
                               out=ctx.backend.empty(tuple(shape), np.result_type(*xs))),)

    def backward(self, ctx, gy):
        axis, cuts = ctx.saved
        parts = np.split(gy, cuts, axis=axis)
        return tuple(p if need else None for p, need in zip(parts, ctx.needs_input_grad))


class Sum(Op):
    """Elementwise sum of any number of inputs (broadcasting); backward copies the gradient."""

    type = "sum"
    merge = True
    inputs = ("xs",)
    variadic = True
    rowwise = inplace = commutative = True

    def infer(self, *xs):
        return (Spec(broadcast_shapes(*(x.shape for x in xs)), result_dtype(*xs)),)

    def forward(self, ctx, *xs):
        y = xs[0]
        if len(xs) > 1:
            y = np.add(y, xs[1], out=ctx.backend.empty(broadcast_shapes(*(x.shape for x in xs)),
                                               np.result_type(*xs)))
            for x in xs[2:]:
                np.add(y, x, out=y)
        ctx.save(tuple(x.shape for x in xs))
        return (y,)

    def backward(self, ctx, gy):
        (shapes,) = ctx.saved
        return tuple(unbroadcast(gy, s) if need else None
                     for s, need in zip(shapes, ctx.needs_input_grad))
