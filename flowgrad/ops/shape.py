"""Shape ops: transpose, reshape, flatten, squeeze, unsqueeze.

None of them changes a value, only how it is laid out, so every backward is the inverse layout
change of the incoming gradient.  Axes count the batch axis (axis 0), as in numpy and ONNX.
Shape inference works with the batch axis (or any dim) unknown: a dim that cannot be known
before run time is ``None``.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..errors import AttrError
from ..op import Attr, Dim, Op, ShapeError, Spec, format_shape, normalize_axis, prod


@lru_cache(maxsize=1024)
def _axes(axes, ndim: int, what: str) -> tuple[int, ...]:
    """Normalised, duplicate-free axes for a ``ndim``-d value (ShapeError otherwise)."""
    out = tuple(normalize_axis(a, ndim) for a in axes)
    if len(set(out)) != len(out):
        raise ShapeError(f"{what} axes {list(axes)} name the same axis twice")
    return out


@lru_cache(maxsize=1024)
def _permutation(perm: tuple[int, ...] | None, ndim: int) -> tuple[int, ...]:
    """``perm`` checked and normalised for a ``ndim``-d input (None: reverse the axes)."""
    if perm is None:
        return tuple(range(ndim - 1, -1, -1))
    if sorted(a % ndim if -ndim <= a < ndim else a for a in perm) != list(range(ndim)):
        raise ShapeError(f"perm {list(perm)} is not a permutation of the {ndim} axes "
                         f"of the input")
    return tuple(a % ndim for a in perm)


class Transpose(Op):
    """Permutes axes: output axis i is input axis ``perm[i]``; no perm reverses them (ONNX).

    A view, except of a constant of the plan (a frozen plan's param: an ONNX ``Gemm``'s
    ``transB`` weight), which is materialised row-major once (:meth:`CPUBackend.row_major`,
    read-only as the constant is): the products that read it at every run — inside control
    flow bodies too, which no memo covers — read it row-major, which OpenBLAS does faster
    than through a transposed view (silero VAD's 512 x 128 gate weights at batch 1; BLAS's
    transposed-operand path for a single row is also another summation order, so it is the
    same array on every path, for the same bits on every call)."""

    type = "transpose"
    attrs = {"perm": Attr("ints", None, doc="a permutation of the axes; default reverses")}

    def _perm(self, ndim: int) -> tuple[int, ...]:
        return _permutation(self.perm, ndim)

    def infer(self, x):
        perm = self._perm(x.ndim)
        return (Spec(tuple(x.shape[a] for a in perm), x.dtype),)

    def forward(self, ctx, x):
        perm = _permutation(self.perm, x.ndim)
        ctx.save(perm)
        if type(x) is not np.ndarray:
            return (np.transpose(x, perm),)
        return (ctx.backend.row_major(x, lambda v: v.transpose(perm), "transpose", perm),)

    def backward(self, ctx, gy):
        (perm,) = ctx.saved
        return (np.transpose(gy, np.argsort(perm)),)


@lru_cache(maxsize=1024)
def resolve_reshape(target: tuple[int, ...], shape: tuple[Dim, ...],
                    allowzero: bool = False) -> tuple[Dim, ...]:
    """The output shape of an ONNX reshape of ``shape`` to ``target`` (tuples: the same ones
    come back at every run, hence the cache).

    ``0`` copies the input's dim at the same index (unless ``allowzero``: then it is a dim of
    size 0, as ONNX's attribute of that name says); one ``-1`` takes what is left.  Works on
    static shapes with unknown (``None``) dims, which then propagate; raises ShapeError when the
    sizes cannot match.
    """
    if sum(1 for d in target if d == -1) > 1:
        raise ShapeError(f"reshape target {list(target)} has more than one -1")
    out: list[Dim] = []
    for i, d in enumerate(target):
        if d == 0 and not allowzero:
            if i >= len(shape):
                raise ShapeError(f"reshape target {list(target)} copies dim {i} (a 0), but the "
                                 f"input {format_shape(shape)} has only {len(shape)} dims")
            out.append(shape[i])
        elif d >= -1:
            out.append(d)
        else:
            raise ShapeError(f"reshape target {list(target)} has a negative dim other than -1")
    # unknown input dims that a 0 copies to the same place cancel out of the size balance
    unknown = {j for j, d in enumerate(shape) if d is None}
    copied = {j for j, d in enumerate(target) if d == 0 and not allowzero and shape[j] is None}
    balanced = unknown == copied
    known_in = prod(d for d in shape if d is not None)
    if -1 in out:
        i = out.index(-1)
        known_rest = prod(d for j, d in enumerate(out) if j != i and d is not None)
        out[i] = _exact_div(known_in, known_rest, target, shape) if balanced else None
    elif balanced and known_in != prod(d for d in out if d is not None):
        raise ShapeError(f"cannot reshape {format_shape(shape)} to {list(target)}: the sizes "
                         f"differ")
    return tuple(out)


def _exact_div(numer: int, denom: int, target, shape) -> int:
    if denom == 0 or numer % denom:
        raise ShapeError(f"cannot reshape {format_shape(shape)} to {list(target)}: the sizes do "
                         f"not divide")
    return numer // denom


class Reshape(Op):
    """Reshape with ONNX semantics: ``0`` copies the input dim, one ``-1`` is inferred.

    The target comes from the ``shape`` attribute, or from the optional ``shape`` input (a 1-d
    integer array known only at run time, as ONNX graphs compute it), which overrides it.
    ``shape: [0, -1]`` flattens every sample whatever the batch size.
    """

    type = "reshape"
    inputs = ("x", "shape?")
    no_grad_inputs = frozenset({"shape"})
    attrs = {"shape": Attr("ints", None, doc="target shape: 0 copies the input dim, -1 infers"),
             "allowzero": Attr("bool", False, doc="a 0 in the target is a size-0 dim (ONNX)")}

    def infer(self, x, shape=None):
        if shape is not None:
            if shape.ndim != 1 or shape.dtype.kind not in "iu" or shape.shape[0] is None:
                raise ShapeError(f"reshape's shape input must be a 1-d integer array of known "
                                 f"length, got {shape}")
            return (Spec((None,) * shape.shape[0], x.dtype),)
        if self.shape is None:
            raise ShapeError("reshape needs a target: the 'shape' attribute or the shape input")
        return (Spec(resolve_reshape(self.shape, x.shape, self.allowzero), x.dtype),)

    def forward(self, ctx, x, shape=None):
        if shape is not None:
            shape = np.asarray(shape).reshape(-1)
            target = tuple(shape.tolist() if shape.dtype.kind in "iu"
                           else (int(d) for d in shape))
        elif self.shape is None:
            raise ShapeError("reshape needs a target: the 'shape' attribute or the shape input")
        else:
            target = self.shape
        ctx.save(x.shape)
        return (x.reshape(resolve_reshape(target, x.shape, self.allowzero)),)

    def backward(self, ctx, gy):
        (shape,) = ctx.saved
        return (gy.reshape(shape), None)


class Flatten(Op):
    """ONNX Flatten: a 2-d output, axes before ``axis`` become rows, the rest columns."""

    type = "flatten"
    attrs = {"axis": Attr("int", 1, doc="first axis of the columns (0 gives one row)")}

    def _axis(self, ndim: int) -> int:
        if not -ndim <= self.axis <= ndim:
            raise ShapeError(f"flatten axis {self.axis} is out of range for a {ndim}-d input")
        return self.axis % ndim if self.axis < 0 else self.axis

    def infer(self, x):
        axis = self._axis(x.ndim)
        rows, cols = x.shape[:axis], x.shape[axis:]
        return (Spec((None if None in rows else prod(rows), None if None in cols else prod(cols)),
                     x.dtype),)

    def forward(self, ctx, x):
        axis = self._axis(x.ndim)
        ctx.save(x.shape)
        return (x.reshape(prod(x.shape[:axis]), prod(x.shape[axis:])),)

    def backward(self, ctx, gy):
        (shape,) = ctx.saved
        return (gy.reshape(shape),)


class Squeeze(Op):
    """Removes size-1 axes: those in ``axes``, or every size-1 axis when ``axes`` is omitted.

    Without ``axes`` the output rank depends on the sizes, so an input with unknown dims is
    rejected at load time (name the axes instead: a batch of one would otherwise lose its
    batch axis).
    """

    type = "squeeze"
    attrs = {"axes": Attr("ints", None, doc="axes to remove; default every size-1 axis")}

    def _squeezed(self, shape: tuple[Dim, ...]) -> tuple[int, ...]:
        if self.axes is None:
            if None in shape:
                raise ShapeError(f"squeeze without axes on {format_shape(shape)} is ambiguous "
                                 f"(unknown dims might be 1); give 'axes'")
            return tuple(i for i, d in enumerate(shape) if d == 1)
        axes = _axes(self.axes, len(shape), "squeeze")
        for a in axes:
            if shape[a] is not None and shape[a] != 1:
                raise ShapeError(f"squeeze axis {a} has size {shape[a]}, not 1 "
                                 f"(input {format_shape(shape)})")
        return axes

    def infer(self, x):
        axes = self._squeezed(x.shape)
        return (Spec(tuple(d for i, d in enumerate(x.shape) if i not in axes), x.dtype),)

    def forward(self, ctx, x):
        axes = self._squeezed(x.shape)
        ctx.save(x.shape)
        return (x.squeeze(axes) if type(x) is np.ndarray else np.squeeze(x, axis=axes),)

    def backward(self, ctx, gy):
        (shape,) = ctx.saved
        return (gy.reshape(shape),)


class Unsqueeze(Op):
    """Inserts size-1 axes at ``axes``, positions in the output (ONNX/numpy expand_dims)."""

    type = "unsqueeze"
    attrs = {"axes": Attr("ints", doc="positions of the new axes in the output")}

    def check(self):
        if not self.axes:
            raise AttrError("unsqueeze needs at least one axis", attr="axes")

    def infer(self, x):
        return (Spec(_unsqueezed(x.shape, self.axes), x.dtype),)

    def forward(self, ctx, x):
        ctx.save(x.shape)
        x = np.asanyarray(x)        # a numpy scalar (what gather of one index returns) too
        return (x.reshape(_unsqueezed(x.shape, self.axes)),)   # what np.expand_dims does

    def backward(self, ctx, gy):
        (shape,) = ctx.saved
        return (gy.reshape(shape),)


@lru_cache(maxsize=1024)
def _unsqueezed(shape: tuple[Dim, ...], axes: tuple[int, ...]) -> tuple[Dim, ...]:
    """``shape`` with size-1 axes inserted at ``axes`` (positions in the result)."""
    ndim = len(shape) + len(axes)
    where = _axes(axes, ndim, "unsqueeze")
    rest = iter(shape)
    return tuple(1 if i in where else next(rest) for i in range(ndim))
