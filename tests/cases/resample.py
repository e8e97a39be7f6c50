"""Gradient cases for pad (every mode, attribute and input forms) and resize."""
import numpy as np

from flowgrad.testing import Case

_PADS = [0, 1, 2, -1, 0, 0, 1, 2]          # begins then ends; a negative pad crops

CASES = {
    "pad": [Case([(2, 3, 4, 5)], {"mode": m, "pads": _PADS}, id=m)
            for m in ("constant", "reflect", "edge", "wrap")]
    + [Case([(2, 3, 4, 5), np.array([0, 0, 2, 1, 0, 0, 0, 2], np.int64), np.array(0.5), None],
            {"mode": "reflect"}, id="pads-input-reflect"),
       Case([(2, 3, 4, 5), np.array([1, 2, 2, 1], np.int64), None,
             np.array([2, 3], np.int64)], {"mode": "edge"}, id="pads-axes-inputs"),
       Case([(2, 3, 4)], {"pads": [1, 1], "axes": [-1], "value": 2.0}, id="axes-attr")],
    "resize": [
        Case([(2, 2, 3, 4)], {"mode": "linear", "scales": [2.0, 1.5]}, id="bilinear-half-pixel"),
        Case([(2, 2, 3, 4)], {"mode": "linear", "sizes": [5, 7],
                              "coordinate_transformation_mode": "align_corners"},
             id="bilinear-align-corners"),
        Case([(2, 2, 5, 4)], {"mode": "linear", "scales": [0.6, 0.5],
                              "coordinate_transformation_mode": "pytorch_half_pixel"},
             id="bilinear-down"),
        Case([(2, 2, 3, 4)], {"mode": "nearest", "scales": [2.0, 2.0],
                              "coordinate_transformation_mode": "asymmetric",
                              "nearest_mode": "floor"}, id="nearest-upsample"),
        Case([(2, 2, 5, 6)], {"mode": "nearest", "sizes": [3, 4]}, id="nearest-down"),
        Case([(2, 2, 3, 4)], {"mode": "cubic", "scales": [1.5, 2.0], "exclude_outside": 1},
             id="cubic"),
        Case([(2, 3, 5), None, np.array([1.0, 1.0, 1.6], np.float32), None],
             {"mode": "linear"}, id="scales-input-1d"),
        Case([(2, 3, 5), None, None, np.array([2, 3, 8], np.int64)],
             {"mode": "linear", "coordinate_transformation_mode": "asymmetric"},
             id="sizes-input"),
        Case([(2, 2, 6, 7)], {"mode": "linear", "scales": [0.6, 0.5], "antialias": 1},
             id="linear-antialias"),
        Case([(1, 2, 7, 6)], {"mode": "cubic", "sizes": [3, 4], "antialias": 1,
                              "exclude_outside": 1}, id="cubic-antialias"),
        Case([(2, 2, 5, 6)], {"mode": "linear", "sizes": [3, 4], "axes": [3, 2],
                              "coordinate_transformation_mode": "tf_crop_and_resize",
                              "roi": [0.6, 0.4, 1.3, 0.9], "extrapolation_value": 2.0},
             id="crop-and-resize-axes"),
        Case([(2, 2, 4, 6), np.array([0.0, 0.0, -0.2, 0.1, 1.0, 1.0, 0.9, 0.8], np.float32),
              None, np.array([2, 2, 5, 5], np.int64)],
             {"mode": "cubic", "coordinate_transformation_mode": "tf_crop_and_resize"},
             id="crop-and-resize-roi-input"),
        Case([(2, 2, 4, 6)], {"mode": "linear", "sizes": [6, 6], "axes": [2, 3],
                              "keep_aspect_ratio_policy": "not_larger"}, id="not-larger"),
        Case([(2, 2, 4, 6)], {"mode": "nearest", "sizes": [6, 6],
                              "keep_aspect_ratio_policy": "not_smaller"}, id="not-smaller"),
    ],
}
