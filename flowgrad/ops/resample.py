"""Resampling ops with ONNX semantics: ``pad`` (constant, reflect, edge, wrap) and ``resize``.

Both are separable: along each axis an output cell reads fixed input cells with fixed weights.
``resize`` therefore builds, per resized axis, a small dense interpolation matrix ``M`` of
shape (out, in) — one-hot rows for nearest, two taps for linear, four for cubic — and applies it
with a matrix product; the backward is the product with ``M.T``, which is exactly the scatter-add of
the gradient to the taps and lets BLAS do it.  ``pad``'s backward crops (constant) or
scatter-adds the mirrored/replicated border cells back (reflect, edge, wrap) along each axis.

ONNX passes pads, scales and sizes as *inputs* from opset 11 on; so do these ops (optional
ports, no gradient), overriding the attributes of the same name.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from ..errors import AttrError
from ..op import Attr, Op, ShapeError, Spec, format_shape
from ._recipes import KeepsRecipes


def _ints(value) -> tuple[int, ...]:
    return tuple(int(v) for v in np.asarray(value).reshape(-1))


@lru_cache(maxsize=256)
def _border_source(mode: str, n: int, begin: int, end: int) -> np.ndarray:
    """The input cell each output cell of an axis of ``n`` cells padded by ``begin``/``end``
    reads in ``reflect``, ``edge`` or ``wrap`` mode (``np.pad``'s rules, which are ONNX's):
    gathering by it is the pad, scatter-adding by it the backward.  Cached: a model pads the
    same axes on every call, and ``np.take`` with a ready index costs a twentieth of
    ``np.pad``'s Python-level set-up (4 against 80 µs on a 512-sample audio frame)."""
    cells = np.arange(-begin, n + end)
    if mode == "edge":
        source = np.clip(cells, 0, n - 1)
    elif mode == "wrap":
        source = cells % n
    else:                                       # reflect about the first and last cells
        period = 2 * (n - 1)
        source = np.abs(cells) % period if period else np.zeros_like(cells)
        source = np.where(source >= n, period - source, source)
    source.flags.writeable = False
    return source


def _signature(value) -> tuple | None:
    """An integer input's values as a key (None when absent)."""
    if value is None:
        return None
    value = np.asarray(value)
    return value.dtype.char, value.tobytes()


class Pad(KeepsRecipes, Op):
    """ONNX Pad: ``pads`` (all begins, then all ends) per axis, or per axis of ``axes``.

    Negative pads crop.  ``value`` fills in constant mode.
    """

    type = "pad"
    inputs = ("x", "pads?", "value?", "axes?")
    no_grad_inputs = frozenset({"pads", "value", "axes"})
    attrs = {"mode": Attr("str", "constant", choices=("constant", "reflect", "edge", "wrap")),
             "pads": Attr("ints", (), doc="all begins then all ends (counting the batch axis)"),
             "value": Attr("float", 0.0, doc="fill value in constant mode"),
             "axes": Attr("ints", (), doc="the axes 'pads' refers to (default: all)")}

    def check(self):
        if len(self.pads) % 2:
            raise AttrError("pad: 'pads' holds all begins then all ends, so it needs an even "
                            f"number of entries; got {list(self.pads)}", attr="pads")

    def _resolve(self, ndim, pads, axes) -> list[tuple[int, int]]:
        pads = _ints(pads) if pads is not None else tuple(self.pads)
        axes = _ints(axes) if axes is not None else tuple(self.axes)
        axes = tuple(a % ndim for a in axes) if axes else tuple(range(ndim))
        if len(pads) != 2 * len(axes):
            raise ShapeError(f"pad: {len(pads)} pads given for {len(axes)} axes (need "
                             f"{2 * len(axes)}: all begins, then all ends)")
        out = [(0, 0)] * ndim
        for i, a in enumerate(axes):
            out[a] = (pads[i], pads[i + len(axes)])
        return out

    def infer(self, x, pads=None, value=None, axes=None):
        if pads is not None or axes is not None:
            known = set(range(x.ndim)) - ({a % x.ndim for a in self.axes} if self.axes
                                          else set(range(x.ndim)))
            return (Spec(tuple(d if i in known else None for i, d in enumerate(x.shape)),
                         x.dtype),)
        widths = self._resolve(x.ndim, None, None)
        shape = tuple(None if n is None else n + b + e for n, (b, e) in zip(x.shape, widths))
        if any(n is not None and n < 0 for n in shape):
            raise ShapeError(f"pad: pads {list(self.pads)} crop more than the input "
                             f"{format_shape(x.shape)} holds")
        return (Spec(shape, x.dtype),)

    def forward(self, ctx, x, pads=None, value=None, axes=None):
        key = (x.shape, _signature(pads), _signature(axes))
        recipe = self._recipes.get(key)
        if recipe is None:
            recipe = self._keep(key, self._recipe(x.shape, pads, axes))
        crop, grow, inner_shape, out_shape, interior, gathers = recipe
        inner = x[crop]
        if self.mode == "constant":
            fill = self.value if value is None else float(np.asarray(value).reshape(-1)[0])
            # one fill and one copy; np.pad does the same work behind ~80 µs of set-up
            y = np.full(out_shape, fill, x.dtype)
            y[interior] = inner
        else:
            y = inner
            for axis, source in gathers:
                y = np.take(y, source, axis=axis)
            y = np.array(y, copy=y is inner)   # a copy of its own, as np.pad's
        ctx.save(x.shape, crop, grow, inner_shape)
        return (y,)

    def _recipe(self, shape, pads, axes) -> tuple:
        """What a pad of an input of ``shape`` by ``pads`` over ``axes`` (the inputs, or None
        for the attributes) does, whatever the values: the crop of negative pads, the growth
        per axis, the shapes, the interior the input fills (constant mode), and the gathers
        ``(axis, source cells)`` of the other modes (:func:`_border_source`).  Kept per
        signature (:mod:`._recipes`): worked out at each call it cost 15 of a 20 µs pad of
        an audio frame."""
        widths = self._resolve(len(shape), pads, axes)
        crop = tuple(slice(max(0, -b), n - max(0, -e)) for n, (b, e) in zip(shape, widths))
        grow = [(max(0, b), max(0, e)) for b, e in widths]
        inner = tuple(len(range(n)[c]) for n, c in zip(shape, crop))
        if self.mode == "reflect" and any(
                max(b, e) >= n for n, (b, e) in zip(inner, grow) if b or e):
            raise ShapeError(f"pad: reflect padding must be smaller than the axis it pads "
                             f"(input {format_shape(shape)}, pads {widths})")
        out = tuple(n + b + e for n, (b, e) in zip(inner, grow))
        interior = tuple(slice(b, b + n) for n, (b, _) in zip(inner, grow))
        gathers = () if self.mode == "constant" else tuple(
            (axis, _border_source(self.mode, n, b, e))
            for axis, (n, (b, e)) in enumerate(zip(inner, grow)) if b or e)
        return crop, grow, inner, out, interior, gathers

    def backward(self, ctx, gy):
        shape, crop, grow, inner_shape = ctx.saved
        g = gy
        for axis, (b, e) in enumerate(grow):
            if not b and not e:
                continue
            n = inner_shape[axis]
            if self.mode == "constant":
                g = g[(slice(None),) * axis + (slice(b, b + n),)]
                continue
            source = _border_source(self.mode, n, b, e)      # the input cell of each output
            moved = np.moveaxis(g, axis, 0)
            acc = np.zeros((n,) + moved.shape[1:], dtype=gy.dtype)
            np.add.at(acc, source, moved)
            g = np.moveaxis(acc, 0, axis)
        if g.shape != tuple(shape):
            full = np.zeros(shape, dtype=gy.dtype)
            full[crop] = g
            g = full
        return (g,) + (None,) * (len(ctx.needs_input_grad) - 1)


_COORDINATE_MODES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric",
                     "tf_half_pixel_for_nearest", "half_pixel_symmetric", "tf_crop_and_resize")
_NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


class Resize(Op):
    """ONNX Resize (nearest, linear, cubic) over any axes; scales or sizes as attrs or inputs.

    ``scales`` / ``sizes`` (and ``roi``: all starts, then all ends) list every axis, as in
    ONNX, or the axes in ``axes`` (opset 18), or only the spatial axes (N and C are then kept).
    Linear on two axes is bilinear.  ``keep_aspect_ratio_policy`` (with ``sizes``) scales the
    resized axes by one common factor, the smallest (``not_larger``) or largest
    (``not_smaller``) of their size ratios.  ``antialias`` widens the linear / cubic kernel by
    ``1 / scale`` when downsampling, so every input cell contributes.  ``tf_crop_and_resize``
    samples the region ``roi`` (fractions of each axis) and gives ``extrapolation_value`` to
    output cells whose source falls outside the input.

    The coordinate rules follow ONNX's reference implementation, whose arithmetic the
    conformance data comes from: ``align_corners`` and ``tf_crop_and_resize`` divide by the
    *fractional* output length ``scale * in`` (onnxruntime uses the rounded output size; the two
    differ only when ``scale * in`` is not a whole number).
    """

    type = "resize"
    inputs = ("x", "roi?", "scales?", "sizes?")
    no_grad_inputs = frozenset({"roi", "scales", "sizes"})
    attrs = {"mode": Attr("str", "nearest", choices=("nearest", "linear", "cubic")),
             "coordinate_transformation_mode": Attr("str", "half_pixel",
                                                    choices=_COORDINATE_MODES),
             "nearest_mode": Attr("str", "round_prefer_floor", choices=_NEAREST_MODES),
             "cubic_coeff_a": Attr("float", -0.75),
             "exclude_outside": Attr("int", 0, choices=(0, 1)),
             "antialias": Attr("int", 0, choices=(0, 1),
                               doc="1: low-pass the linear/cubic kernel when downsampling"),
             "keep_aspect_ratio_policy": Attr("str", "stretch",
                                              choices=("stretch", "not_larger", "not_smaller")),
             "extrapolation_value": Attr("float", 0.0,
                                         doc="tf_crop_and_resize: value outside the input"),
             "axes": Attr("ints", (), doc="the axes scales / sizes / roi refer to"),
             "roi": Attr("floats", (), doc="tf_crop_and_resize region: starts, then ends"),
             "scales": Attr("floats", (), doc="output / input size per axis"),
             "sizes": Attr("ints", (), doc="output size per axis")}

    def check(self):
        if self.scales and self.sizes:
            raise AttrError("resize: give 'scales' or 'sizes', not both", attr="sizes")
        if any(s <= 0 for s in self.scales):
            raise AttrError("resize: scales must be positive", attr="scales")
        if self.antialias and self.mode == "nearest":
            raise AttrError("resize: antialias needs mode linear or cubic", attr="antialias")
        if len(set(self.axes)) != len(self.axes):
            raise AttrError(f"resize: 'axes' repeats an axis: {list(self.axes)}", attr="axes")
        self._kept_steps: dict[tuple, tuple] = {}      # see forward

    def _axes(self, ndim) -> tuple[int, ...]:
        for a in self.axes:
            if not -ndim <= a < ndim:
                raise ShapeError(f"resize: axis {a} is out of range for a {ndim}-d input")
        return tuple(a % ndim for a in self.axes) if self.axes else tuple(range(ndim))

    def _full(self, values, ndim, fill, what):
        """``values`` for every axis: given per axis of ``axes``, of all axes, or spatial."""
        values = tuple(values)
        if self.axes:
            axes = self._axes(ndim)
            if len(values) != len(axes):
                raise ShapeError(f"resize: '{what}' has {len(values)} entries for the "
                                 f"{len(axes)} axes {list(self.axes)}")
            out = list(fill)
            for a, v in zip(axes, values):
                out[a] = v
            return tuple(out)
        if len(values) == ndim - 2:
            values = tuple(fill[:2]) + values
        if len(values) != ndim:
            raise ShapeError(f"resize: '{what}' has {len(values)} entries for a {ndim}-d input "
                             f"(give all {ndim} axes, or the {ndim - 2} spatial ones)")
        return values

    def _plan(self, shape, scales, sizes):
        """Per axis: ``(out_size, scale)``."""
        ndim = len(shape)
        given = _ints(sizes) if sizes is not None and np.size(sizes) else self.sizes
        # the axes keep_aspect_ratio_policy looks at: those given (all, listed or spatial)
        policy_axes = self._axes(ndim) if self.axes or len(given) != ndim - 2 \
            else tuple(range(2, ndim))
        if sizes is not None and np.size(sizes):
            sizes = self._full(_ints(sizes), ndim, shape, "sizes")
        elif scales is not None and np.size(scales):
            scales = self._full(np.asarray(scales, np.float64).reshape(-1), ndim, (1.0,) * ndim,
                                "scales")
            sizes = None
        elif self.sizes:
            sizes = self._full(self.sizes, ndim, shape, "sizes")
        elif self.scales:
            scales, sizes = self._full(self.scales, ndim, (1.0,) * ndim, "scales"), None
        else:
            raise ShapeError("resize needs 'scales' or 'sizes' (as attributes or inputs)")
        if sizes is None:
            return [(None if n is None else int(math.floor(n * s + 1e-9)), float(s))
                    for n, s in zip(shape, scales)]
        if self.keep_aspect_ratio_policy != "stretch":
            axes = policy_axes
            if any(shape[a] is None for a in axes):
                return [(None, None) if a in axes else (n, 1.0) for a, n in enumerate(shape)]
            ratios = [sizes[a] / shape[a] for a in axes]
            scale = min(ratios) if self.keep_aspect_ratio_policy == "not_larger" else max(ratios)
            return [(int(scale * n + 0.5), scale) if a in axes else (n, 1.0)
                    for a, n in enumerate(shape)]
        return [(n if s is None else s, 1.0 if s is None or not n else s / n)
                for n, s in zip(shape, sizes)]

    def _roi(self, ndim, roi) -> tuple[float, ...] | None:
        """The crop region (starts, then ends, every axis) for tf_crop_and_resize."""
        if self.coordinate_transformation_mode != "tf_crop_and_resize":
            return None
        values = tuple(np.asarray(roi, np.float64).reshape(-1)) if roi is not None \
            and np.size(roi) else tuple(self.roi)
        if not values:
            raise ShapeError("resize: tf_crop_and_resize needs 'roi' (as attribute or input)")
        half = len(values) // 2
        if len(values) % 2:
            raise ShapeError(f"resize: 'roi' holds starts then ends, so it needs an even "
                             f"number of entries; got {len(values)}")
        starts = self._full(values[:half], ndim, (0.0,) * ndim, "roi")
        ends = self._full(values[half:], ndim, (1.0,) * ndim, "roi")
        return starts + ends

    def infer(self, x, roi=None, scales=None, sizes=None):
        if scales is not None or sizes is not None:
            return (Spec((x.shape[0],) + (None,) * (x.ndim - 1), x.dtype),)
        return (Spec(tuple(out for out, _ in self._plan(x.shape, None, None)), x.dtype),)

    def _source(self, out: int, n: int, scale: float, crop) -> np.ndarray:
        """Input coordinate of each output cell (ONNX coordinate_transformation_mode).

        Computed in float32, as onnxruntime does, so that nearest rounding agrees with it on
        coordinates that land (up to rounding) exactly on a cell boundary.  Where the output
        length ``scale * in`` is really fractional, align_corners and tf_crop_and_resize divide
        by it in float64, as ONNX's reference does.
        """
        o = np.arange(out, dtype=np.float32)
        mode = self.coordinate_transformation_mode
        length = scale * n                                # fractional output length
        if abs(length - out) < 1e-4 * max(out, 1):        # a float32 scale's rounding
            length = out
        if mode == "align_corners" and length == out:
            return o * np.float32((n - 1) / (out - 1)) if out > 1 else np.zeros(out, np.float32)
        if mode in ("align_corners", "tf_crop_and_resize"):
            o = o.astype(np.float64)
            start, stop = (0.0, 1.0) if crop is None else crop
            if length == 1:
                src = np.full(out, (stop - start) * (n - 1) / 2
                              if mode == "tf_crop_and_resize" else 0.0)
            else:
                src = o * (stop - start) * (n - 1) / (length - 1)
            return src + start * (n - 1)
        scale = np.float32(scale)
        if mode == "half_pixel":
            return (o + 0.5) / scale - 0.5
        if mode == "pytorch_half_pixel":
            return (o + 0.5) / scale - 0.5 if out > 1 else np.zeros(out, np.float32)
        if mode == "asymmetric":
            return o / scale
        if mode == "tf_half_pixel_for_nearest":
            return (o + 0.5) / scale
        adjustment = np.float32(out) / (np.float32(n) * scale)      # half_pixel_symmetric
        return np.float32(n / 2) * (1 - adjustment) + (o + 0.5) / scale - 0.5

    def _weights(self, src: np.ndarray, scale: float):
        """``(first_tap, weights)``: output cell ``i`` reads cells ``first_tap[i] + k`` with
        ``weights[i, k]`` — the taps around ``src`` (the left one preferred at an exact cell,
        as ONNX's reference does), widened by ``1 / scale`` under antialias."""
        base = np.ceil(src) - 1                            # ratio in (0, 1]
        ratio = src - base
        s = min(scale, 1.0) if self.antialias else 1.0
        reach = 1 if self.mode == "linear" else 2          # kernel support, in input cells
        start = int(math.floor(-reach / s)) + 1
        taps = np.arange(start, 1 - start + 1, dtype=np.float64)
        d = np.abs((taps[None, :] - ratio[:, None]) * s)
        if self.mode == "linear":
            w = np.clip(1 - d, 0, 1)
        else:
            a = self.cubic_coeff_a
            w = np.where(d <= 1, ((a + 2) * d - (a + 3)) * d * d + 1,
                         np.where(d < 2, ((a * d - 5 * a) * d + 8 * a) * d - 4 * a, 0.0))
        if self.antialias:
            w = w / w.sum(axis=1, keepdims=True)
        return base + start, w

    def _matrix(self, out: int, n: int, scale: float, dtype, crop=None):
        """The (out, n) interpolation matrix of one axis, and the rows that extrapolate."""
        src = self._source(out, n, scale, crop).astype(np.float64)
        rows = np.arange(out)
        M = np.zeros((out, n))
        outside = None
        if crop is not None:
            outside = (src < 0) | (src > n - 1)
            if not outside.any():
                outside = None
        if self.mode == "nearest":
            rounded = {"round_prefer_floor": np.ceil(src - 0.5),
                       "round_prefer_ceil": np.floor(src + 0.5),
                       "floor": np.floor(src), "ceil": np.ceil(src)}[self.nearest_mode]
            M[rows, np.clip(rounded, 0, n - 1).astype(np.int64)] = 1.0
        else:
            first, weights = self._weights(src, scale)
            index = first[:, None] + np.arange(weights.shape[1])
            if self.exclude_outside:
                weights = np.where((index >= 0) & (index <= n - 1), weights, 0.0)
                total = weights.sum(axis=1, keepdims=True)
                weights = weights / np.where(total == 0, 1.0, total)
            np.add.at(M, (np.repeat(rows, weights.shape[1]),
                          np.clip(index, 0, n - 1).astype(np.int64).reshape(-1)),
                      weights.reshape(-1))
        if outside is not None:
            M[outside] = 0.0
        return M.astype(dtype), outside

    @staticmethod
    def _apply(x: np.ndarray, M: np.ndarray, axis: int) -> np.ndarray:
        if axis == x.ndim - 1:
            return x @ M.T
        return np.moveaxis(np.moveaxis(x, axis, -1) @ M.T, -1, axis)

    def forward(self, ctx, x, roi=None, scales=None, sizes=None):
        # the same shapes and scales come back at every run: their per-axis steps are kept
        key = tuple(None if v is None else tuple(np.asarray(v).reshape(-1).tolist())
                    for v in (roi, scales, sizes))
        y = x
        steps = self._kept_steps.get((x.shape, x.dtype) + key)
        if steps is None:
            if len(self._kept_steps) >= 32:         # a model resizing to ever new shapes
                self._kept_steps.clear()
            steps = self._kept_steps[(x.shape, x.dtype) + key] = self._axis_steps(
                x.shape, x.dtype, *key)
        for axis, M, index, outside in steps:
            y = np.take(y, index, axis=axis) if index is not None else self._apply(y, M, axis)
            if outside is not None:
                where = outside.reshape((-1,) + (1,) * (x.ndim - 1 - axis))
                y = np.where(where, x.dtype.type(self.extrapolation_value), y)
        ctx.save([(axis, M) for axis, M, _, _ in steps])
        return (np.ascontiguousarray(y),)

    def _axis_steps(self, shape, dtype, roi, scales, sizes) -> tuple:
        """Per resized axis: ``(axis, M, index, outside)`` — the interpolation matrix, the
        input cell each output cell copies (nearest without extrapolation: a gather, not a
        product) or None, and the rows that extrapolate.  ``forward`` keeps them per shape and
        scales (``roi``/``scales``/``sizes`` arrive as tuples, hashable)."""
        as_array = (lambda v: None if v is None else np.asarray(v))
        crop = self._roi(len(shape), as_array(roi))
        steps = []
        for axis, ((out, scale), n) in enumerate(zip(self._plan(shape, as_array(scales),
                                                                as_array(sizes)), shape)):
            bounds = None if crop is None else (crop[axis], crop[axis + len(shape)])
            if out == n and scale == 1.0 and bounds in (None, (0.0, 1.0)):
                continue
            M, outside = self._matrix(out, n, scale, dtype, bounds)
            index = M.argmax(axis=1) if self.mode == "nearest" and outside is None else None
            steps.append((axis, M, index, outside))
        return tuple(steps)

    def backward(self, ctx, gy):
        (steps,) = ctx.saved
        g = gy
        for axis, M in reversed(steps):
            g = self._apply(g, M.T, axis)
        return (g,) + (None,) * (len(ctx.needs_input_grad) - 1)
