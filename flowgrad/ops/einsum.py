"""Einstein summation over any number of operands (ONNX Einsum, numpy ``einsum``).

Backward is einsum too: the gradient of operand i contracts the output gradient with every
other operand onto operand i's subscripts.  Three cases need care, and :func:`_parse` puts the
equation in a form where each is explicit:

* a letter that only operand i has (summed away, e.g. ``ij->i``) must be broadcast back: a
  vector of ones with that letter joins the contraction;
* a repeated letter in operand i (a diagonal, ``ii->i``) cannot be an einsum output: the
  gradient is computed over the distinct letters and written into the diagonal view of a zero
  array;
* ellipsis dims of size 1 that broadcast against larger ones get a letter of their own in that
  operand, so they are summed like any other broadcast.
"""
from __future__ import annotations

import math
import string

import numpy as np

from ..errors import AttrError
from ..op import Attr, Op, ShapeError, Spec, broadcast_shapes, format_shape, result_dtype


def _split(equation: str) -> tuple[list[str], str | None]:
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    return lhs.split(","), (rhs if arrow else None)


def _implicit_output(terms: list[str]) -> str:
    """numpy's (and ONNX's) implicit output: ellipsis, then letters used once, sorted."""
    letters = "".join(t.replace("...", "") for t in terms)
    once = sorted(c for c in set(letters) if letters.count(c) == 1)
    return ("..." if any("..." in t for t in terms) else "") + "".join(once)


def _parse(equation: str, shapes: list[tuple[int, ...]]) -> tuple[list[str], str]:
    """Explicit per-operand and output subscripts, one letter per axis (no ellipsis).

    Ellipsis dims get fresh letters, right-aligned across operands; an ellipsis dim of size 1
    facing a larger one gets a letter private to its operand.
    """
    terms, out = _split(equation)
    if len(terms) != len(shapes):
        raise ShapeError(f"einsum: equation {equation!r} has {len(terms)} operands, got "
                         f"{len(shapes)} inputs")
    if out is None:
        out = _implicit_output(terms)
    used = set("".join(terms) + out)
    fresh = iter(c for c in string.ascii_letters if c not in used)
    ell_dims = []
    for term, shape in zip(terms, shapes):
        named = len(term.replace("...", ""))
        if "..." in term:
            ell_dims.append(len(shape) - named)
        elif named != len(shape):
            raise ShapeError(f"einsum: operand {term!r} has {named} subscripts but "
                             f"{len(shape)} axes")
        else:
            ell_dims.append(0)
        if ell_dims[-1] < 0:
            raise ShapeError(f"einsum: operand {term!r} has more subscripts than axes "
                             f"({len(shape)})")
    width = max(ell_dims, default=0)
    shared = [next(fresh) for _ in range(width)]
    # the broadcast size of each ellipsis position (right-aligned)
    bsizes = [1] * width
    for term, shape, k in zip(terms, shapes, ell_dims):
        start = term.find("...")
        for j in range(k):
            bsizes[width - k + j] = max(bsizes[width - k + j], shape[start + j])
    explicit = []
    for term, shape, k in zip(terms, shapes, ell_dims):
        if "..." not in term:
            explicit.append(term)
            continue
        start = term.find("...")
        letters = "".join(shared[width - k + j] if shape[start + j] == bsizes[width - k + j]
                          else next(fresh) for j in range(k))
        explicit.append(term.replace("...", letters))
    return explicit, out.replace("...", "".join(shared))


def _product_plan(equation: str, shapes: list[tuple[int, ...]]) -> tuple | None:
    """How to run a two-operand einsum as one (batched) matrix product, or None if it is not
    one (a repeated letter, a letter of one operand summed away, sizes that broadcast).

    Why: np.einsum without ``optimize`` runs a two-operand contraction in its own loops, and
    with it plans the path on every call; DeepFilterNet's grouped linear layers
    (``btgi,gih->btgh``, 32 groups of 96 x 16) took 250 us that way, against ~30 us as 32
    products in BLAS.  The letters fall in four groups: batch (both operands and the output),
    left (first operand and output), right (second and output) and contracted (both, not the
    output); each operand is transposed to (batch, left, contracted) and (batch, contracted,
    right), multiplied, and the product transposed to the output's order.  A letter of size 1
    in one operand only (an ellipsis dim broadcast by :func:`_parse`) is dropped.

    Returns ``(perm_a, shape_a, perm_b, shape_b, shape_y, perm_y)``.
    """
    (a, b), out = _parse(equation, shapes)
    if any(len(set(t)) != len(t) for t in (a, b, out)):
        return None
    size = {c: n for term, shape in zip((a, b), shapes) for c, n in zip(term, shape)}
    if any(size[c] != n for c, n in zip(a, shapes[0])):        # a letter sized two ways
        return None
    batch = [c for c in out if c in a and c in b]
    left = [c for c in out if c in a and c not in b]
    right = [c for c in out if c in b and c not in a]
    summed = [c for c in a if c in b and c not in out]
    alone = [c for c in a + b if c not in out and (c not in a or c not in b)]
    if any(size[c] != 1 for c in alone):
        return None
    a_order = batch + left + [c for c in alone if c in a] + summed
    b_order = batch + summed + [c for c in alone if c in b] + right
    n = {k: math.prod(size[c] for c in g) for k, g in
         (("batch", batch), ("left", left), ("right", right), ("summed", summed))}
    produced = batch + left + right
    return (tuple(a.index(c) for c in a_order), (n["batch"], n["left"], n["summed"]),
            tuple(b.index(c) for c in b_order), (n["batch"], n["summed"], n["right"]),
            tuple(size[c] for c in produced), tuple(produced.index(c) for c in out))


def _product(plan: tuple, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The einsum of ``a`` and ``b`` by :func:`_product_plan`'s ``plan``."""
    perm_a, shape_a, perm_b, shape_b, shape_y, perm_y = plan
    y = np.matmul(a.transpose(perm_a).reshape(shape_a), b.transpose(perm_b).reshape(shape_b))
    y = y.reshape(shape_y).transpose(perm_y)
    return y if y.flags.c_contiguous else y.copy()


class Einsum(Op):
    """``np.einsum(equation, *inputs)``; the equation may omit ``->`` (implicit output)."""

    type = "einsum"
    inputs = ("inputs",)
    variadic = True
    attrs = {"equation": Attr("str", doc="e.g. 'bij,bjk->bik'; '...' broadcasts")}

    def check(self):
        terms, out = _split(self.equation)
        allowed = set(string.ascii_letters + ".")
        if any(set(t) - allowed for t in terms + [out or ""]):
            raise AttrError(f"einsum: equation {self.equation!r} may hold only letters, '...', "
                            "',' and '->'", attr="equation")
        #: per pair of operand shapes, the forward's product (:func:`_product_plan`; None:
        #: np.einsum)
        self._plans: dict[tuple, tuple | None] = {}

    def infer(self, *xs):
        terms, out = _split(self.equation)
        if len(terms) != len(xs):
            raise ShapeError(f"einsum: equation {self.equation!r} has {len(terms)} operands, "
                             f"got {len(xs)} inputs")
        if out is None:
            out = _implicit_output(terms)
        letters: dict[str, int | None] = {}
        ellipses = []
        for term, x in zip(terms, xs):
            head, dots, tail = term.partition("...")
            if len(head) + len(tail) > x.ndim or (not dots and len(term) != x.ndim):
                raise ShapeError(f"einsum: operand '{term}' does not fit an input of shape "
                                 f"{format_shape(x.shape)}")
            dims = x.shape[:len(head)] + x.shape[x.ndim - len(tail):]
            if dots:
                ellipses.append(x.shape[len(head):x.ndim - len(tail)])
            for c, d in zip(head + tail, dims):
                known = letters.get(c)
                if d is not None and known is not None and d != known:
                    raise ShapeError(f"einsum: subscript '{c}' is {known} in one place and {d} "
                                     f"in another ({self.equation!r})")
                letters[c] = known if d is None else d
        missing = set(out.replace("...", "")) - set(letters)
        if missing:
            raise ShapeError(f"einsum: output subscripts {sorted(missing)} appear in no input")
        ell = broadcast_shapes(*ellipses) if ellipses else ()
        head, _, tail = out.partition("...")
        shape = tuple(letters[c] for c in head) + (ell if "..." in out else ()) \
            + tuple(letters[c] for c in tail)
        return (Spec(shape, result_dtype(*xs)),)

    def forward(self, ctx, *xs):
        ctx.save(xs)
        if len(xs) == 2 and xs[0].dtype == xs[1].dtype and xs[0].dtype.kind == "f":
            key = (xs[0].shape, xs[1].shape)
            plan = self._plans.get(key, False)
            if plan is False:
                if len(self._plans) >= 64:          # a model fed ever new lengths
                    self._plans.clear()
                plan = self._plans[key] = _product_plan(self.equation, list(key))
            if plan is not None:
                return (_product(plan, *xs),)
        return (np.einsum(self.equation.replace(" ", ""), *xs, optimize=len(xs) > 2),)

    def backward(self, ctx, gy):
        (xs,) = ctx.saved
        terms, out = _parse(self.equation, [x.shape for x in xs])
        sizes = {c: n for term, x in zip(terms, xs) for c, n in zip(term, x.shape)}
        sizes.update(zip(out, gy.shape))
        grads = []
        for i, (term, x) in enumerate(zip(terms, xs)):
            if not ctx.needs_input_grad[i]:
                grads.append(None)
                continue
            distinct = "".join(dict.fromkeys(term))
            others = [t for j, t in enumerate(terms) if j != i]
            operands = [gy] + [xs[j] for j in range(len(xs)) if j != i]
            missing = [c for c in distinct if c not in out and not any(c in t for t in others)]
            subs = [out] + others + missing
            operands += [np.ones(sizes[c], gy.dtype) for c in missing]
            g = np.einsum(",".join(subs) + "->" + distinct, *operands,
                          optimize=len(operands) > 2)
            if distinct != term:              # repeated letters: fill the diagonal
                full = np.zeros(x.shape, np.result_type(g.dtype, x.dtype))
                np.einsum(term + "->" + distinct, full)[...] = g
                g = full
            grads.append(g.astype(x.dtype, copy=False))
        return tuple(grads)
