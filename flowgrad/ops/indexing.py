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

from functools import lru_cache

import numpy as np

from ..errors import AttrError
from ..op import (Attr, Op, ShapeError, Spec, broadcast_shapes, format_shape, normalize_axis,
                  result_dtype, unbroadcast)


def _require_int(spec: Spec | None, op: str, port: str) -> None:
    if spec is not None and spec.dtype.kind not in "iu":
        raise ShapeError(f"{op}: input '{port}' must hold integers, got {spec.dtype}")


def _ints(value) -> tuple[int, ...]:
    """A run-time shape-like input (any integer array) as a tuple of Python ints."""
    value = np.asarray(value)
    if value.dtype.kind in "iu":        # the usual case: one C call
        return tuple(value.reshape(-1).tolist())
    return tuple(int(v) for v in value.reshape(-1))


def _wrap(indices: np.ndarray, size: int, op: str) -> np.ndarray:
    """ONNX index rule: values in [-size, size), negative ones count from the end."""
    indices = np.asarray(indices)
    if indices.ndim == 0 and indices.dtype.kind in "iu":     # one index: no array passes
        i = int(indices)
        if not -size <= i < size:
            raise IndexError(f"{op}: index {i} is out of range for an axis of size {size}")
        return np.asarray(indices + size) if i < 0 else indices
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


@lru_cache(maxsize=1024)
def slice_bounds(shape: tuple[int, ...], starts, ends, axes, steps) -> tuple[slice, ...]:
    """ONNX Slice semantics as a tuple of Python slices over every axis of ``shape``
    (the arguments are tuples; the same ones come back at every run, hence the cache).

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
    axes = tuple(a if 0 <= a < ndim else normalize_axis(a, ndim) for a in axes)
    if len(axes) > 1 and len(set(axes)) != len(axes):
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
        # a connected port's value, else the attribute (already a tuple of ints, or None)
        bounds = [getattr(self, name) if port is None else _ints(port)
                  for name, port in zip(_BOUND_PORTS, ports)]
        bounds += [getattr(self, name) for name in _BOUND_PORTS[len(ports):]]
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
        # views by plain slicing, as np.split gives them, without its ~10 µs of set-up (an
        # LSTM cell unrolled into ONNX splits its gates at every step)
        lead, pieces, start = (slice(None),) * axis, [], 0
        for size in sizes:
            pieces.append(x[lead + (slice(start, start + size),)])
            start += size
        return tuple(pieces)

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


# -- scatter ---------------------------------------------------------------------------------
#
# ScatterND and ScatterElements differ only in how an update finds its place in ``data``; both
# turn their indices into one flat position (into ``data.ravel()``) per element of ``updates``
# and share the reduction and its gradient below.

_REDUCTIONS = ("none", "add", "mul", "max", "min")


def _last_writers(flat: np.ndarray) -> np.ndarray:
    """Mask of the updates that are the last to write their position (ONNX's reference
    applies updates in order, so with ``reduction: none`` the last one stays)."""
    n = flat.size
    _, first_in_reversed = np.unique(flat[::-1], return_index=True)
    mask = np.zeros(n, bool)
    mask[n - 1 - first_in_reversed] = True
    return mask


def _scatter_forward(data: np.ndarray, flat: np.ndarray, updates: np.ndarray,
                     reduction: str) -> np.ndarray:
    out = data.reshape(-1).copy()
    f = flat.reshape(-1)
    u = updates.reshape(-1).astype(data.dtype, copy=False)
    if reduction == "none":
        last = _last_writers(f)
        out[f[last]] = u[last]
    else:
        {"add": np.add, "mul": np.multiply, "max": np.maximum,
         "min": np.minimum}[reduction].at(out, f, u)
    return out.reshape(data.shape)


def _others_product(values: np.ndarray, at: np.ndarray, nz_prod: np.ndarray,
                    zeros: np.ndarray) -> np.ndarray:
    """For factors ``values`` at positions ``at``: the product of the other factors at the same
    position, without dividing by zero (the nonzero product and the zero count per position)."""
    p, z = nz_prod[at], zeros[at]
    nonzero = values != 0
    safe = np.where(nonzero, values, 1)
    return np.where(nonzero, np.where(z == 0, p / safe, 0), np.where(z == 1, p, 0))


def _scatter_backward(ctx, gy, reduction_of_op: str):
    """Gradients of a scatter w.r.t. data and updates (see :class:`ScatterElements`)."""
    data, flat, updates, out = ctx.saved
    need_data, _, need_updates = ctx.needs_input_grad[:3]
    g = gy.reshape(-1)
    f = flat.reshape(-1)
    u = updates.reshape(-1)
    d = data.reshape(-1)
    gd = gu = None
    if reduction_of_op == "none":
        if need_data:
            gd = g.copy()
            gd[f] = 0
        if need_updates:
            gu = np.where(_last_writers(f), g[f], 0)
    elif reduction_of_op == "add":
        if need_data:
            gd = g
        if need_updates:
            gu = g[f]
    elif reduction_of_op == "mul":
        nz_prod = np.where(d != 0, d, 1).astype(d.dtype)
        np.multiply.at(nz_prod, f, np.where(u != 0, u, 1))
        zeros = (d == 0).astype(np.int64)
        np.add.at(zeros, f, (u == 0).astype(np.int64))
        if need_data:
            gd = g * _others_product(d, np.arange(d.size), nz_prod, zeros)
        if need_updates:
            gu = g[f] * _others_product(u, f, nz_prod, zeros)
    else:                                   # max / min: the first factor holding the result
        o = out.reshape(-1)
        data_wins = d == o
        if need_data:
            gd = np.where(data_wins, g, 0)
        if need_updates:
            j = np.arange(u.size)
            eligible = (u == o[f]) & ~data_wins[f]
            first = np.full(d.size, u.size, np.int64)
            np.minimum.at(first, f[eligible], j[eligible])
            gu = np.where(first[f] == j, g[f], 0)
    gd = None if gd is None else np.asarray(gd, data.dtype).reshape(data.shape)
    gu = None if gu is None else np.asarray(gu, updates.dtype).reshape(updates.shape)
    return gd, None, gu


class _Scatter(Op):
    inputs = ("data", "indices", "updates")
    no_grad_inputs = frozenset({"indices"})
    attrs = {"reduction": Attr("str", "none", choices=_REDUCTIONS,
                               doc="how an update combines with what is there")}

    def _flat(self, data, indices, updates) -> np.ndarray:
        raise NotImplementedError

    def forward(self, ctx, data, indices, updates):
        if updates.dtype != data.dtype:
            raise ShapeError(f"{self.type}: updates are {updates.dtype} but data is "
                             f"{data.dtype}; they must have one dtype")
        flat = self._flat(data, np.asarray(indices), updates)
        out = _scatter_forward(data, flat, updates, self.reduction)
        if ctx.grad_enabled:
            ctx.save(data, flat, updates, out)
        return (out,)

    def backward(self, ctx, gy):
        return _scatter_backward(ctx, gy, self.reduction)


class ScatterElements(_Scatter):
    """A copy of ``data`` with ``updates[i][j][k]`` written at ``data[indices[i][j][k]][j][k]``
    (axis 0), combined by ``reduction`` (ONNX ScatterElements; also the deprecated Scatter).

    Gradients: ``none`` — data gets the output gradient where nothing was written, an update
    the gradient at its place if it was the last to write it (the one that stays); ``add`` —
    both get it unchanged; ``mul`` — each factor (the data element and every update written to
    it) gets the product of the others, computed from per-place nonzero products and zero
    counts, so zeros are exact and nothing divides by zero; ``max`` / ``min`` — only the factor
    holding the result, the data element first and then the earliest update on ties (as
    flowgrad's ``max`` and ``min`` do).  Indices take no gradient.
    """

    type = "scatter_elements"
    attrs = {"axis": Attr("int", 0, doc="axis of data that indices select along"),
             **_Scatter.attrs}

    def infer(self, data, indices, updates):
        _require_int(indices, self.type, "indices")
        normalize_axis(self.axis, data.ndim)
        if not indices.ndim == updates.ndim == data.ndim:
            raise ShapeError(f"{self.type}: data {format_shape(data.shape)}, indices "
                             f"{format_shape(indices.shape)} and updates "
                             f"{format_shape(updates.shape)} must have one rank")
        broadcast_shapes(indices.shape, updates.shape)
        return (Spec(data.shape, data.dtype),)

    def _flat(self, data, indices, updates):
        if indices.shape != updates.shape or indices.ndim != data.ndim:
            raise ShapeError(f"{self.type}: indices {indices.shape} and updates "
                             f"{updates.shape} must have one shape, of data's rank {data.ndim}")
        axis = self.axis % data.ndim
        big = [i for i in range(data.ndim)
               if i != axis and indices.shape[i] > data.shape[i]]
        if big:
            raise ShapeError(f"{self.type}: indices {indices.shape} are larger than data "
                             f"{data.shape} on axis {big[0]}")
        where = list(np.indices(indices.shape, sparse=True))
        where[axis] = _wrap(indices, data.shape[axis], self.type)
        return np.ravel_multi_index(tuple(np.broadcast_arrays(*where)), data.shape) \
            if indices.size else np.zeros(indices.shape, np.int64)


class ScatterND(_Scatter):
    """A copy of ``data`` with slices replaced: ``indices`` has shape ``(..., k)``, each row
    addressing ``data[i0, ..., ik-1]`` (a slice of shape ``data.shape[k:]``); ``updates`` has
    shape ``indices.shape[:-1] + data.shape[k:]`` (ONNX ScatterND).  Reductions and gradients
    as :class:`ScatterElements`, element by element of the written slices.
    """

    type = "scatter_nd"

    def infer(self, data, indices, updates):
        _require_int(indices, self.type, "indices")
        if indices.ndim < 1:
            raise ShapeError(f"{self.type}: indices must have at least one axis")
        k = indices.shape[-1]
        if k is not None:
            if k > data.ndim:
                raise ShapeError(f"{self.type}: index rows of length {k} for a {data.ndim}-d "
                                 "data")
            want = indices.shape[:-1] + data.shape[k:]
            if updates.ndim != len(want):
                raise ShapeError(f"{self.type}: updates {format_shape(updates.shape)} must "
                                 f"have shape {format_shape(want)}")
        return (Spec(data.shape, data.dtype),)

    def _flat(self, data, indices, updates):
        k = indices.shape[-1] if indices.ndim else -1
        if k < 0 or k > data.ndim:
            raise ShapeError(f"{self.type}: indices of shape {indices.shape} cannot address "
                             f"a {data.ndim}-d data")
        want = indices.shape[:-1] + data.shape[k:]
        if updates.shape != want:
            raise ShapeError(f"{self.type}: updates have shape {updates.shape}, expected "
                             f"{want} (indices.shape[:-1] + data.shape[{k}:])")
        rows = indices.shape[:-1]
        if k:
            parts = tuple(_wrap(indices[..., i], data.shape[i], self.type) for i in range(k))
            base = np.ravel_multi_index(parts, data.shape[:k]) if indices.size \
                else np.zeros(rows, np.int64)
        else:
            base = np.zeros(rows, np.int64)
        inner = int(np.prod(data.shape[k:], dtype=np.int64))
        flat = base[..., None] * inner + np.arange(inner)
        return flat.reshape(want)


# -- gather_nd -------------------------------------------------------------------------------

class GatherND(Op):
    """Slices of ``data`` addressed by the rows of ``indices`` (ONNX GatherND).

    ``indices`` has shape ``batch + M + (k,)``; the first ``batch_dims`` axes of data and
    indices are matched, and each row of length ``k`` selects ``data[b][i0, ..., ik-1]``.
    Output shape: ``indices.shape[:-1] + data.shape[batch_dims + k:]``.  Backward adds each
    slice's gradient at its place (repeated rows accumulate).
    """

    type = "gather_nd"
    inputs = ("data", "indices")
    attrs = {"batch_dims": Attr("int", 0, doc="leading axes shared by data and indices")}
    no_grad_inputs = frozenset({"indices"})

    def check(self):
        if self.batch_dims < 0:
            raise AttrError("gather_nd: batch_dims must be >= 0", attr="batch_dims")

    def infer(self, data, indices):
        _require_int(indices, self.type, "indices")
        b = self.batch_dims
        if indices.ndim < b + 1 or data.ndim < b:
            raise ShapeError(f"gather_nd: batch_dims={b} needs indices of rank > {b} and data "
                             f"of rank >= {b}")
        k = indices.shape[-1]
        if k is None:
            raise ShapeError("gather_nd: the length of index rows (the last axis of indices) "
                             "must be known")
        if b + k > data.ndim:
            raise ShapeError(f"gather_nd: rows of length {k} after {b} batch axes for a "
                             f"{data.ndim}-d data")
        return (Spec(indices.shape[:-1] + data.shape[b + k:], data.dtype),)

    def _where(self, data, indices):
        b, k = self.batch_dims, indices.shape[-1]
        if data.shape[:b] != indices.shape[:b] or b + k > data.ndim:
            raise ShapeError(f"gather_nd: data {data.shape} and indices {indices.shape} do "
                             f"not match for batch_dims={b}")
        batch = int(np.prod(data.shape[:b], dtype=np.int64))
        rows = indices.reshape(batch, -1, k)
        first = np.broadcast_to(np.arange(batch)[:, None], rows.shape[:2])
        where = (first,) + tuple(
            _wrap(rows[..., i], data.shape[b + i], "gather_nd") for i in range(k))
        return batch, where

    def forward(self, ctx, data, indices):
        indices = np.asarray(indices)
        batch, where = self._where(data, indices)
        d2 = data.reshape((batch,) + data.shape[self.batch_dims:])
        out = d2[where].reshape(indices.shape[:-1] + data.shape[self.batch_dims
                                                               + indices.shape[-1]:])
        ctx.save(data.shape, data.dtype, batch, where)
        return (out,)

    def backward(self, ctx, gy):
        shape, dtype, batch, where = ctx.saved
        if not ctx.needs_input_grad[0]:
            return None, None
        gd = np.zeros((batch,) + shape[self.batch_dims:], dtype)
        np.add.at(gd, where, gy.reshape(where[0].shape + gd.shape[len(where):]))
        return gd.reshape(shape), None


# -- cumulative sums and products -------------------------------------------------------------

def _axis_value(port, attr: int, ndim: int, op: str) -> int:
    """The axis from the (scalar) port if connected, else the attribute; checked."""
    if port is not None:
        port = np.asarray(port)
        if port.size != 1 or port.dtype.kind not in "iu":
            raise ShapeError(f"{op}: the axis input must be one integer, got {port!r}")
        attr = int(port.reshape(-1)[0])
    return normalize_axis(attr, ndim)


def _shift(x: np.ndarray, axis: int, fill) -> np.ndarray:
    """x moved one step forward along ``axis``: out[0] = fill, out[i] = x[i-1]."""
    out = np.empty_like(x)
    lead = [slice(None)] * x.ndim
    rest = list(lead)
    lead[axis], rest[axis] = slice(0, 1), slice(1, None)
    out[tuple(lead)] = fill
    src = list(lead)
    src[axis] = slice(0, -1)
    out[tuple(rest)] = x[tuple(src)]
    return out


class _Cumulative(Op):
    inputs = ("x", "axis?")
    attrs = {"axis": Attr("int", 0, doc="axis to accumulate along (the axis input wins)"),
             "exclusive": Attr("bool", False, doc="leave out each element itself"),
             "reverse": Attr("bool", False, doc="accumulate from the end")}
    no_grad_inputs = frozenset({"axis"})
    _ufunc = np.add

    def infer(self, x, axis):
        _require_int(axis, self.type, "axis")
        if axis is None:
            normalize_axis(self.axis, x.ndim)
        return (Spec(x.shape, x.dtype),)

    def _scan(self, x, axis, exclusive, reverse):
        if reverse:
            x = np.flip(x, axis)
        y = self._ufunc.accumulate(x, axis=axis, dtype=x.dtype)
        if exclusive:
            y = _shift(y, axis, self._ufunc.identity)
        return np.flip(y, axis) if reverse else y

    def forward(self, ctx, x, axis):
        if x.ndim == 0:
            raise ShapeError(f"{self.type}: input must have at least one axis")
        axis = _axis_value(axis, self.axis, x.ndim, self.type)
        ctx.save(x, axis)
        return (np.ascontiguousarray(self._scan(x, axis, self.exclusive, self.reverse)),)


class CumSum(_Cumulative):
    """Running sums along ``axis`` (ONNX CumSum): ``exclusive`` leaves each element out,
    ``reverse`` sums from the end.  The gradient is the running sum of the output gradient in
    the other direction (the transpose of a triangular matrix of ones)."""

    type = "cumsum"

    def backward(self, ctx, gy):
        x, axis = ctx.saved
        if not ctx.needs_input_grad[0]:
            return None, None
        return self._scan(gy, axis, self.exclusive, not self.reverse), None


def _cumprod_grad(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Gradient of the inclusive running product along the last axis, exact with zeros.

    dx_j = sum_{i>=j} g_i prod_{k<=i, k!=j} x_k.  Let z be the first zero of the line: for
    j < z it is sum_{j<=i<z} g_i y_i / x_j (x_j != 0, and y_i = 0 from z on); for j = z it is
    sum_{i>=z} g_i y'_i with y' the running product with x_z replaced by 1; for j > z every
    term holds x_z = 0.
    """
    n = x.shape[-1]
    pos = np.arange(n)
    zero = x == 0
    z = np.where(zero.any(-1, keepdims=True), np.argmax(zero, -1)[..., None], n)
    before = pos < z

    def tail_sum(v):
        return np.flip(np.cumsum(np.flip(v, -1), -1), -1)

    y = np.cumprod(x, -1)
    grad = np.where(before, tail_sum(g * y) / np.where(before, x, 1), 0)
    at = pos == z
    if at.any():
        y1 = np.cumprod(np.where(at, 1, x), -1)
        grad = np.where(at, tail_sum(g * y1), grad)
    return grad.astype(x.dtype, copy=False)


class CumProd(_Cumulative):
    """Running products along ``axis`` (ONNX CumProd), with ``exclusive`` and ``reverse``
    like :class:`CumSum`.  The gradient is exact where the input holds zeros (no division by
    zero; see :func:`_cumprod_grad`)."""

    type = "cumprod"
    _ufunc = np.multiply

    def backward(self, ctx, gy):
        x, axis = ctx.saved
        if not ctx.needs_input_grad[0]:
            return None, None
        xm, gm = np.moveaxis(x, axis, -1), np.moveaxis(gy, axis, -1)
        if self.reverse:
            xm, gm = np.flip(xm, -1), np.flip(gm, -1)
        if self.exclusive:       # y_ex[i] = y_in[i-1]: the inclusive output i gets g[i+1]
            gm = np.concatenate([gm[..., 1:], np.zeros_like(gm[..., :1])], -1)
        gx = _cumprod_grad(xm, gm)
        if self.reverse:
            gx = np.flip(gx, -1)
        return np.ascontiguousarray(np.moveaxis(gx, -1, axis)), None


# -- data-dependent selections -----------------------------------------------------------------
#
# The output length of these ops depends on the values, not only the shapes: ``infer`` gives
# that dim as unknown (None), which the plan accepts anywhere (as for ``range``), and the first
# run checks only the known dims.

class NonZero(Op):
    """The int64 indices of the nonzero elements, one row per axis: shape (ndim, count), in
    row-major order (ONNX NonZero).  Forward-only: indices carry no gradient."""

    type = "nonzero"
    differentiable = False

    def infer(self, x):
        return (Spec((x.ndim, None), np.int64),)

    def forward(self, ctx, x):
        if x.ndim == 0:
            return (np.zeros((0, int(bool(x))), np.int64),)
        return (np.asarray(np.nonzero(x), np.int64).reshape(x.ndim, -1),)


class Compress(Op):
    """The slices of ``input`` along ``axis`` where ``condition`` (1-d bool) is true; without
    ``axis``, the selected elements of the flattened input (ONNX Compress).  ``condition`` may
    be shorter than the axis (the rest is dropped).  The gradient goes back to the selected
    places, zeros elsewhere."""

    type = "compress"
    inputs = ("input", "condition")
    attrs = {"axis": Attr("int", None, doc="axis to select along (default: flatten first)")}
    no_grad_inputs = frozenset({"condition"})

    def infer(self, x, condition):
        if condition.ndim != 1:
            raise ShapeError(f"compress: condition must be 1-d, got "
                             f"{format_shape(condition.shape)}")
        if self.axis is None:
            return (Spec((None,), x.dtype),)
        axis = normalize_axis(self.axis, x.ndim)
        return (Spec(x.shape[:axis] + (None,) + x.shape[axis + 1:], x.dtype),)

    def forward(self, ctx, x, condition):
        cond = np.asarray(condition).reshape(-1).astype(bool)
        source = x.reshape(-1) if self.axis is None else x
        axis = 0 if self.axis is None else self.axis % x.ndim
        if cond.size > source.shape[axis]:
            raise ShapeError(f"compress: condition has {cond.size} entries for an axis of "
                             f"size {source.shape[axis]}")
        picked = np.flatnonzero(cond)
        ctx.save(x.shape, x.dtype, axis, picked)
        return (np.take(source, picked, axis=axis),)

    def backward(self, ctx, gy):
        shape, dtype, axis, picked = ctx.saved
        if not ctx.needs_input_grad[0]:
            return None, None
        gx = np.zeros((int(np.prod(shape, dtype=np.int64)),) if self.axis is None else shape,
                      dtype)
        index = [slice(None)] * gx.ndim
        index[axis] = picked
        gx[tuple(index)] = gy
        return gx.reshape(shape), None


class Unique(Op):
    """The distinct elements (or slices along ``axis``) of ``x`` (ONNX Unique), with four
    outputs: ``Y`` the unique values, ``indices`` where each first occurs, ``inverse_indices``
    which unique value each element (slice) of ``x`` is, and ``counts``.  ``sorted`` orders
    ``Y`` ascending (slices lexicographically); otherwise in order of first occurrence.
    Forward-only: the outputs are selections and counts."""

    type = "unique"
    outputs = ("Y", "indices", "inverse_indices", "counts")
    attrs = {"sorted": Attr("bool", True, doc="sort the unique values ascending"),
             "axis": Attr("int", None, doc="unique slices along this axis (default: "
                                           "elements of the flattened input)")}
    differentiable = False

    def infer(self, x):
        if self.axis is None:
            y = Spec((None,), x.dtype)
            inverse = (None if None in x.shape else int(np.prod(x.shape, dtype=np.int64)),)
        else:
            axis = normalize_axis(self.axis, x.ndim)
            y = Spec(x.shape[:axis] + (None,) + x.shape[axis + 1:], x.dtype)
            inverse = (x.shape[axis],)
        return (y, Spec((None,), np.int64), Spec(inverse, np.int64), Spec((None,), np.int64))

    def forward(self, ctx, x):
        axis = None if self.axis is None else normalize_axis(self.axis, x.ndim)
        source = x.reshape(-1) if axis is None else x
        y, first, inverse, counts = np.unique(source, return_index=True, return_inverse=True,
                                              return_counts=True,
                                              axis=None if axis is None else axis)
        inverse = inverse.reshape(-1)
        if not self.sorted:                 # order of first occurrence
            order = np.argsort(first, kind="stable")
            rank = np.empty_like(order)
            rank[order] = np.arange(order.size)
            y = np.take(y, order, axis=0 if axis is None else axis)
            first, counts, inverse = first[order], counts[order], rank[inverse]
        return (y, first.astype(np.int64), inverse.astype(np.int64), counts.astype(np.int64))


# -- sequences, caches, crops ------------------------------------------------------------------

class ReverseSequence(Op):
    """Reverses the first ``sequence_lens[b]`` steps along ``time_axis`` of each batch entry
    ``b`` (along ``batch_axis``); later steps stay (ONNX ReverseSequence).  The permutation is
    its own inverse, so the gradient is the output gradient reversed the same way."""

    type = "reverse_sequence"
    inputs = ("input", "sequence_lens")
    attrs = {"batch_axis": Attr("int", 1, choices=(0, 1), doc="the batch axis"),
             "time_axis": Attr("int", 0, choices=(0, 1), doc="the time axis")}
    no_grad_inputs = frozenset({"sequence_lens"})

    def check(self):
        if self.batch_axis == self.time_axis:
            raise AttrError("reverse_sequence: batch_axis and time_axis must differ",
                            attr="time_axis")

    def infer(self, x, lens):
        _require_int(lens, self.type, "sequence_lens")
        if x.ndim < 2 or lens.ndim != 1:
            raise ShapeError(f"reverse_sequence: needs an input of rank >= 2 and 1-d "
                             f"sequence_lens, got {format_shape(x.shape)} and "
                             f"{format_shape(lens.shape)}")
        return (Spec(x.shape, x.dtype),)

    def _order(self, shape, lens):
        steps, batch = shape[self.time_axis], shape[self.batch_axis]
        lens = np.asarray(lens).reshape(-1).astype(np.int64)
        if lens.size != batch or (lens.size and (lens.min() < 0 or lens.max() > steps)):
            raise ShapeError(f"reverse_sequence: sequence_lens {lens.tolist()} must give one "
                             f"length in [0, {steps}] per batch entry ({batch})")
        t = np.arange(steps)[:, None]
        order = np.where(t < lens[None, :], lens[None, :] - 1 - t, t)      # (time, batch)
        if self.time_axis == 1:
            order = order.T
        return np.broadcast_to(order.reshape(order.shape + (1,) * (len(shape) - 2)), shape)

    def forward(self, ctx, x, lens):
        order = self._order(x.shape, lens)
        ctx.save(order)
        return (np.take_along_axis(x, order, axis=self.time_axis),)

    def backward(self, ctx, gy):
        (order,) = ctx.saved
        if not ctx.needs_input_grad[0]:
            return None, None
        return np.take_along_axis(gy, order, axis=self.time_axis), None


class TensorScatter(Op):
    """Writes ``update`` into a copy of a cache along ``axis``, at ``write_indices[b]``
    onwards for batch entry ``b`` (ONNX TensorScatter, for key/value caches); ``mode``
    ``circular`` wraps around the cache length.  Gradients: the cache gets the output gradient
    where nothing was written, the update the gradient at its places."""

    type = "tensor_scatter"
    inputs = ("past_cache", "update", "write_indices?")
    attrs = {"axis": Attr("int", -2, doc="the sequence axis (not the batch axis 0)"),
             "mode": Attr("str", "linear", choices=("linear", "circular"),
                          doc="circular: positions wrap around the cache length")}
    no_grad_inputs = frozenset({"write_indices"})

    def infer(self, cache, update, write_indices):
        _require_int(write_indices, self.type, "write_indices")
        axis = normalize_axis(self.axis, cache.ndim)
        if axis == 0 or update.ndim != cache.ndim:
            raise ShapeError(f"tensor_scatter: axis {self.axis} must not be the batch axis, "
                             f"and update {format_shape(update.shape)} needs the cache's rank "
                             f"({format_shape(cache.shape)})")
        return (Spec(cache.shape, cache.dtype),)

    def _where(self, cache, update, write_indices):
        axis = self.axis % cache.ndim
        length, steps = cache.shape[axis], update.shape[axis]
        same = all(c == u for i, (c, u) in enumerate(zip(cache.shape, update.shape))
                   if i != axis)
        if axis == 0 or not same or steps > length:
            raise ShapeError(f"tensor_scatter: update {update.shape} does not fit cache "
                             f"{cache.shape} along axis {axis}")
        batch = cache.shape[0]
        start = np.zeros(batch, np.int64) if write_indices is None else \
            np.asarray(write_indices).reshape(-1).astype(np.int64)
        if start.size != batch:
            raise ShapeError(f"tensor_scatter: write_indices has {start.size} entries for a "
                             f"batch of {batch}")
        pos = start[:, None] + np.arange(steps)
        if self.mode == "circular":
            pos %= length
        elif pos.size and (pos.min() < 0 or pos.max() >= length):
            raise ShapeError(f"tensor_scatter: writing {steps} steps at {start.tolist()} "
                             f"runs past the cache length {length} (mode linear)")
        return axis, (np.arange(batch)[:, None], pos)

    def forward(self, ctx, cache, update, write_indices):
        axis, where = self._where(cache, update, write_indices)
        out = cache.copy()
        np.moveaxis(out, axis, 1)[where] = np.moveaxis(update, axis, 1)
        ctx.save(axis, where)
        return (out,)

    def backward(self, ctx, gy):
        axis, where = ctx.saved
        need_cache, need_update = ctx.needs_input_grad[:2]
        gc = gu = None
        if need_cache:
            gc = gy.copy()
            np.moveaxis(gc, axis, 1)[where] = 0
        if need_update:
            gu = np.ascontiguousarray(np.moveaxis(np.moveaxis(gy, axis, 1)[where], 1, axis))
        return gc, gu, None


class CenterCropPad(Op):
    """Crops or zero-pads ``input`` to ``shape`` on ``axes``, keeping it centred (ONNX
    CenterCropPad): an odd difference puts the extra element at the end (crop: one more
    dropped at the end; pad: one more zero at the end).  The gradient is the output gradient
    cropped and padded back."""

    type = "center_crop_pad"
    inputs = ("input", "shape?")
    attrs = {"axes": Attr("ints", None, doc="axes to crop or pad (default: all)"),
             "shape": Attr("ints", None, doc="target sizes, one per axis (the shape input "
                                             "wins)")}
    no_grad_inputs = frozenset({"shape"})

    def check(self):
        if self.shape is not None and any(n < 0 for n in self.shape):
            raise AttrError(f"center_crop_pad: sizes must be >= 0, got {list(self.shape)}",
                            attr="shape")

    def _axes(self, ndim: int) -> list[int]:
        axes = list(range(ndim)) if self.axes is None else \
            [normalize_axis(a, ndim) for a in self.axes]
        if len(set(axes)) != len(axes):
            raise ShapeError(f"center_crop_pad: axes {list(self.axes)} repeat an axis")
        return axes

    def infer(self, x, shape):
        _require_int(shape, self.type, "shape")
        axes = self._axes(x.ndim)
        if shape is None and self.shape is None:
            raise ShapeError("center_crop_pad needs shape, as an input or an attribute")
        out = list(x.shape)
        if shape is None:
            if len(self.shape) != len(axes):
                raise ShapeError(f"center_crop_pad: {len(self.shape)} sizes for "
                                 f"{len(axes)} axes")
            for a, n in zip(axes, self.shape):
                out[a] = n
        else:
            for a in axes:
                out[a] = None
        return (Spec(tuple(out), x.dtype),)

    def _slices(self, in_shape, shape):
        sizes = list(self.shape) if shape is None else [int(v) for v in
                                                         np.asarray(shape).reshape(-1)]
        axes = self._axes(len(in_shape))
        if len(sizes) != len(axes) or any(s < 0 for s in sizes):
            raise ShapeError(f"center_crop_pad: sizes {sizes} must be one non-negative size "
                             f"per axis {axes}")
        out_shape = list(in_shape)
        crop = [slice(None)] * len(in_shape)
        pad = [slice(None)] * len(in_shape)
        for a, size in zip(axes, sizes):
            dim = in_shape[a]
            lo = abs(dim - size) // 2
            if size < dim:
                crop[a] = slice(lo, lo + size)
            elif size > dim:
                pad[a] = slice(lo, lo + dim)
            out_shape[a] = size
        return tuple(out_shape), tuple(crop), tuple(pad)

    def forward(self, ctx, x, shape):
        out_shape, crop, pad = self._slices(x.shape, shape)
        out = np.zeros(out_shape, x.dtype)
        out[pad] = x[crop]
        ctx.save(x.shape, x.dtype, crop, pad)
        return (out,)

    def backward(self, ctx, gy):
        shape, dtype, crop, pad = ctx.saved
        if not ctx.needs_input_grad[0]:
            return None, None
        gx = np.zeros(shape, dtype)
        gx[crop] = gy[pad]
        return gx, None
