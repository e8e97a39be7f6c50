"""Selecting elements by index: gather, slice, split, where, top-k, arg-max/min, one-hot.

Semantics follow the ONNX operators of the same names (negative indices wrap, slice bounds are
clamped, ties go to the lower index), so the ONNX importer maps nodes one to one.  Index and
bound inputs are ``no_grad_inputs``; every backward scatters the incoming gradient back to the
positions that were read (``np.add.at`` where an index may repeat), into a fresh array.

Inputs that are usually constants in ONNX (slice bounds, split sizes, top-k's ``k``) are
optional ports with an attribute of the same name as fallback: a YAML graph writes them as
attributes, and with attributes ``infer`` knows the exact output shape.  A connected port
overrides the attribute.
"""
from __future__ import annotations

import numpy as np

from ..errors import AttrError
from ..op import (Attr, Op, ShapeError, Spec, broadcast_shapes, format_shape, normalize_axis,
                  result_dtype, unbroadcast)


def _require_int(spec: Spec | None, op: str, port: str) -> None:
    if spec is not None and spec.dtype.kind not in "iu":
        raise ShapeError(f"{op}: input '{port}' must hold integers, got {spec.dtype}")


def _ints(value) -> tuple[int, ...]:
    """A run-time shape-like input (any integer array) as a tuple of Python ints."""
    return tuple(int(v) for v in np.asarray(value).reshape(-1))


def _wrap(indices: np.ndarray, size: int, op: str) -> np.ndarray:
    """ONNX index rule: values in [-size, size), negative ones count from the end."""
    indices = np.asarray(indices)
    if indices.size and (indices.min() < -size or indices.max() >= size):
        bad = indices[(indices < -size) | (indices >= size)].flat[0]
        raise IndexError(f"{op}: index {bad} is out of range for an axis of size {size}")
    return np.where(indices < 0, indices + size, indices) if indices.size else indices


class Gather(Op):
    """``data`` indexed along ``axis`` by an integer array: out = take(data, indices, axis).

    Output shape: data.shape[:axis] + indices.shape + data.shape[axis+1:].  Backward adds each
    gradient slice into the row it came from, so repeated indices accumulate.
    """

    type = "gather"
    inputs = ("data", "indices")
    attrs = {"axis": Attr("int", 0, doc="axis of data that indices select along")}
    no_grad_inputs = frozenset({"indices"})

    def infer(self, data, indices):
        _require_int(indices, "gather", "indices")
        axis = normalize_axis(self.axis, data.ndim)
        return (Spec(data.shape[:axis] + indices.shape + data.shape[axis + 1:], data.dtype),)

    def forward(self, ctx, data, indices):
        axis = self.axis % data.ndim
        idx = _wrap(indices, data.shape[axis], "gather")
        ctx.save(data.shape, data.dtype, idx, axis)
        return (np.take(data, idx, axis=axis),)

    def backward(self, ctx, gy):
        shape, dtype, idx, axis = ctx.saved
        if not ctx.needs_input_grad[0]:
            return None, None
        gd = np.zeros(shape, dtype)
        # move the indexed axis (of gd) and the index axes (of gy) to the front, then scatter
        moved = np.moveaxis(gy, list(range(axis, axis + idx.ndim)), list(range(idx.ndim)))
        np.add.at(np.moveaxis(gd, axis, 0), idx, moved)
        return gd, None


class GatherElements(Op):
    """Per-element gather along ``axis``: out[i][j][k] = data[i][indices[i][j][k]][k] (axis 1).

    ``indices`` has data's rank; the output has indices' shape.  Backward scatter-adds.
    """

    type = "gather_elements"
    inputs = ("data", "indices")
    attrs = {"axis": Attr("int", 0, doc="axis of data that indices select along")}
    no_grad_inputs = frozenset({"indices"})

    def infer(self, data, indices):
        _require_int(indices, "gather_elements", "indices")
        if indices.ndim != data.ndim:
            raise ShapeError(f"gather_elements: indices {format_shape(indices.shape)} must have "
                             f"the rank of data {format_shape(data.shape)}")
        normalize_axis(self.axis, data.ndim)
        return (Spec(indices.shape, data.dtype),)

    def forward(self, ctx, data, indices):
        axis = self.axis % data.ndim
        idx = _wrap(indices, data.shape[axis], "gather_elements")
        ctx.save(data.shape, data.dtype, idx, axis)
        return (np.take_along_axis(data, idx, axis=axis),)

    def backward(self, ctx, gy):
        shape, dtype, idx, axis = ctx.saved
        if not ctx.needs_input_grad[0]:
            return None, None
        gd = np.zeros(shape, dtype)
        where = list(np.ogrid[tuple(slice(n) for n in idx.shape)])
        where[axis] = idx
        np.add.at(gd, tuple(where), gy)
        return gd, None


# -- slice -----------------------------------------------------------------------------------

_BOUND_PORTS = ("starts", "ends", "axes", "steps")


def slice_bounds(shape: tuple[int, ...], starts, ends, axes, steps) -> tuple[slice, ...]:
    """ONNX Slice semantics as a tuple of Python slices over every axis of ``shape``.

    Negative starts/ends count from the end; then, for a positive step, both are clamped to
    [0, dim]; for a negative step, start to [0, dim-1] and end to [-1, dim-1], where -1 means
    "through index 0" (written as ``None`` in a Python slice).
    """
    ndim = len(shape)
    axes = tuple(range(len(starts))) if axes is None else tuple(axes)
    steps = (1,) * len(starts) if steps is None else tuple(steps)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise ShapeError(f"slice: starts, ends, axes and steps must have one entry per sliced "
                         f"axis, got {len(starts)}, {len(ends)}, {len(axes)}, {len(steps)}")
    axes = tuple(normalize_axis(a, ndim) for a in axes)
    if len(set(axes)) != len(axes):
        raise ShapeError(f"slice: axes {axes} repeat an axis")
    out = [slice(None)] * ndim
    for start, end, axis, step in zip(starts, ends, axes, steps):
        dim = shape[axis]
        if step == 0:
            raise ShapeError("slice: a step cannot be 0")
        start = start + dim if start < 0 else start
        end = end + dim if end < 0 else end
        if step > 0:
            start, end = min(max(start, 0), dim), min(max(end, 0), dim)
        else:
            start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
        out[axis] = slice(start, None if end < 0 else end, step)
    return tuple(out)


class Slice(Op):
    """``data[starts:ends:steps]`` along ``axes`` with ONNX's clamping; negative steps allowed.

    Bounds come from the optional int ports (as in ONNX opset ≥ 10) or, when a port is not
    connected, from the attribute of the same name (as in YAML and ONNX opset < 10).  ``axes``
    defaults to the first len(starts) axes and ``steps`` to 1.
    """

    type = "slice"
    inputs = ("data", "starts?", "ends?", "axes?", "steps?")
    attrs = {"starts": Attr("ints", None, doc="first index per sliced axis"),
             "ends": Attr("ints", None, doc="end index (exclusive) per sliced axis"),
             "axes": Attr("ints", None, doc="axes to slice (default: the first len(starts))"),
             "steps": Attr("ints", None, doc="step per sliced axis (default 1)")}
    no_grad_inputs = frozenset(_BOUND_PORTS)

    def _bounds(self, given: dict):
        """Each bound: the port's value if connected, else the attribute (may be None)."""
        return [given[p] if given[p] is not None else getattr(self, p) for p in _BOUND_PORTS]

    def infer(self, data, starts, ends, axes, steps):
        ports = dict(zip(_BOUND_PORTS, (starts, ends, axes, steps)))
        for port, spec in ports.items():
            _require_int(spec, "slice", port)
        if (starts is None and self.starts is None) or (ends is None and self.ends is None):
            raise ShapeError("slice needs starts and ends, as inputs or attributes")
        if all(s is None for s in ports.values()):
            bounds = self._bounds(dict.fromkeys(_BOUND_PORTS))
            full = tuple(0 if d is None else d for d in data.shape)
            slices = slice_bounds(full, *bounds)
            shape = tuple(None if d is None and s != slice(None) else
                          len(range(*s.indices(f))) if d is not None else None
                          for d, s, f in zip(data.shape, slices, full))
            return (Spec(shape, data.dtype),)
        # bounds known only at run time: the sliced axes, if known, keep everything else
        if axes is None and self.axes is not None:
            sliced = {normalize_axis(a, data.ndim) for a in self.axes}
        elif axes is None and starts is not None and starts.shape and starts.shape[0] is not None:
            sliced = set(range(starts.shape[0]))
        elif axes is None and starts is None:
            sliced = set(range(len(self.starts)))
        else:
            sliced = set(range(data.ndim))
        return (Spec(tuple(None if i in sliced else d for i, d in enumerate(data.shape)),
                     data.dtype),)

    def forward(self, ctx, data, *ports):
        bounds = [None if b is None else _ints(b)
                  for b in self._bounds(dict(zip(_BOUND_PORTS, ports)))]
        if bounds[0] is None or bounds[1] is None:
            raise ShapeError("slice needs starts and ends, as inputs or attributes")
        slices = slice_bounds(data.shape, *bounds)
        ctx.save(data.shape, data.dtype, slices)
        return (data[slices],)

    def backward(self, ctx, gy):
        shape, dtype, slices = ctx.saved
        gd = None
        if ctx.needs_input_grad[0]:
            gd = np.zeros(shape, dtype)
            gd[slices] = gy
        return (gd,) + (None,) * (len(ctx.needs_input_grad) - 1)


# -- split -----------------------------------------------------------------------------------

class Split(Op):
    """Cuts ``input`` along ``axis`` into consecutive pieces: outputs ``0``, ``1``, ...

    Sizes come from the ``split`` port, else the ``split`` attribute, else ``parts`` pieces of
    size ceil(dim / parts) with a smaller last one (ONNX opset 18).  The number of outputs must
    be known when the graph is built: from ``parts`` (ONNX ``num_outputs``, renamed because
    ``Op.num_outputs`` is a method) or the attribute's length.  Backward concatenates the
    pieces' gradients (zeros for unused outputs).
    """

    type = "split"
    inputs = ("input", "split?")
    attrs = {"axis": Attr("int", 0, doc="axis to cut along"),
             "parts": Attr("int", None, doc="number of pieces (ONNX num_outputs)"),
             "split": Attr("ints", None, doc="size of each piece")}
    no_grad_inputs = frozenset({"split"})

    def check(self):
        if self.parts is None and self.split is None:
            raise AttrError("split needs 'parts' (how many pieces) or 'split' (their sizes)",
                            attr="parts")
        if self.parts is not None and self.parts < 1:
            raise AttrError("split: parts must be at least 1", attr="parts")
        if self.split is not None:
            if any(s < 0 for s in self.split):
                raise AttrError(f"split: piece sizes must be >= 0, got {list(self.split)}",
                                attr="split")
            if self.parts is not None and self.parts != len(self.split):
                raise AttrError(f"split: parts={self.parts} but 'split' lists "
                                f"{len(self.split)} sizes", attr="parts")

    def num_outputs(self, num_inputs):
        return self._count

    @property
    def _count(self) -> int:
        return self.parts if self.parts is not None else len(self.split)

    def output_names(self, num_inputs):
        return tuple(str(i) for i in range(self._count))

    def _sizes(self, dim: int, split) -> list[int]:
        n = self._count
        if split is not None:
            sizes = list(_ints(split))
            if len(sizes) != n:
                raise ShapeError(f"split: {len(sizes)} sizes given for {n} outputs")
        elif self.split is not None:
            sizes = list(self.split)
        else:
            chunk = -(-dim // n)
            sizes = [chunk] * (n - 1) + [dim - chunk * (n - 1)]
            if sizes[-1] < 0:
                raise ShapeError(f"split: an axis of size {dim} cannot be cut into {n} pieces "
                                 f"of size {chunk} (ceil({dim}/{n})) with a smaller last one")
        if sum(sizes) != dim:
            raise ShapeError(f"split: sizes {sizes} do not add up to the axis size {dim}")
        return sizes

    def infer(self, x, split):
        _require_int(split, "split", "split")
        axis = normalize_axis(self.axis, x.ndim)
        dim = x.shape[axis]
        if split is not None or (dim is None and self.split is None):
            sizes = [None] * self._count
        else:
            sizes = self._sizes(dim, None) if dim is not None else list(self.split)
        return tuple(Spec(x.shape[:axis] + (s,) + x.shape[axis + 1:], x.dtype) for s in sizes)

    def forward(self, ctx, x, split):
        axis = self.axis % x.ndim
        sizes = self._sizes(x.shape[axis], split)
        ctx.save(x.shape, x.dtype, axis, sizes)
        return tuple(np.split(x, np.cumsum(sizes)[:-1], axis=axis))

    def backward(self, ctx, *grads):
        shape, dtype, axis, sizes = ctx.saved
        if not ctx.needs_input_grad[0]:
            return None, None
        parts = [g if g is not None else
                 np.zeros(shape[:axis] + (n,) + shape[axis + 1:], dtype)
                 for g, n in zip(grads, sizes)]
        return np.concatenate(parts, axis=axis), None


# -- where -----------------------------------------------------------------------------------

class Where(Op):
    """x where condition else y, with three-way broadcasting; gradients go to the chosen side."""

    type = "where"
    inputs = ("condition", "x", "y")
    no_grad_inputs = frozenset({"condition"})

    def infer(self, condition, x, y):
        if condition.dtype != np.bool_:
            raise ShapeError(f"where: condition must be bool, got {condition.dtype}")
        return (Spec(broadcast_shapes(condition.shape, x.shape, y.shape), result_dtype(x, y)),)

    def forward(self, ctx, condition, x, y):
        out = np.where(condition, x, y)
        ctx.save(condition, x.shape, y.shape, x.dtype, y.dtype)
        return (out,)

    def backward(self, ctx, gy):
        condition, xs, ys, xd, yd = ctx.saved
        _, need_x, need_y = ctx.needs_input_grad
        gx = unbroadcast(np.where(condition, gy, 0), xs).astype(xd, copy=False) \
            if need_x else None
        gyy = unbroadcast(np.where(condition, 0, gy), ys).astype(yd, copy=False) \
            if need_y else None
        return None, gx, gyy


# -- top-k and arg-extremes --------------------------------------------------------------------

def _descending_order(x: np.ndarray, axis: int) -> np.ndarray:
    """argsort for largest-first with ties in index order, without negating (safe for uints).

    A stable ascending sort of the reversed axis, reversed again, puts equal values in
    ascending original-index order.
    """
    n = x.shape[axis]
    order = np.argsort(np.flip(x, axis), axis=axis, kind="stable")
    return n - 1 - np.flip(order, axis)


class TopK(Op):
    """The ``k`` largest (or smallest) values along ``axis`` and their int64 indices.

    Ties go to the lower index, as in ONNX.  The result is always sorted (ONNX allows any order
    with ``sorted: false``).  Backward puts each value's gradient at its index.
    """

    type = "topk"
    inputs = ("x", "k?")
    outputs = ("values", "indices")
    attrs = {"axis": Attr("int", -1, doc="axis to select along"),
             "largest": Attr("bool", True, doc="largest (true) or smallest (false) values"),
             "sorted": Attr("bool", True, doc="kept for ONNX; the output is always sorted"),
             "k": Attr("int", None, doc="how many (used when the k input is not connected)")}
    no_grad_inputs = frozenset({"k"})

    def infer(self, x, k):
        _require_int(k, "topk", "k")
        axis = normalize_axis(self.axis, x.ndim)
        if k is None and self.k is None:
            raise ShapeError("topk needs k, as an input or an attribute")
        if k is None and x.shape[axis] is not None and self.k > x.shape[axis]:
            raise ShapeError(f"topk: k={self.k} is larger than the axis size {x.shape[axis]}")
        size = self.k if k is None else None
        shape = x.shape[:axis] + (size,) + x.shape[axis + 1:]
        return Spec(shape, x.dtype), Spec(shape, np.int64)

    def forward(self, ctx, x, k):
        axis = self.axis % x.ndim
        k = self.k if k is None else int(np.asarray(k).reshape(-1)[0])
        if not 0 <= k <= x.shape[axis]:
            raise ShapeError(f"topk: k={k} is outside [0, {x.shape[axis]}]")
        order = _descending_order(x, axis) if self.largest else \
            np.argsort(x, axis=axis, kind="stable")
        idx = np.take(order, np.arange(k), axis=axis)
        ctx.save(x.shape, x.dtype, idx, axis)
        return np.take_along_axis(x, idx, axis=axis), idx.astype(np.int64, copy=False)

    def backward(self, ctx, gv, gi):
        shape, dtype, idx, axis = ctx.saved
        if not ctx.needs_input_grad[0]:
            return None, None
        gx = np.zeros(shape, dtype)
        if gv is not None:
            np.put_along_axis(gx, idx, gv, axis=axis)  # indices along the axis are distinct
        return gx, None


class _ArgExtreme(Op):
    """Index (int64) of the extreme value along ``axis``; ties: first, or last if asked."""

    attrs = {"axis": Attr("int", 0, doc="axis to reduce"),
             "keepdims": Attr("bool", True, doc="keep the reduced axis with size 1"),
             "select_last_index": Attr("bool", False, doc="on ties, the last index")}
    differentiable = False
    _pick = staticmethod(np.argmax)

    def infer(self, x):
        axis = normalize_axis(self.axis, x.ndim)
        shape = x.shape[:axis] + ((1,) if self.keepdims else ()) + x.shape[axis + 1:]
        return (Spec(shape, np.int64),)

    def forward(self, ctx, x):
        axis = self.axis % x.ndim
        if self.select_last_index:
            idx = x.shape[axis] - 1 - self._pick(np.flip(x, axis), axis=axis, keepdims=True)
        else:
            idx = self._pick(x, axis=axis, keepdims=True)
        if not self.keepdims:
            idx = np.squeeze(idx, axis)
        return (idx.astype(np.int64, copy=False),)


class ArgMax(_ArgExtreme):
    """Index of the largest value along ``axis`` (ONNX ArgMax; forward-only)."""

    type = "argmax"
    _pick = staticmethod(np.argmax)


class ArgMin(_ArgExtreme):
    """Index of the smallest value along ``axis`` (ONNX ArgMin; forward-only)."""

    type = "argmin"
    _pick = staticmethod(np.argmin)


# -- one-hot ---------------------------------------------------------------------------------

class OneHot(Op):
    """``values[1]`` where the new ``axis`` equals the index, ``values[0]`` elsewhere (ONNX).

    Indices in [-depth, depth) count (negative ones from the end); others give an all-"off"
    row.  ``depth`` is a scalar (or one-element) input; ``values`` is [off, on] and may take a
    gradient: the sum of the output gradient over the off and the on positions.
    """

    type = "one_hot"
    inputs = ("indices", "depth", "values")
    attrs = {"axis": Attr("int", -1, doc="position of the new axis in the output")}
    no_grad_inputs = frozenset({"indices", "depth"})

    def infer(self, indices, depth, values):
        if values.shape not in ((2,), (None,)):
            raise ShapeError(f"one_hot: values must be [off, on], got {format_shape(values.shape)}")
        axis = normalize_axis(self.axis, indices.ndim + 1)
        return (Spec(indices.shape[:axis] + (None,) + indices.shape[axis:], values.dtype),)

    def forward(self, ctx, indices, depth, values):
        depth = int(np.asarray(depth).reshape(-1)[0])
        axis = self.axis % (indices.ndim + 1)
        idx = np.asarray(indices).astype(np.int64)
        idx = np.where(idx < 0, idx + depth, idx)
        shape = [1] * (idx.ndim + 1)
        shape[axis] = depth
        hot = np.expand_dims(idx, axis) == np.arange(depth).reshape(shape)
        ctx.save(hot)
        return (np.where(hot, values[1], values[0]).astype(values.dtype, copy=False),)

    def backward(self, ctx, gy):
        (hot,) = ctx.saved
        if not ctx.needs_input_grad[2]:
            return None, None, None
        on = np.sum(gy, where=hot)
        off = np.sum(gy, where=~hot)
        return None, None, np.array([off, on], dtype=gy.dtype)
