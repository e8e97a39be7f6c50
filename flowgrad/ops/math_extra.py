"""More pointwise math (ONNX Floor, Ceil, Round, Sign, Sin, Cos, Tan and the inverse
trigonometric and hyperbolic functions, Mod), the variadic broadcasting Min, Max and Mean, the
float tests IsNaN and IsInf, and the integer bit operations (BitwiseAnd/Or/Xor/Not, BitShift,
BitCast).

Floor, ceil, round and sign are piecewise constant: their gradient is zero almost everywhere,
and they return zeros rather than refusing, so a graph that rounds somewhere still trains
(like ``step``).  Min and max send each gradient element to the input that supplied the
extreme value; on ties, to the first such input, so gradients are never double counted.
The float tests and the bit operations are forward-only: their results are booleans or
integers, with no gradient to speak of.
"""
from __future__ import annotations

import numpy as np

from ..errors import AttrError
from ..op import Attr, Op, ShapeError, Spec, broadcast_shapes, result_dtype, unbroadcast
from .elementwise import Unary


class _Pointwise(Op):
    """One input, same shape and dtype out."""

    def infer(self, x):
        return (Spec(x.shape, x.dtype),)


class _Flat(_Pointwise):
    """A piecewise-constant function: backward returns zeros of the input's shape."""

    fn = staticmethod(np.floor)

    def forward(self, ctx, x):
        ctx.save(x.shape, x.dtype)
        return (self.fn(x),)

    def backward(self, ctx, gy):
        shape, dtype = ctx.saved
        return (np.zeros(shape, dtype) if ctx.needs_input_grad[0] else None,)


class Floor(_Flat):
    """Largest integer <= x (as a float); zero gradient."""

    type = "floor"
    fn = staticmethod(np.floor)


class Ceil(_Flat):
    """Smallest integer >= x (as a float); zero gradient."""

    type = "ceil"
    fn = staticmethod(np.ceil)


class Round(_Flat):
    """Nearest integer, halves to even (ONNX Round, numpy ``round``); zero gradient."""

    type = "round"
    fn = staticmethod(np.round)


class Sign(_Flat):
    """-1, 0 or 1 in the input's dtype; zero gradient."""

    type = "sign"
    fn = staticmethod(np.sign)


class Sin(_Pointwise):
    """sin(x); gradient cos(x)."""

    type = "sin"

    def forward(self, ctx, x):
        ctx.save(x)
        return (np.sin(x),)

    def backward(self, ctx, gy):
        (x,) = ctx.saved
        return (gy * np.cos(x),)


class Cos(_Pointwise):
    """cos(x); gradient -sin(x)."""

    type = "cos"

    def forward(self, ctx, x):
        ctx.save(x)
        return (np.cos(x),)

    def backward(self, ctx, gy):
        (x,) = ctx.saved
        return (-gy * np.sin(x),)


class Mod(Op):
    """Remainder of a / b with broadcasting (ONNX Mod).

    ``fmod: false`` (the default) gives the sign of the divisor, like Python's ``%``
    (``np.mod``); ``fmod: true`` the sign of the dividend, like C's ``fmod`` (ONNX requires it
    for floats).  Gradients: 1 for a, and -floor(a/b) (or -trunc(a/b) with fmod) for b.
    """

    type = "mod"
    inputs = ("a", "b")
    attrs = {"fmod": Attr("bool", False, doc="sign of the dividend (C fmod) instead of divisor")}

    def infer(self, a, b):
        return (Spec(broadcast_shapes(a.shape, b.shape), result_dtype(a, b)),)

    def forward(self, ctx, a, b):
        ctx.save(a, b)
        with np.errstate(invalid="ignore"):   # x mod 0 and inf mod x are NaN, as in ONNX
            return ((np.fmod if self.fmod else np.mod)(a, b),)

    def backward(self, ctx, gy):
        a, b = ctx.saved
        need_a, need_b = ctx.needs_input_grad
        ga = unbroadcast(gy, a.shape).astype(a.dtype, copy=False) if need_a else None
        gb = None
        if need_b:
            q = (np.trunc if self.fmod else np.floor)(a / b)
            gb = unbroadcast(-gy * q, b.shape).astype(b.dtype, copy=False)
        return ga, gb


class _Variadic(Op):
    """Any number of inputs combined elementwise with broadcasting."""

    inputs = ("xs",)
    variadic = True
    merge = True

    def infer(self, *xs):
        return (Spec(broadcast_shapes(*(x.shape for x in xs)), result_dtype(*xs)),)


class _Extreme(_Variadic):
    """Elementwise min or max of the inputs (``fn`` is ``np.minimum`` or ``np.maximum``)."""

    fn = staticmethod(np.maximum)

    def forward(self, ctx, *xs):
        y = xs[0]
        for x in xs[1:]:
            y = self.fn(y, x)
        if len(xs) == 1:
            y = np.array(y, copy=True)
        ctx.save(xs, y)
        return (y,)

    def backward(self, ctx, gy):
        xs, y = ctx.saved
        grads = []
        taken = np.zeros(y.shape, bool)     # elements already credited to an earlier input
        for x, need in zip(xs, ctx.needs_input_grad):
            wins = (x == y) & ~taken
            taken |= wins
            grads.append(unbroadcast(np.where(wins, gy, 0), x.shape).astype(x.dtype, copy=False)
                         if need else None)
        return tuple(grads)


class Max(_Extreme):
    """Elementwise maximum of any number of inputs (ONNX Max); ties credit the first input."""

    type = "max"
    fn = staticmethod(np.maximum)


class Min(_Extreme):
    """Elementwise minimum of any number of inputs (ONNX Min); ties credit the first input."""

    type = "min"
    fn = staticmethod(np.minimum)


class Mean(_Variadic):
    """Elementwise mean of any number of inputs (ONNX Mean); each gets gradient / n."""

    type = "mean"

    def forward(self, ctx, *xs):
        total = xs[0]
        for x in xs[1:]:
            total = total + x
        ctx.save(tuple((x.shape, x.dtype) for x in xs))
        return ((total / len(xs)).astype(result_dtype(*map(Spec.of, xs)), copy=False),)

    def backward(self, ctx, gy):
        (meta,) = ctx.saved
        g = gy / len(meta)
        return tuple(unbroadcast(g, s).astype(d, copy=False) if need else None
                     for (s, d), need in zip(meta, ctx.needs_input_grad))


# -- trigonometric and hyperbolic functions and their inverses ---------------------------------

class _Analytic(Unary):
    """A smooth pointwise function: forward ``fn``, backward ``gy * derivative(x, y)``.

    The output is numpy's float dtype for the input (float32 stays float32).  Inputs outside
    the function's real domain (asin of 2, acosh of 0.5, atanh of 1) give NaN or ±inf as numpy
    and ONNX do; the gradient there is NaN or ±inf too, which the plan's non-finite check names.
    """

    fn = staticmethod(np.tan)

    def forward(self, ctx, x):
        with np.errstate(invalid="ignore", divide="ignore"):
            y = self.fn(x)
        ctx.save(x, y)
        return (y,)

    def backward(self, ctx, gy):
        x, y = ctx.saved
        with np.errstate(invalid="ignore", divide="ignore"):
            return ((gy * self.derivative(x, y)).astype(y.dtype, copy=False),)

    @staticmethod
    def derivative(x, y):
        raise NotImplementedError


class Tan(_Analytic):
    """tan(x); gradient 1 + tan²(x) (from the saved output)."""

    type = "tan"
    fn = staticmethod(np.tan)

    @staticmethod
    def derivative(x, y):
        return 1 + y * y


class Asin(_Analytic):
    """arcsin(x) on [-1, 1]; gradient 1/√(1 − x²)."""

    type = "asin"
    fn = staticmethod(np.arcsin)

    @staticmethod
    def derivative(x, y):
        return 1 / np.sqrt(1 - x * x)


class Acos(_Analytic):
    """arccos(x) on [-1, 1]; gradient −1/√(1 − x²)."""

    type = "acos"
    fn = staticmethod(np.arccos)

    @staticmethod
    def derivative(x, y):
        return -1 / np.sqrt(1 - x * x)


class Atan(_Analytic):
    """arctan(x); gradient 1/(1 + x²)."""

    type = "atan"
    fn = staticmethod(np.arctan)

    @staticmethod
    def derivative(x, y):
        return 1 / (1 + x * x)


class Asinh(_Analytic):
    """arsinh(x); gradient 1/√(x² + 1)."""

    type = "asinh"
    fn = staticmethod(np.arcsinh)

    @staticmethod
    def derivative(x, y):
        return 1 / np.sqrt(x * x + 1)


class Acosh(_Analytic):
    """arcosh(x) for x >= 1; gradient 1/√(x² − 1)."""

    type = "acosh"
    fn = staticmethod(np.arccosh)

    @staticmethod
    def derivative(x, y):
        return 1 / np.sqrt(x * x - 1)


class Atanh(_Analytic):
    """artanh(x) on (-1, 1); gradient 1/(1 − x²)."""

    type = "atanh"
    fn = staticmethod(np.arctanh)

    @staticmethod
    def derivative(x, y):
        return 1 / (1 - x * x)


# -- tests of float values (forward-only, boolean results) -------------------------------------

class IsNaN(Op):
    """True where x is NaN (ONNX IsNaN); forward-only, a boolean of x's shape."""

    type = "is_nan"
    differentiable = False

    def infer(self, x):
        return (Spec(x.shape, np.bool_),)

    def forward(self, ctx, x):
        return (np.isnan(x),)


class IsInf(Op):
    """True where x is +inf (``detect_positive``) or −inf (``detect_negative``) (ONNX IsInf);
    forward-only, a boolean of x's shape."""

    type = "is_inf"
    attrs = {"detect_positive": Attr("bool", True, doc="report +inf"),
             "detect_negative": Attr("bool", True, doc="report -inf")}
    differentiable = False

    def infer(self, x):
        return (Spec(x.shape, np.bool_),)

    def forward(self, ctx, x):
        if self.detect_positive and self.detect_negative:
            return (np.isinf(x),)
        if self.detect_positive:
            return (np.isposinf(x),)
        if self.detect_negative:
            return (np.isneginf(x),)
        return (np.zeros(np.shape(x), np.bool_),)


# -- bit manipulation of integers (forward-only) -------------------------------------------------

def _integer(spec: Spec, op: str, port: str, bools: bool = False) -> None:
    kinds = "iub" if bools else "iu"
    if spec.dtype.kind not in kinds:
        raise ShapeError(f"{op} works on integers{' or booleans' if bools else ''}; "
                         f"'{port}' is {spec.dtype}")


class _Bitwise(Op):
    """Bitwise combination of two integer tensors with numpy broadcasting (forward-only)."""

    inputs = ("a", "b")
    differentiable = False
    fn = staticmethod(np.bitwise_and)

    def infer(self, a, b):
        _integer(a, self.type, "a", bools=True)
        _integer(b, self.type, "b", bools=True)
        if a.dtype != b.dtype:
            raise ShapeError(f"{self.type} needs inputs of one type, got {a.dtype} and {b.dtype}")
        return (Spec(broadcast_shapes(a.shape, b.shape), a.dtype),)

    def forward(self, ctx, a, b):
        return (np.asarray(self.fn(a, b)),)


class BitwiseAnd(_Bitwise):
    """a & b, bit by bit (ONNX BitwiseAnd)."""

    type = "bitwise_and"
    fn = staticmethod(np.bitwise_and)


class BitwiseOr(_Bitwise):
    """a | b, bit by bit (ONNX BitwiseOr)."""

    type = "bitwise_or"
    fn = staticmethod(np.bitwise_or)


class BitwiseXor(_Bitwise):
    """a ^ b, bit by bit (ONNX BitwiseXor)."""

    type = "bitwise_xor"
    fn = staticmethod(np.bitwise_xor)


class BitwiseNot(Op):
    """~x, every bit flipped (ONNX BitwiseNot); forward-only."""

    type = "bitwise_not"
    differentiable = False

    def infer(self, x):
        _integer(x, self.type, "x", bools=True)
        return (x,)

    def forward(self, ctx, x):
        return (np.asarray(np.invert(x)),)


class BitShift(Op):
    """x shifted by y bits, ``direction`` LEFT or RIGHT, with broadcasting (ONNX BitShift).

    A right shift of a signed integer is arithmetic (the sign bit fills in); a left shift
    discards the bits pushed past the top, the sign bit included (done on the unsigned view, as
    C would overflow).  A shift that is negative or at least the type's width gives what the
    fill alone gives: −1 for a right shift of a negative x, 0 otherwise (ONNX BitShift-28;
    numpy itself leaves such shifts undefined, so they are masked before shifting).
    """

    type = "bit_shift"
    inputs = ("x", "y")
    attrs = {"direction": Attr("str", choices=("LEFT", "RIGHT"), doc="which way bits move")}
    differentiable = False

    def infer(self, x, y):
        _integer(x, self.type, "x")
        _integer(y, self.type, "y")
        return (Spec(broadcast_shapes(x.shape, y.shape), x.dtype),)

    def forward(self, ctx, x, y):
        x, y = np.broadcast_arrays(np.asarray(x), np.asarray(y))
        width = x.dtype.itemsize * 8
        valid = (y >= 0) & (y < width)
        unsigned = np.dtype(f"u{x.dtype.itemsize}")
        shift = np.where(valid, y, 0).astype(unsigned)
        if self.direction == "RIGHT":
            shifted = np.right_shift(x, shift.astype(x.dtype))
            fill = np.where(x < 0, -1, 0).astype(x.dtype) if x.dtype.kind == "i" else 0
        else:
            shifted = np.left_shift(_contiguous(x).view(unsigned), shift).view(x.dtype)
            fill = 0
        return (np.asarray(np.where(valid, shifted, fill), dtype=x.dtype),)


def _contiguous(x) -> np.ndarray:
    """``x`` as a C-contiguous array of its own shape (0-d stays 0-d, unlike
    ``np.ascontiguousarray``), so that ``view`` may reinterpret its bytes."""
    x = np.asarray(x)
    return x if x.flags.c_contiguous else x.copy(order="C")


#: dtype names ``bit_cast`` accepts (every numeric type numpy has)
_BIT_DTYPES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8",
               "uint16", "uint32", "uint64", "bool")


class BitCast(Op):
    """The input's bytes read as dtype ``to`` of the same width (ONNX BitCast; little-endian,
    as numpy stores on every platform flowgrad runs on).  No value conversion: float32 1.0
    becomes int32 1065353216.  Forward-only."""

    type = "bit_cast"
    attrs = {"to": Attr("str", choices=_BIT_DTYPES, doc="target dtype of the same bit width")}
    differentiable = False

    def infer(self, x):
        to = np.dtype(self.to)
        if x.dtype.itemsize != to.itemsize:
            raise ShapeError(f"bit_cast: {x.dtype} ({8 * x.dtype.itemsize} bits) cannot be "
                             f"reinterpreted as {to} ({8 * to.itemsize} bits); BitCast needs "
                             "types of the same width")
        return (Spec(x.shape, to),)

    def forward(self, ctx, x):
        x = _contiguous(x)
        to = np.dtype(self.to)
        if x.dtype.itemsize != to.itemsize:
            raise ShapeError(f"bit_cast: {x.dtype} cannot be reinterpreted as {to} (widths "
                             "differ)")
        if to == np.bool_:                  # only 0 and 1 are valid bools in numpy
            return (x.view(np.uint8) != 0,)
        return (x.view(to),)


# -- n-gram counting (forward-only) ------------------------------------------------------------

def _rows_as_keys(a: np.ndarray) -> np.ndarray:
    """Each row of the int64 matrix ``a`` as one opaque (void) scalar: equal rows, equal keys."""
    a = np.ascontiguousarray(a, dtype=np.int64)
    return a.view(np.dtype((np.void, 8 * a.shape[1]))).reshape(-1)


def _lookup(windows: np.ndarray, grams: np.ndarray):
    """``(row, pool index)`` of every window (N, W, n) equal to one of ``grams`` (P, n): the
    windows' keys are binary-searched among the sorted pool keys, in O(N·W·log P) time and
    O(N·W·n) memory, whatever the pool's size."""
    keys = _rows_as_keys(grams)
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    flat = _rows_as_keys(windows.reshape(-1, windows.shape[-1]))
    # the last equal key: an n-gram listed twice counts for its later entry, as ONNX's
    # reference (whose n-gram trie overwrites the id) does
    at = np.maximum(np.searchsorted(ordered, flat, side="right") - 1, 0)
    hit = ordered[at] == flat
    return np.nonzero(hit)[0] // windows.shape[1], order[at[hit]]


class TfIdfVectorizer(Op):
    """Counts of the n-grams of ``pool`` in each row of an integer sequence (ONNX
    TfIdfVectorizer with ``pool_int64s``): input (C,) or (N, C), output (size,) or (N, size)
    float32 with size = max(ngram_indexes) + 1.

    ``pool`` lists the n-grams by length: those of length k + 1 start at ``ngram_counts[k]``
    (unigrams first, then the pairs, ...); the i-th n-gram of the pool is counted in output
    column ``ngram_indexes[i]``.  Only lengths from ``min_gram_length`` to ``max_gram_length``
    are counted; an n-gram may take every (d)-th token for d = 1 to ``max_skip_count`` + 1
    (unigrams are counted once, skips do not change them).  ``mode``: TF the counts, IDF
    ``weights[column]`` where the count is nonzero, TFIDF the counts times ``weights[column]``
    (weights default to 1).  Each (length, skip) looks every window of the rows up among the
    pool's n-grams of that length at once (a binary search on whole rows).  Forward-only.
    """

    type = "tfidf_vectorizer"
    attrs = {"mode": Attr("str", choices=("TF", "IDF", "TFIDF"), doc="counts, or weighted"),
             "min_gram_length": Attr("int", doc="shortest n-gram counted"),
             "max_gram_length": Attr("int", doc="longest n-gram counted"),
             "max_skip_count": Attr("int", doc="most tokens skipped between n-gram items"),
             "ngram_counts": Attr("ints", doc="where the n-grams of each length start in pool"),
             "ngram_indexes": Attr("ints", doc="output column of each pool n-gram"),
             "pool": Attr("ints", doc="the n-grams, concatenated, shortest first"),
             "weights": Attr("floats", None, doc="per output column (IDF, TFIDF)")}
    differentiable = False

    def check(self):
        def bad(attr, why):
            raise AttrError(f"tfidf_vectorizer: {why}", attr=attr)
        if not 1 <= self.min_gram_length <= self.max_gram_length:
            bad("min_gram_length", f"needs 1 <= min_gram_length <= max_gram_length, got "
                                   f"{self.min_gram_length} and {self.max_gram_length}")
        if self.max_skip_count < 0:
            bad("max_skip_count", f"max_skip_count must be >= 0, got {self.max_skip_count}")
        starts = list(self.ngram_counts) + [len(self.pool)]
        if any(b < a for a, b in zip(starts, starts[1:])) or (starts and starts[0] < 0):
            bad("ngram_counts", f"ngram_counts {list(self.ngram_counts)} must be increasing "
                                f"offsets into the pool of {len(self.pool)}")
        groups = [(b - a) // (k + 1) for k, (a, b) in enumerate(zip(starts, starts[1:]))]
        if sum(groups) != len(self.ngram_indexes) or min(self.ngram_indexes, default=0) < 0:
            bad("ngram_indexes", f"needs one index >= 0 per pool n-gram ({sum(groups)}), got "
                                 f"{len(self.ngram_indexes)}")
        if self.weights is not None and len(self.weights) != max(self.ngram_indexes) + 1:
            bad("weights", f"needs one weight per output column ({max(self.ngram_indexes) + 1})"
                           f", got {len(self.weights)}")

    def infer(self, x):
        if x.ndim not in (1, 2) or x.dtype.kind not in "iu":
            raise ShapeError(f"tfidf_vectorizer needs integer tokens (C,) or (N, C), got {x}")
        return (Spec(x.shape[:-1] + (max(self.ngram_indexes) + 1,), np.float32),)

    def _grams(self):
        """``(length, pool n-grams (P, length), their output columns)`` per counted length."""
        starts = list(self.ngram_counts) + [len(self.pool)]
        pool, columns = np.asarray(self.pool, np.int64), np.asarray(self.ngram_indexes)
        first = 0                                   # index of the group's first n-gram
        for k, (a, b) in enumerate(zip(starts, starts[1:])):
            n, count = k + 1, (b - a) // (k + 1)
            if count and self.min_gram_length <= n <= self.max_gram_length:
                yield n, pool[a:a + n * count].reshape(count, n), columns[first:first + count]
            first += count

    def forward(self, ctx, x):
        rows = np.atleast_2d(np.asarray(x, np.int64))
        size = max(self.ngram_indexes) + 1
        counts = np.zeros((rows.shape[0], size), np.int64)
        length = rows.shape[1]
        for n, grams, columns in self._grams():
            for distance in range(1, (self.max_skip_count if n > 1 else 0) + 2):
                span = distance * (n - 1)
                if span >= length:
                    break
                window = np.arange(length - span)[:, None] + distance * np.arange(n)
                row, pool_index = _lookup(rows[:, window], grams)
                np.add.at(counts, (row, columns[pool_index]), 1)
        weights = np.ones(size) if self.weights is None else np.asarray(self.weights)
        if self.mode == "TF":
            y = counts
        elif self.mode == "IDF":
            y = (counts > 0) * weights
        else:
            y = counts * weights
        y = y.astype(np.float32)
        return (y if np.ndim(x) == 2 else y[0],)
