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

import numpy as np

from ..errors import AttrError
from ..op import Attr, Op, ShapeError, Spec, format_shape


def _ints(value) -> tuple[int, ...]:
    return tuple(int(v) for v in np.asarray(value).reshape(-1))


class Pad(Op):
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
        widths = self._resolve(x.ndim, pads, axes)
        crop = tuple(slice(max(0, -b), n - max(0, -e)) for n, (b, e) in zip(x.shape, widths))
        grow = [(max(0, b), max(0, e)) for b, e in widths]
        inner = x[crop]
        if self.mode == "constant":
            fill = self.value if value is None else float(np.asarray(value).reshape(-1)[0])
            y = np.pad(inner, grow, mode="constant", constant_values=np.asarray(fill, x.dtype))
        else:
            if self.mode == "reflect" and any(
                    max(b, e) >= n for n, (b, e) in zip(inner.shape, grow) if b or e):
                raise ShapeError(f"pad: reflect padding must be smaller than the axis it pads "
                                 f"(input {format_shape(x.shape)}, pads {widths})")
            y = np.pad(inner, grow, mode=self.mode)
        ctx.save(x.shape, crop, grow, inner.shape)
        return (y,)

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
            source = np.pad(np.arange(n), (b, e), mode=self.mode)   # input cell of each output
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
                     "tf_half_pixel_for_nearest", "half_pixel_symmetric")
_NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


class Resize(Op):
    """ONNX Resize (nearest, linear, cubic) over any axes; scales or sizes as attrs or inputs.

    ``scales`` / ``sizes`` list every axis, as in ONNX, or only the spatial axes (N and C are
    then kept).  Linear on two axes is bilinear.
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
             "scales": Attr("floats", (), doc="output / input size per axis"),
             "sizes": Attr("ints", (), doc="output size per axis")}

    def check(self):
        if self.scales and self.sizes:
            raise AttrError("resize: give 'scales' or 'sizes', not both", attr="sizes")
        if any(s <= 0 for s in self.scales):
            raise AttrError("resize: scales must be positive", attr="scales")

    def _full(self, values, ndim, fill, what):
        values = tuple(values)
        if len(values) == ndim - 2:
            values = (fill, fill) + values
        if len(values) != ndim:
            raise ShapeError(f"resize: '{what}' has {len(values)} entries for a {ndim}-d input "
                             f"(give all {ndim} axes, or the {ndim - 2} spatial ones)")
        return values

    def _plan(self, shape, scales, sizes):
        """Per axis: ``(out_size, scale)``."""
        ndim = len(shape)
        if sizes is not None and np.size(sizes):
            sizes = self._full(_ints(sizes), ndim, None, "sizes")
        elif scales is not None and np.size(scales):
            scales = self._full(np.asarray(scales, np.float64).reshape(-1), ndim, 1.0, "scales")
            sizes = None
        elif self.sizes:
            sizes = self._full(self.sizes, ndim, None, "sizes")
        elif self.scales:
            scales, sizes = self._full(self.scales, ndim, 1.0, "scales"), None
        else:
            raise ShapeError("resize needs 'scales' or 'sizes' (as attributes or inputs)")
        if sizes is not None:
            return [(n if s is None else s, 1.0 if s is None or not n else s / n)
                    for n, s in zip(shape, sizes)]
        return [(None if n is None else int(math.floor(n * s + 1e-9)), float(s))
                for n, s in zip(shape, scales)]

    def infer(self, x, roi=None, scales=None, sizes=None):
        if scales is not None or sizes is not None:
            return (Spec((x.shape[0],) + (None,) * (x.ndim - 1), x.dtype),)
        return (Spec(tuple(out for out, _ in self._plan(x.shape, None, None)), x.dtype),)

    def _source(self, out: int, n: int, scale: float) -> np.ndarray:
        """Input coordinate of each output cell (ONNX coordinate_transformation_mode).

        Computed in float32, as onnxruntime does, so that nearest rounding agrees with it on
        coordinates that land (up to rounding) exactly on a cell boundary.
        """
        o = np.arange(out, dtype=np.float32)
        scale = np.float32(scale)
        mode = self.coordinate_transformation_mode
        if mode == "half_pixel":
            return (o + 0.5) / scale - 0.5
        if mode == "pytorch_half_pixel":
            return (o + 0.5) / scale - 0.5 if out > 1 else np.zeros(out, np.float32)
        if mode == "align_corners":
            return o * np.float32((n - 1) / (out - 1)) if out > 1 else np.zeros(out, np.float32)
        if mode == "asymmetric":
            return o / scale
        if mode == "tf_half_pixel_for_nearest":
            return (o + 0.5) / scale
        adjustment = np.float32(out) / (np.float32(n) * scale)      # half_pixel_symmetric
        return np.float32(n / 2) * (1 - adjustment) + (o + 0.5) / scale - 0.5

    def _matrix(self, out: int, n: int, scale: float, dtype) -> np.ndarray:
        """The (out, n) interpolation matrix of one axis."""
        src = self._source(out, n, scale).astype(np.float64)
        rows = np.arange(out)
        M = np.zeros((out, n))
        if self.mode == "nearest":
            rounded = {"round_prefer_floor": np.ceil(src - 0.5),
                       "round_prefer_ceil": np.floor(src + 0.5),
                       "floor": np.floor(src), "ceil": np.ceil(src)}[self.nearest_mode]
            M[rows, np.clip(rounded, 0, n - 1).astype(np.int64)] = 1.0
            return M.astype(dtype)
        base = np.floor(src)
        t = src - base
        if self.mode == "linear":
            offsets, weights = (0, 1), (1 - t, t)
        else:
            a = self.cubic_coeff_a
            d = [t + 1, t, 1 - t, 2 - t]                # distance to taps -1, 0, 1, 2
            weights = tuple(((a * x - 5 * a) * x + 8 * a) * x - 4 * a if i in (0, 3)
                            else ((a + 2) * x - (a + 3)) * x * x + 1 for i, x in enumerate(d))
            offsets = (-1, 0, 1, 2)
            if self.exclude_outside:
                inside = [((base + k) >= 0) & ((base + k) <= n - 1) for k in offsets]
                weights = tuple(w * m for w, m in zip(weights, inside))
                total = sum(weights)
                weights = tuple(w / total for w in weights)
        for k, w in zip(offsets, weights):
            np.add.at(M, (rows, np.clip(base + k, 0, n - 1).astype(np.int64)), w)
        return M.astype(dtype)

    @staticmethod
    def _apply(x: np.ndarray, M: np.ndarray, axis: int) -> np.ndarray:
        if axis == x.ndim - 1:
            return x @ M.T
        return np.moveaxis(np.moveaxis(x, axis, -1) @ M.T, -1, axis)

    def forward(self, ctx, x, roi=None, scales=None, sizes=None):
        steps = []
        y = x
        for axis, ((out, scale), n) in enumerate(zip(self._plan(x.shape, scales, sizes),
                                                     x.shape)):
            if out == n and scale == 1.0:
                continue
            M = self._matrix(out, n, scale, x.dtype)
            if self.mode == "nearest":
                y = np.take(y, M.argmax(axis=1), axis=axis)
            else:
                y = self._apply(y, M, axis)
            steps.append((axis, M))
        ctx.save(steps)
        return (np.ascontiguousarray(y),)

    def backward(self, ctx, gy):
        (steps,) = ctx.saved
        g = gy
        for axis, M in reversed(steps):
            g = self._apply(g, M.T, axis)
        return (g,) + (None,) * (len(ctx.needs_input_grad) - 1)
