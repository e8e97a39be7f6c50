"""Detection and spatial-transformer ops: non-maximum suppression, RoI pooling, grid sampling.

Semantics follow the ONNX operators and onnxruntime (which the tests compare against):

* ``non_max_suppression`` — forward-only, data-dependent output length;
* ``roi_align`` and ``max_roi_pool`` — pooled features of regions of a feature map, with a
  gradient w.r.t. the feature map (the regions and their batch indices take none);
* ``grid_sample`` — samples an image at normalised coordinates, with gradients w.r.t. the
  image and the grid (spatial transformers learn through the grid);
* ``affine_grid`` — the sampling grid of an affine map, with a gradient w.r.t. the map.

Everything is vectorised numpy: NMS loops once per *kept* box (each step suppresses all
overlapping candidates at once); RoI ops loop once per region, with the sampling weights of a
region built per axis (a region's average-pooled output is ``Ay @ X @ Ax.T``, two small
matrix products); grid sampling gathers each interpolation tap for all points at once.
"""
from __future__ import annotations

import itertools

import numpy as np

from ..errors import AttrError
from ..op import Attr, Op, ShapeError, Spec, format_shape


def _require(spec: Spec | None, kinds: str, op: str, port: str) -> None:
    if spec is not None and spec.dtype.kind not in kinds:
        want = "integers" if kinds == "iu" else "floats"
        raise ShapeError(f"{op}: input '{port}' must hold {want}, got {spec.dtype}")


def _scalar(value, default, kind, op: str, port: str):
    """A scalar (or one-element) input as a Python number, or ``default`` when absent."""
    if value is None:
        return default
    value = np.asarray(value)
    if value.size == 0:
        return default
    if value.size != 1:
        raise ShapeError(f"{op}: input '{port}' must hold one value, got shape {value.shape}")
    return kind(value.reshape(-1)[0])


# -- non-maximum suppression -------------------------------------------------------------------

def _box_edges(boxes: np.ndarray, center_point_box: int):
    """(x_min, x_max, y_min, y_max) of boxes (..., 4), computed as onnxruntime does."""
    if center_point_box:
        half_w, half_h = boxes[..., 2] / 2, boxes[..., 3] / 2
        return (boxes[..., 0] - half_w, boxes[..., 0] + half_w,
                boxes[..., 1] - half_h, boxes[..., 1] + half_h)
    y1, x1, y2, x2 = (boxes[..., i] for i in range(4))
    return np.minimum(x1, x2), np.maximum(x1, x2), np.minimum(y1, y2), np.maximum(y1, y2)


def _suppressed(top, others, threshold) -> np.ndarray:
    """Which boxes ``others`` overlap the boxes ``top`` by an IoU above ``threshold``, by
    broadcasting (x_min, x_max, y_min, y_max, area) tuples, with onnxruntime's arithmetic and
    rule: no overlap, an empty box or an empty union never suppresses.  The IoU is computed
    only where the boxes overlap (usually few pairs)."""
    x0, x1, y0, y1, area_top = np.broadcast_arrays(*top, others[0])[:5]
    u0, u1, v0, v1, area = others
    ix0, ix1 = np.maximum(x0, u0), np.minimum(x1, u1)
    iy0, iy1 = np.maximum(y0, v0), np.minimum(y1, v1)
    out = (ix1 > ix0) & (iy1 > iy0)
    hit = np.nonzero(out)
    inter = (ix1[hit] - ix0[hit]) * (iy1[hit] - iy0[hit])
    a, b = area_top[hit], area[hit]
    union = a + b - inter
    valid = (inter > 0) & (a > 0) & (b > 0) & (union > 0)
    out[hit] = valid & (inter / np.where(valid, union, 1) > threshold)
    return out


class NonMaxSuppression(Op):
    """Greedy non-maximum suppression per batch entry and class (ONNX NonMaxSuppression).

    ``boxes`` (B, N, 4) are ``[y1, x1, y2, x2]`` corners (either diagonal) or, with
    ``center_point_box: 1``, ``[x_center, y_center, width, height]``; ``scores`` are
    (B, classes, N).  Per class, boxes scoring above ``score_threshold`` (all, without it) are
    taken best first (ties: lower index first) and each kept box removes every remaining one
    whose IoU with it exceeds ``iou_threshold``, until ``max_output_boxes_per_class`` are kept
    (0 or absent: none).  Output: int64 rows ``[batch, class, box]``, shape (selected, 3), by
    batch, then class, then selection order.  Forward-only.
    """

    type = "non_max_suppression"
    inputs = ("boxes", "scores", "max_output_boxes_per_class?", "iou_threshold?",
              "score_threshold?")
    outputs = ("selected_indices",)
    attrs = {"center_point_box": Attr("int", 0, choices=(0, 1),
                                      doc="0: [y1, x1, y2, x2] corners; 1: [xc, yc, w, h]")}
    differentiable = False

    def infer(self, boxes, scores, max_out, iou, score):
        if boxes.ndim != 3 or boxes.shape[2] not in (4, None) or scores.ndim != 3:
            raise ShapeError(f"non_max_suppression: boxes must be (batch, boxes, 4) and scores "
                             f"(batch, classes, boxes), got {format_shape(boxes.shape)} and "
                             f"{format_shape(scores.shape)}")
        _require(max_out, "iu", self.type, "max_output_boxes_per_class")
        return (Spec((None, 3), np.int64),)

    def forward(self, ctx, boxes, scores, max_out, iou, score):
        if boxes.ndim != 3 or boxes.shape[2] != 4 or scores.ndim != 3 or \
                scores.shape[0] != boxes.shape[0] or scores.shape[2] != boxes.shape[1]:
            raise ShapeError(f"non_max_suppression: boxes {boxes.shape} and scores "
                             f"{scores.shape} must be (B, N, 4) and (B, classes, N)")
        limit = max(_scalar(max_out, 0, int, self.type, "max_output_boxes_per_class"), 0)
        threshold = boxes.dtype.type(_scalar(iou, 0.0, float, self.type, "iou_threshold"))
        if not 0 <= threshold <= 1:
            raise ShapeError(f"non_max_suppression: iou_threshold must be in [0, 1], got "
                             f"{float(threshold)}")
        floor = _scalar(score, None, float, self.type, "score_threshold")
        return (_greedy_nms(boxes, scores, self.center_point_box, limit, threshold, floor),)


def _greedy_nms(boxes, scores, center_point_box: int, limit: int, threshold, floor):
    """Greedy NMS of every (batch, class) line at once; returns rows [batch, class, box].

    Each line's candidates are sorted best first (stable: ties keep the lower index) and
    padded to one width.  A step keeps, in every line still running, the first candidate
    still alive, and kills the line's candidates it overlaps; so the loop runs once per kept
    box of the longest line (at most ``limit`` times), each step vectorised over lines and
    candidates, and lines that are done drop out.  The same boxes are kept as by the usual
    one-line loop (a candidate survives iff no better kept box overlaps it).
    """
    batches, classes, count = scores.shape
    if not limit or not count:
        return np.zeros((0, 3), np.int64)
    lines = scores.reshape(batches * classes, count)
    alive = np.ones(lines.shape, bool) if floor is None else lines > lines.dtype.type(floor)
    width = int(alive.sum(1).max(initial=0))
    if width == 0:
        return np.zeros((0, 3), np.int64)
    # per line: candidates best first, dead ones (under the score floor) last
    key = np.where(alive, -lines.astype(np.float64), np.inf)
    order = np.argsort(key, axis=1, kind="stable")[:, :width]
    alive = np.take_along_axis(alive, order, 1)
    batch_of = np.repeat(np.arange(batches), classes)
    x0, x1, y0, y1 = _box_edges(boxes, center_point_box)
    edges = np.stack([x0, x1, y0, y1, (x1 - x0) * (y1 - y0)])     # (5, B, N)
    cand = edges[:, batch_of[:, None], order]                    # (5, lines, width)
    ids = np.arange(len(lines))                 # the line each row of the arrays holds
    kept = np.zeros(len(lines), np.int64)
    found: list[tuple[np.ndarray, np.ndarray, int]] = []
    step = 0
    while ids.size:
        running = alive.any(1) & (kept < limit)
        if not running.all():                   # drop finished lines
            ids, kept, order, alive, cand = (ids[running], kept[running], order[running],
                                             alive[running], cand[:, running])
            if not ids.size:
                break
        rows = np.arange(ids.size)
        first = np.argmax(alive, axis=1)
        found.append((ids, order[rows, first], step))
        kept += 1
        alive[rows, first] = False
        top = cand[:, rows, first][..., None]                       # (5, lines, 1)
        alive &= ~_suppressed(tuple(top), tuple(cand), threshold)
        step += 1
        width = int(alive.sum(1).max(initial=0))
        if width < 0.75 * alive.shape[1]:       # drop dead candidates: keep arrays narrow
            pack = np.argsort(~alive, axis=1, kind="stable")[:, :width]
            order = np.take_along_axis(order, pack, 1)
            alive = np.take_along_axis(alive, pack, 1)
            cand = np.take_along_axis(cand, pack[None], 2)
    line = np.concatenate([f[0] for f in found])
    box = np.concatenate([f[1] for f in found])
    when = np.concatenate([np.full(f[0].size, f[2]) for f in found])
    sort = np.lexsort((when, line))
    line, box = line[sort], box[sort]
    return np.stack([line // classes, line % classes, box], 1).astype(np.int64)


# -- RoI pooling -------------------------------------------------------------------------------

def _axis_taps(start, bin_size, pooled: int, grid: int, size: int, dtype):
    """Bilinear taps of the sample points along one axis of a region (onnxruntime's rule).

    Sample ``i`` of bin ``p`` sits at ``start + p*bin + (i + 0.5) * bin / grid``.  Returns the
    low and high pixel index and their weights, each (pooled, grid); a sample outside
    [-1, size] has zero weights (the other axis's weights multiply these, so a sample out on
    either axis contributes nothing).
    """
    c = (start + np.arange(pooled, dtype=dtype)[:, None] * bin_size
         + (np.arange(grid, dtype=dtype)[None, :] + dtype(0.5)) * bin_size / grid)
    valid = ~((c < -1.0) | (c > size))
    c = np.maximum(c, 0)
    low = c.astype(np.int64)
    at_end = low >= size - 1
    low = np.where(at_end, size - 1, low)
    high = np.where(at_end, size - 1, low + 1)
    c = np.where(at_end, low.astype(dtype), c)
    frac = (c - low).astype(dtype)
    return low, high, ((1 - frac) * valid).astype(dtype), (frac * valid).astype(dtype)


def _pooling_matrix(low, high, w_low, w_high, size: int, dtype):
    """The (pooled, size) matrix summing the taps of each bin (over its samples)."""
    pooled = low.shape[0]
    a = np.zeros((pooled, size), dtype)
    rows = np.broadcast_to(np.arange(pooled)[:, None], low.shape)
    np.add.at(a, (rows, low), w_low)
    np.add.at(a, (rows, high), w_high)
    return a


class RoiAlign(Op):
    """Average- or max-pooled bilinear samples of regions of a feature map (ONNX RoiAlign).

    ``X`` (N, C, H, W); ``rois`` (R, 4) ``[x1, y1, x2, y2]`` in input coordinates (times
    ``spatial_scale``); ``batch_indices`` (R,) pick each region's image.  Each of the
    ``output_height`` x ``output_width`` bins averages (or takes the max of) a grid of
    ``sampling_ratio`` x ``sampling_ratio`` bilinear samples (0: ceil(bin size) per axis, per
    region).  ``coordinate_transformation_mode`` ``half_pixel`` shifts coordinates by -0.5
    (opset 16); ``output_half_pixel`` does not and makes regions at least 1 x 1 (opset 10).
    ``max`` follows onnxruntime: the largest *weighted* tap (weight x pixel) over the samples.

    Gradient w.r.t. ``X`` only: for ``avg`` each region is ``Ay @ X[b] @ Ax.T / count`` (per
    axis, the bins' summed tap weights), so the gradient is ``Ay.T @ g @ Ax / count``; for
    ``max`` each output's gradient goes to its winning tap, times the tap's weight.  The
    regions and batch indices take none.
    """

    type = "roi_align"
    inputs = ("X", "rois", "batch_indices")
    attrs = {"mode": Attr("str", "avg", choices=("avg", "max"), doc="pooling of the samples"),
             "output_height": Attr("int", 1, doc="bins per region, vertically"),
             "output_width": Attr("int", 1, doc="bins per region, horizontally"),
             "sampling_ratio": Attr("int", 0, doc="samples per bin and axis (0: adaptive)"),
             "spatial_scale": Attr("float", 1.0, doc="input coordinates -> feature map"),
             "coordinate_transformation_mode": Attr(
                 "str", "half_pixel", choices=("half_pixel", "output_half_pixel"),
                 doc="half_pixel: shift by -0.5 pixel (opset 16); output_half_pixel: no shift")}
    no_grad_inputs = frozenset({"rois", "batch_indices"})

    def check(self):
        if self.output_height < 1 or self.output_width < 1 or self.sampling_ratio < 0:
            raise AttrError(f"roi_align: output_height and output_width must be >= 1 and "
                            f"sampling_ratio >= 0, got {self.output_height}, "
                            f"{self.output_width}, {self.sampling_ratio}", attr="output_height")

    def infer(self, x, rois, batch_indices):
        _require(batch_indices, "iu", self.type, "batch_indices")
        if x.ndim != 4 or rois.ndim != 2 or rois.shape[1] not in (4, None) \
                or batch_indices.ndim != 1:
            raise ShapeError(f"roi_align: X must be (N, C, H, W), rois (R, 4) and "
                             f"batch_indices (R,), got {format_shape(x.shape)}, "
                             f"{format_shape(rois.shape)}, {format_shape(batch_indices.shape)}")
        return (Spec((rois.shape[0], x.shape[1], self.output_height, self.output_width),
                     x.dtype),)

    def _regions(self, x, rois, batch_indices):
        """Per region: batch index, both axes' taps and the sample count."""
        n, _, height, width = x.shape
        rois = np.asarray(rois, x.dtype)
        batch_indices = np.asarray(batch_indices).reshape(-1).astype(np.int64)
        if rois.ndim != 2 or rois.shape[1] != 4 or batch_indices.size != rois.shape[0]:
            raise ShapeError(f"roi_align: rois {rois.shape} must be (R, 4) with one batch "
                             f"index each ({batch_indices.size} given)")
        if batch_indices.size and (batch_indices.min() < 0 or batch_indices.max() >= n):
            raise ShapeError(f"roi_align: batch_indices must be in [0, {n}), got "
                             f"{batch_indices.tolist()[:8]}")
        dtype = x.dtype.type
        half = self.coordinate_transformation_mode == "half_pixel"
        ph, pw = self.output_height, self.output_width
        for r in range(rois.shape[0]):
            x1, y1, x2, y2 = (rois[r] * dtype(self.spatial_scale) - dtype(0.5 if half else 0))
            roi_w, roi_h = x2 - x1, y2 - y1
            if not half:
                roi_w, roi_h = max(roi_w, dtype(1)), max(roi_h, dtype(1))
            bin_h, bin_w = roi_h / dtype(ph), roi_w / dtype(pw)
            gh = self.sampling_ratio or int(np.ceil(roi_h / ph))
            gw = self.sampling_ratio or int(np.ceil(roi_w / pw))
            gh, gw = max(gh, 0), max(gw, 0)
            ys = _axis_taps(y1, bin_h, ph, gh, height, dtype)
            xs = _axis_taps(x1, bin_w, pw, gw, width, dtype)
            yield r, int(batch_indices[r]), ys, xs, max(gh * gw, 1)

    def forward(self, ctx, x, rois, batch_indices):
        out = np.zeros((np.shape(rois)[0], x.shape[1], self.output_height, self.output_width),
                       x.dtype)
        saved = []
        for r, b, ys, xs, count in self._regions(x, rois, batch_indices):
            if ys[0].size == 0 or xs[0].size == 0:
                saved.append(None)
                continue
            if self.mode == "avg":
                ay = _pooling_matrix(*ys, x.shape[2], x.dtype)
                ax = _pooling_matrix(*xs, x.shape[3], x.dtype)
                out[r] = ay @ x[b] @ ax.T / x.dtype.type(count)
                saved.append((b, ay, ax, count))
            else:
                out[r], where = self._max(x[b], ys, xs)
                saved.append((b, where))
        ctx.save(x.shape, x.dtype, saved)
        return (out,)

    @staticmethod
    def _max(xb, ys, xs):
        """The largest weighted tap per bin, and (channel, row, column, weight) of each."""
        y_idx, x_idx = np.stack(ys[:2], -1), np.stack(xs[:2], -1)      # (p, grid, 2)
        y_w, x_w = np.stack(ys[2:], -1), np.stack(xs[2:], -1)
        taps = xb[:, y_idx[:, None, :, None, :, None], x_idx[None, :, None, :, None, :]]
        weights = y_w[:, None, :, None, :, None] * x_w[None, :, None, :, None, :]
        weighted = (taps * weights).reshape(taps.shape[:3] + (-1,))     # (C, ph, pw, taps)
        best = np.argmax(weighted, axis=-1)
        value = np.take_along_axis(weighted, best[..., None], -1)[..., 0]
        gy, gx, cy, cx = np.unravel_index(best, (y_idx.shape[1], x_idx.shape[1], 2, 2))
        ph = np.arange(y_idx.shape[0])[None, :, None]
        pw = np.arange(x_idx.shape[0])[None, None, :]
        rows, cols = y_idx[ph, gy, cy], x_idx[pw, gx, cx]
        w = y_w[ph, gy, cy] * x_w[pw, gx, cx]
        channel = np.broadcast_to(np.arange(xb.shape[0])[:, None, None], best.shape)
        return value, (channel, rows, cols, w)

    def backward(self, ctx, gy):
        shape, dtype, saved = ctx.saved
        if not ctx.needs_input_grad[0]:
            return None, None, None
        gx = np.zeros(shape, dtype)
        for r, item in enumerate(saved):
            if item is None:
                continue
            if self.mode == "avg":
                b, ay, ax, count = item
                gx[b] += ay.T @ gy[r] @ ax / dtype.type(count)
            else:
                b, (channel, rows, cols, w) = item
                np.add.at(gx[b], (channel, rows, cols), gy[r] * w)
        return gx, None, None


class MaxRoiPool(Op):
    """Max pooling over regions of a feature map (ONNX MaxRoiPool, Fast R-CNN's RoI pooling).

    ``rois`` (R, 5) are ``[batch_index, x1, y1, x2, y2]``; corners are scaled by
    ``spatial_scale`` and rounded (halves away from zero), the region (at least 1 x 1, ends
    included) is cut into ``pooled_shape`` bins (floor / ceil of the fractional edges), and
    each bin's maximum is taken (0 for a bin outside the map), as onnxruntime does.  The
    gradient goes to each bin's maximum (ties: first in row-major order); the regions take
    none.
    """

    type = "max_roi_pool"
    inputs = ("X", "rois")
    attrs = {"pooled_shape": Attr("ints", doc="bins per region: [height, width]"),
             "spatial_scale": Attr("float", 1.0, doc="input coordinates -> feature map")}
    no_grad_inputs = frozenset({"rois"})

    def check(self):
        if len(self.pooled_shape) != 2 or min(self.pooled_shape) < 1:
            raise AttrError(f"max_roi_pool: pooled_shape must be two sizes >= 1, got "
                            f"{list(self.pooled_shape)}", attr="pooled_shape")

    def infer(self, x, rois):
        if x.ndim != 4 or rois.ndim != 2 or rois.shape[1] not in (5, None):
            raise ShapeError(f"max_roi_pool: X must be (N, C, H, W) and rois (R, 5), got "
                             f"{format_shape(x.shape)} and {format_shape(rois.shape)}")
        return (Spec((rois.shape[0], x.shape[1]) + tuple(self.pooled_shape), x.dtype),)

    @staticmethod
    def _round(v) -> int:
        """C's round (halves away from zero), as onnxruntime rounds the scaled corners."""
        return int(np.floor(v + 0.5)) if v >= 0 else int(np.ceil(v - 0.5))

    @staticmethod
    def _bins(start: int, end: int, pooled: int, size: int):
        """[start, end) of each bin along one axis, with onnxruntime's float32 bin size."""
        step = np.float32(max(end - start + 1, 1)) / np.float32(pooled)
        return [(min(max(int(np.floor(np.float32(p) * step)) + start, 0), size),
                 min(max(int(np.ceil(np.float32(p + 1) * step)) + start, 0), size))
                for p in range(pooled)]

    def forward(self, ctx, x, rois):
        rois = np.asarray(rois)
        if rois.ndim != 2 or rois.shape[1] != 5:
            raise ShapeError(f"max_roi_pool: rois must be (R, 5), got {rois.shape}")
        n, channels, height, width = x.shape
        ph, pw = self.pooled_shape
        out = np.zeros((rois.shape[0], channels, ph, pw), x.dtype)
        where = []
        for r, roi in enumerate(rois):
            b = int(roi[0])
            if not 0 <= b < n:
                raise ShapeError(f"max_roi_pool: region {r} has batch index {b}, outside "
                                 f"[0, {n})")
            x1, y1, x2, y2 = (self._round(np.float32(v) * np.float32(self.spatial_scale))
                              for v in roi[1:])
            rows, cols = self._bins(y1, y2, ph, height), self._bins(x1, x2, pw, width)
            arg = np.full((channels, ph, pw), -1, np.int64)
            for i, (h0, h1) in enumerate(rows):
                if h1 <= h0:
                    continue
                for j, (w0, w1) in enumerate(cols):
                    if w1 <= w0:
                        continue
                    window = x[b, :, h0:h1, w0:w1].reshape(channels, -1)
                    k = np.argmax(window, axis=1)
                    out[r, :, i, j] = window[np.arange(channels), k]
                    arg[:, i, j] = (h0 + k // (w1 - w0)) * width + w0 + k % (w1 - w0)
            where.append((b, arg))
        ctx.save(x.shape, x.dtype, where)
        return (out,)

    def backward(self, ctx, gy):
        shape, dtype, where = ctx.saved
        if not ctx.needs_input_grad[0]:
            return None, None
        gx = np.zeros(shape, dtype)
        flat = gx.reshape(shape[0], shape[1], -1)
        channel = np.arange(shape[1])[:, None, None]
        for r, (b, arg) in enumerate(where):
            hit = arg >= 0
            np.add.at(flat[b], (np.broadcast_to(channel, arg.shape)[hit], arg[hit]), gy[r][hit])
        return gx, None


# -- grid sampling -----------------------------------------------------------------------------

_CUBIC_A = -0.75


def _cubic(t):
    """Keys' cubic convolution weights (a = -0.75) of the taps at -1, 0, 1, 2 and their
    derivatives w.r.t. the fractional position ``t`` in [0, 1)."""
    a = _CUBIC_A
    u, v, w = t + 1, 1 - t, 2 - t
    weights = [((a * u - 5 * a) * u + 8 * a) * u - 4 * a,
               ((a + 2) * t - (a + 3)) * t * t + 1,
               ((a + 2) * v - (a + 3)) * v * v + 1,
               ((a * w - 5 * a) * w + 8 * a) * w - 4 * a]
    slopes = [(3 * a * u - 10 * a) * u + 8 * a,
              (3 * (a + 2) * t - 2 * (a + 3)) * t,
              -((3 * (a + 2) * v - 2 * (a + 3)) * v),
              -((3 * a * w - 10 * a) * w + 8 * a)]
    return weights, slopes


def _reflect(x, lo: float, hi: float):
    """Reflect ``x`` at the borders until it lies in [lo, hi], and d(result)/dx (±1)."""
    span = hi - lo
    if span <= 0:
        return np.full_like(x, lo), np.zeros_like(x)
    below, above = x < lo, x > hi
    dist = np.where(below, lo - x, np.where(above, x - hi, 0))
    turns = np.floor(dist / span)
    rest = dist - turns * span
    even = turns % 2 == 0
    out = np.where(below, np.where(even, lo + rest, hi - rest),
                   np.where(above, np.where(even, hi - rest, lo + rest), x))
    sign = np.where(below | above, np.where(even, -1, 1), 1)
    return out.astype(x.dtype, copy=False), sign


class GridSample(Op):
    """Samples ``X`` (N, C, *spatial) at the normalised points of ``grid`` (N, *out, D), last
    axis ``(x, y[, z])`` in [-1, 1] (ONNX GridSample; 4-d and 5-d inputs).

    ``mode``: ``linear`` (bi/trilinear), ``nearest`` (halves to even) or ``cubic`` (bicubic,
    4-d only; ``bilinear`` / ``bicubic`` are accepted as opset 16's names).  ``align_corners``:
    -1 and 1 are the centres of the corner pixels (else their outer edges).  ``padding_mode``
    for points outside: ``zeros``, ``border`` (clamp to the edge) or ``reflection`` (mirror at
    the border).  Every detail follows onnxruntime and PyTorch, and ONNX's reference but for
    ``cubic`` with ``border`` (see :meth:`_axis`): coordinates are first clamped or reflected
    into range, then each interpolation tap outside the image is padded again.

    Gradients: w.r.t. ``X``, each output's gradient is scattered to its taps with their
    weights; w.r.t. ``grid``, the derivative of the interpolation weights (linear: ±1 per
    axis, cubic: the kernel's slope) times the image values, times the chain of the coordinate
    mapping (``border`` clamping gives 0 outside, ``reflection`` ±1).  ``nearest`` has a zero
    gradient w.r.t. the grid.
    """

    type = "grid_sample"
    inputs = ("X", "grid")
    attrs = {"mode": Attr("str", "linear", choices=("linear", "nearest", "cubic", "bilinear",
                                                    "bicubic"),
                          doc="interpolation: linear, nearest or cubic"),
             "padding_mode": Attr("str", "zeros", choices=("zeros", "border", "reflection"),
                                  doc="values outside the image"),
             "align_corners": Attr("bool", False,
                                   doc="-1 and 1 are corner pixel centres (else edges)")}

    @property
    def _mode(self) -> str:
        return {"bilinear": "linear", "bicubic": "cubic"}.get(self.mode, self.mode)

    def infer(self, x, grid):
        dims = x.ndim - 2
        if dims < 1 or grid.ndim != x.ndim or grid.shape[-1] not in (dims, None):
            raise ShapeError(f"grid_sample: X (N, C, *spatial) and grid (N, *out, "
                             f"{max(dims, 1)}) do not match: {format_shape(x.shape)} and "
                             f"{format_shape(grid.shape)}")
        if self._mode == "cubic" and dims != 2:
            raise ShapeError("grid_sample: cubic mode needs a 4-d input (N, C, H, W)")
        return (Spec((x.shape[0], x.shape[1]) + grid.shape[1:-1], x.dtype),)

    def _pixel(self, coord, size: int):
        """A grid value as a pixel coordinate (rounded for ``nearest``), d coord / d grid, and
        whether it lies outside the image's border."""
        dtype = coord.dtype.type
        scale = dtype((size - 1) / 2 if self.align_corners else size / 2)
        x = (coord + 1) * scale - (0 if self.align_corners else dtype(0.5))
        if self._mode == "nearest":
            x = np.rint(x)
        lo, hi = self._border(size)
        return x, np.full(x.shape, scale, dtype), (x < lo) | (x > hi)

    def _border(self, size: int) -> tuple[float, float]:
        return (0.0, size - 1.0) if self.align_corners else (-0.5, size - 0.5)

    def _axis(self, x, chain, outside, size: int):
        """Taps along one spatial axis: [(index, weight, d weight / d coord, valid)], and
        d coord / d grid value.

        ``border`` clamps a coordinate outside the border before interpolating, except in
        ``cubic`` mode, where only the taps are clamped: onnxruntime and PyTorch agree on
        that (ONNX's reference clamps the coordinate for cubic too, and differs from both on
        points near or past the border; no node test has cubic with border padding).
        """
        lo, hi = self._border(size)
        mode = self._mode
        if self.padding_mode == "border" and mode != "cubic":
            clamped = outside & ((x < 0) | (x > size - 1))
            x = np.where(outside, np.clip(x, 0, size - 1), x).astype(x.dtype, copy=False)
            chain = np.where(clamped, 0, chain)
        elif self.padding_mode == "reflection":
            x, sign = _reflect(x, lo, hi)
            chain = chain * sign
        if mode == "nearest":
            index = x.astype(np.int64)
            taps = [(index, np.ones_like(x), np.zeros_like(x))]
        else:
            base = np.floor(x)
            t = (x - base).astype(x.dtype, copy=False)
            base = base.astype(np.int64)
            if mode == "linear":
                taps = [(base, 1 - t, -np.ones_like(t)), (base + 1, t, np.ones_like(t))]
            else:
                weights, slopes = _cubic(t)
                taps = [(base + k - 1, w, s) for k, (w, s) in enumerate(zip(weights, slopes))]
        out = []
        for index, w, dw in taps:
            index, valid = self._pad_index(index, size, lo, hi)
            out.append((index, w, dw, valid))
        return out, chain

    def _pad_index(self, index, size: int, lo: float, hi: float):
        """A tap's pixel index after padding, and whether it holds a value (zeros mode)."""
        if self.padding_mode == "zeros":
            valid = (index >= 0) & (index < size)
            return np.clip(index, 0, size - 1), valid
        if self.padding_mode == "border":
            return np.clip(index, 0, size - 1), None
        reflected, _ = _reflect(index.astype(np.float64), lo, hi)
        return np.clip(np.trunc(reflected).astype(np.int64), 0, size - 1), None

    def _taps(self, x, grid):
        spatial = x.shape[2:]
        dims = len(spatial)
        if grid.ndim != x.ndim or grid.shape[-1] != dims or grid.shape[0] != x.shape[0]:
            raise ShapeError(f"grid_sample: grid {grid.shape} does not match X {x.shape}")
        if self._mode == "cubic" and dims != 2:
            raise ShapeError("grid_sample: cubic mode needs a 4-d input (N, C, H, W)")
        grid = grid.reshape(grid.shape[0], -1, dims)
        # spatial axis d is read from grid component dims-1-d (the grid is (x, y, z))
        return [self._axis(*self._pixel(grid[..., dims - 1 - d], spatial[d]), spatial[d])
                for d in range(dims)]

    @staticmethod
    def _combinations(axes):
        """Every combination of one tap per spatial axis (2^D for linear, 16 for cubic, 1
        for nearest), each a tuple of per-axis (index, weight, slope, valid)."""
        return itertools.product(*[taps for taps, _ in axes])

    def forward(self, ctx, x, grid):
        axes = self._taps(x, grid)
        n, channels = x.shape[:2]
        spatial = x.shape[2:]
        strides = np.cumprod((1,) + spatial[::-1])[:-1][::-1]
        flat_x = x.reshape(n, channels, -1)
        points = axes[0][0][0][0].shape[1]
        out = np.zeros((n, channels, points), x.dtype)
        for combo in self._combinations(axes):
            flat, weight = self._combo(combo, strides)
            values = np.take_along_axis(flat_x, flat[:, None, :], axis=2)
            out += weight[:, None, :].astype(x.dtype, copy=False) * values
        ctx.save(x, grid.dtype, axes, strides)
        return (out.reshape((n, channels) + grid.shape[1:-1]),)

    @staticmethod
    def _combo(combo, strides):
        """A combination's flat pixel index (over the spatial axes) and its weight: the
        product of the per-axis weights, zero where a tap is padding (``zeros``)."""
        flat = sum(index * int(s) for (index, _, _, _), s in zip(combo, strides))
        weight = 1
        for index, w, _, valid in combo:
            weight = weight * (w if valid is None else w * valid)
        return flat, weight

    def backward(self, ctx, gy):
        x, grid_dtype, axes, strides = ctx.saved
        need_x, need_grid = ctx.needs_input_grad
        n, channels = x.shape[:2]
        dims = len(axes)
        g = gy.reshape(n, channels, -1)
        flat_x = x.reshape(n, channels, -1)
        gx = np.zeros_like(flat_x) if need_x else None
        d_coord = [np.zeros(g.shape[::2], x.dtype) for _ in range(dims)] if need_grid else None
        batch = np.arange(n)[:, None, None]
        channel = np.arange(channels)[None, :, None]
        for combo in self._combinations(axes):
            flat, weight = self._combo(combo, strides)
            if need_x:
                np.add.at(gx, (batch, channel, flat[:, None, :]), g * weight[:, None, :])
            if need_grid and self._mode != "nearest":
                # <g, value> per point, times d weight / d coord of each axis
                gv = np.einsum("ncp,ncp->np", g, np.take_along_axis(flat_x, flat[:, None, :],
                                                                   axis=2))
                for d in range(dims):
                    slope = 1
                    for e, (_, w, dw, valid) in enumerate(combo):
                        factor = dw if e == d else w
                        slope = slope * (factor if valid is None else factor * valid)
                    d_coord[d] += gv * slope
        ggrid = None
        if need_grid:
            ggrid = np.stack([d_coord[dims - 1 - k] * axes[dims - 1 - k][1]
                              for k in range(dims)], -1).astype(grid_dtype, copy=False)
            ggrid = ggrid.reshape(gy.shape[:1] + gy.shape[2:] + (dims,))
        return (gx.reshape(x.shape) if need_x else None), ggrid


class AffineGrid(Op):
    """The sampling grid of a batch of affine maps (ONNX AffineGrid), for ``grid_sample``.

    ``theta`` (N, 2, 3) or (N, 3, 4); ``size`` is the image size (N, C, H, W) or
    (N, C, D, H, W), from the input or the attribute.  The output (N, H, W, 2) or
    (N, D, H, W, 3) is ``theta @ [x, y, (z,) 1]`` at every pixel, ``x`` running over the
    normalised pixel centres in [-1, 1] (``align_corners``: corner centres at ±1; a size-1
    axis then sits at -1, as in ONNX's reference).  Linear in ``theta``: its gradient is the
    output gradient times the base grid.
    """

    type = "affine_grid"
    inputs = ("theta", "size?")
    attrs = {"align_corners": Attr("bool", False, doc="-1 and 1 are corner pixel centres"),
             "size": Attr("ints", None, doc="(N, C, H, W) or (N, C, D, H, W) (the input "
                                            "wins)")}
    no_grad_inputs = frozenset({"size"})

    def check(self):
        if self.size is not None and (len(self.size) not in (4, 5) or min(self.size) < 1):
            raise AttrError(f"affine_grid: size must be (N, C, H, W) or (N, C, D, H, W) with "
                            f"sizes >= 1, got {list(self.size)}", attr="size")

    def infer(self, theta, size):
        _require(size, "iu", self.type, "size")
        if theta.ndim != 3 or theta.shape[1:] not in ((2, 3), (3, 4)):
            raise ShapeError(f"affine_grid: theta must be (N, 2, 3) or (N, 3, 4), got "
                             f"{format_shape(theta.shape)}")
        dims = theta.shape[1]
        if size is None:
            if self.size is None:
                raise ShapeError("affine_grid needs size, as an input or an attribute")
            spatial = tuple(self.size[2:])
            if len(spatial) != dims:
                raise ShapeError(f"affine_grid: size {list(self.size)} does not match a "
                                 f"{dims}-d theta")
        else:
            spatial = (None,) * dims
        return (Spec((theta.shape[0],) + spatial + (dims,), theta.dtype),)

    def _base(self, size, theta):
        spatial = list(self.size[2:]) if size is None else \
            [int(v) for v in np.asarray(size).reshape(-1)[2:]]
        dims = theta.shape[1]
        if len(spatial) != dims or min(spatial, default=0) < 1:
            raise ShapeError(f"affine_grid: size gives spatial dims {spatial} for a {dims}-d "
                             f"theta {theta.shape}")
        lines = []
        for s in spatial[::-1]:                          # x first: the last spatial axis
            if self.align_corners:
                lines.append(np.linspace(-1, 1, s) if s > 1 else np.full(1, -1.0))
            else:
                lines.append((2 * np.arange(s) + 1) / s - 1)
        mesh = np.meshgrid(*lines[::-1], indexing="ij")  # over the spatial axes in order
        coords = [mesh[dims - 1 - k] for k in range(dims)]   # (x, y, z)
        return np.stack(coords + [np.ones(spatial)], -1).astype(theta.dtype)

    def forward(self, ctx, theta, size):
        if theta.ndim != 3 or theta.shape[1:] not in ((2, 3), (3, 4)):
            raise ShapeError(f"affine_grid: theta must be (N, 2, 3) or (N, 3, 4), got "
                             f"{theta.shape}")
        base = self._base(size, theta)
        ctx.save(base)
        return (np.einsum("nij,...j->n...i", theta, base),)

    def backward(self, ctx, gy):
        (base,) = ctx.saved
        if not ctx.needs_input_grad[0]:
            return None, None
        dims = base.shape[-1] - 1
        return np.einsum("npi,pj->nij", gy.reshape(gy.shape[0], -1, dims),
                         base.reshape(-1, dims + 1)), None
