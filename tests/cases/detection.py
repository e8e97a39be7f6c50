"""Cases for flowgrad/ops/detection.py: non_max_suppression (forward-only: shapes and dtypes),
roi_align and max_roi_pool (gradient w.r.t. the feature map), grid_sample (w.r.t. image and
grid, every mode and padding, 4-d and 5-d), affine_grid (w.r.t. theta).

Grid points are drawn uniformly in [-1.3, 1.3] (some outside the image, so the paddings are
exercised); finite differences need points away from the kinks (pixel centres for linear
sampling, the reflection borders), which random points are with probability ~1 at eps 1e-6.
"""
import numpy as np

from flowgrad.testing import Case

I64 = np.int64


def _grid(shape, low=-1.3, high=1.3):
    return lambda rng: rng.uniform(low, high, size=shape)


def _boxes(rng):
    corners = rng.uniform(0, 10, size=(2, 6, 2, 2))
    return np.concatenate([corners.min(2), corners.max(2)], -1)      # [y1, x1, y2, x2]


_ROIS = np.array([[0.5, 1.0, 5.5, 4.0], [2.0, 0.3, 3.1, 6.2], [-1.0, 2.0, 8.0, 9.5]])
_BATCH = np.array([1, 0, 1], I64)

CASES = {
    "non_max_suppression": [
        Case([_boxes, lambda rng: rng.random((2, 3, 6)), np.array([3], I64),
              np.array([0.3]), np.array([0.2])], id="thresholds"),
        Case([_boxes, lambda rng: rng.random((2, 1, 6)), None, None, None],
             {"center_point_box": 1}, id="defaults-select-none")],
    "roi_align": [
        Case([(2, 3, 7, 8), _ROIS, _BATCH], {"output_height": 2, "output_width": 3},
             id="avg-adaptive"),
        Case([(2, 3, 7, 8), _ROIS * 2, _BATCH], {"output_height": 3, "output_width": 2,
                                                 "sampling_ratio": 2, "spatial_scale": 0.5,
                                                 "coordinate_transformation_mode":
                                                     "output_half_pixel"},
             id="avg-ratio2-output-half-pixel"),
        Case([(2, 3, 7, 8), _ROIS, _BATCH], {"mode": "max", "output_height": 2,
                                             "output_width": 2, "sampling_ratio": 2},
             id="max")],
    "max_roi_pool": [
        Case([(2, 3, 8, 9), np.array([[1, 0.6, 1.2, 6.4, 5.0], [0, 2, 2, 2, 7],
                                      [1, -3, -3, 20, 4]])], {"pooled_shape": [2, 3]},
             id="regions"),
        Case([(1, 2, 6, 6), np.array([[0, 2, 2, 9, 11]])], {"pooled_shape": [3, 3],
                                                           "spatial_scale": 0.5},
             id="scaled")],
    "grid_sample": [
        Case([(2, 3, 5, 6), _grid((2, 4, 3, 2))], id="linear-zeros"),
        Case([(2, 2, 5, 6), _grid((2, 3, 4, 2))], {"padding_mode": "border",
                                                   "align_corners": True},
             id="linear-border-align"),
        Case([(1, 2, 5, 4), _grid((1, 3, 3, 2), -2.5, 2.5)], {"padding_mode": "reflection"},
             id="linear-reflection"),
        Case([(1, 2, 5, 4), _grid((1, 3, 3, 2), -2.5, 2.5)], {"padding_mode": "reflection",
                                                              "align_corners": True},
             id="linear-reflection-align"),
        Case([(2, 2, 5, 6), _grid((2, 3, 3, 2))], {"mode": "nearest"}, id="nearest"),
        Case([(1, 2, 6, 5), _grid((1, 3, 4, 2))], {"mode": "cubic"}, id="cubic-zeros"),
        Case([(1, 2, 6, 5), _grid((1, 3, 4, 2))], {"mode": "cubic", "padding_mode": "border"},
             id="cubic-border"),
        Case([(1, 1, 5, 6), _grid((1, 3, 3, 2), -2.0, 2.0)],
             {"mode": "cubic", "padding_mode": "reflection", "align_corners": True},
             id="cubic-reflection-align"),
        Case([(1, 2, 3, 4, 5), _grid((1, 2, 3, 2, 3))], id="volumetric-linear"),
        Case([(1, 2, 3, 4, 5), _grid((1, 2, 2, 2, 3))], {"mode": "nearest",
                                                         "padding_mode": "border"},
             id="volumetric-nearest")],
    "affine_grid": [
        Case([(2, 2, 3), None], {"size": [2, 3, 4, 5]}, id="2d"),
        Case([(2, 3, 4), None], {"size": [2, 1, 2, 3, 4], "align_corners": True}, id="3d"),
        Case([(1, 2, 3), np.array([1, 1, 3, 2], I64)], {"align_corners": True},
             id="size-port")],
}
