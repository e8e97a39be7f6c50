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
    ],
}
