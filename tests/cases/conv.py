"""Gradient cases for conv and conv_transpose over a grid of window attributes."""
from flowgrad.testing import Case

_CONV = [
    ((2, 3, 5, 6), (4, 3, 3, 3), {}, "plain"),
    ((2, 4, 7, 6), (6, 2, 3, 2), {"group": 2, "strides": [2, 1], "pads": [1, 0, 2, 1]},
     "groups-stride-asym-pads"),
    ((2, 3, 6, 7), (3, 1, 3, 3), {"group": 3, "dilations": [2, 1], "pads": [2, 1, 2, 1]},
     "depthwise-dilated"),
    ((1, 2, 7, 8), (3, 2, 3, 2), {"auto_pad": "SAME_UPPER", "strides": [2, 3]}, "same-upper"),
    ((1, 2, 7, 8), (3, 2, 2, 3), {"auto_pad": "SAME_LOWER", "strides": [2, 2]}, "same-lower"),
    ((1, 2, 7, 8), (3, 2, 3, 3), {"auto_pad": "VALID", "strides": [3, 2]}, "valid"),
    ((2, 3, 9), (4, 3, 3), {"strides": [2], "pads": [2, 1], "dilations": [2]}, "1d"),
    ((1, 2, 4, 3, 4), (2, 2, 2, 2, 2), {"pads": [1, 0, 1, 0, 1, 0]}, "3d"),
    ((3, 4, 5, 6), (5, 4, 1, 1), {}, "pointwise"),           # the direct W @ x path
    ((2, 3, 7), (2, 3, 1), {"dilations": [2]}, "pointwise-1d"),
    ((2, 4, 5, 6), (6, 2, 1, 1), {"group": 2}, "1x1-grouped"),  # im2col path
    ((2, 3, 5, 6), (4, 3, 1, 1), {"strides": [2, 2]}, "1x1-strided"),
]

_CONV_T = [
    ((2, 3, 3, 4), (3, 2, 3, 3), {}, "plain"),
    ((2, 4, 3, 3), (4, 1, 3, 2), {"group": 2, "strides": [2, 3], "dilations": [2, 1],
                                  "output_padding": [1, 2]}, "groups-output-padding"),
    ((1, 2, 3, 4), (2, 2, 3, 3), {"strides": [2, 2], "pads": [1, 0, 0, 1]}, "asym-pads"),
    ((1, 2, 3, 3), (2, 2, 3, 3), {"strides": [2, 2], "auto_pad": "SAME_LOWER"}, "same-lower"),
    ((1, 2, 3, 3), (2, 3, 3, 3), {"strides": [2, 2], "output_shape": [6, 7]}, "output-shape"),
    ((2, 3, 4), (3, 2, 4), {"strides": [3], "pads": [1, 2]}, "1d"),
]

CASES = {
    "conv": [Case([x, w, (w[0],)], a, id=i) for x, w, a, i in _CONV]
    + [Case([(2, 3, 5, 5), (2, 3, 3, 3), None], {"strides": [2, 2]}, id="no-bias"),
       Case([(2, 3, 4, 4), (5, 3, 1, 1), None], id="pointwise-no-bias")],
    "conv_transpose": [Case([x, w, (w[1] * a.get("group", 1),)], a, id=i) for x, w, a, i in _CONV_T]
    + [Case([(1, 2, 3, 3), (2, 2, 2, 2), None], id="no-bias"),
       # output_shape past the input's reach: negative pads become a zero margin (SAME_UPPER:
       # total -3 on axis 0 splits as 2 before / 1 after, -2 on axis 1 as 1 / 1; NOTSET: -1
       # on each axis, at the end)
       Case([(1, 2, 3, 3), (2, 3, 3, 3), (3,)], {"strides": [3, 2], "output_shape": [12, 9],
                                                 "auto_pad": "SAME_UPPER"}, id="output-shape-beyond"),
       Case([(1, 2, 3, 3), (2, 3, 3, 3), (3,)], {"strides": [3, 2], "output_shape": [10, 8]},
            id="output-shape-beyond-notset")],
}

CASES["col2im"] = [
    Case([(2, 3 * 4, 6)], {"image_shape": [3, 4], "block_shape": [2, 2]}, id="2d"),
    Case([(1, 2 * 6, 4)], {"image_shape": [5, 5], "block_shape": [2, 3], "strides": [2, 2],
                           "dilations": [2, 1], "pads": [1, 0, 0, 1]}, id="strided-dilated-pads"),
    Case([(2, 2 * 3, 3)], {"image_shape": [6], "block_shape": [3], "strides": [2],
                           "pads": [1, 0]}, id="1d"),
    Case([(1, 8, 8)], {"image_shape": [3, 3, 3], "block_shape": [2, 2, 2]}, id="3d"),
]


def fractional(shape):
    """Offsets whose sampling points stay clear of whole pixel coordinates (where bilinear
    interpolation has kinks that finite differences straddle): fractional parts in
    [0.15, 0.85]."""
    def make(rng):
        whole = rng.integers(-1, 2, size=shape)
        return whole + rng.uniform(0.15, 0.85, size=shape)
    return make


CASES["deform_conv"] = [
    Case([(1, 2, 4, 4), (3, 2, 2, 2), fractional((1, 8, 3, 3))], id="plain"),
    Case([(2, 4, 5, 4), (4, 2, 3, 2), fractional((2, 2 * 6 * 2, 3, 2)), (4,),
          lambda rng: rng.uniform(0.2, 1.0, (2, 2 * 6, 3, 2))],
         {"group": 2, "offset_group": 2, "strides": [2, 2], "pads": [1, 0, 1, 1]},
         id="groups-offset-groups-mask-bias"),
    Case([(1, 2, 5, 5), (2, 2, 2, 2), fractional((1, 8, 5, 4))],
         {"dilations": [1, 2], "pads": [1, 1, 0, 0]}, id="dilated-padded"),
]

CASES["causal_conv_with_state"] = [
    Case([(2, 3, 5), (3, 1, 3)], id="plain"),
    Case([(2, 3, 4), (3, 1, 3), (3,), (2, 3, 2)], {"activation": "silu"}, id="silu-bias-state"),
    Case([(1, 2, 1), (2, 1, 4), None, (1, 2, 3)], {"activation": "swish"}, id="decode-step"),
    Case([(2, 2, 3), (2, 1, 1), (2,)], id="kernel-1"),
]
