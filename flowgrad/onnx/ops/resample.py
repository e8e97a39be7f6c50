"""Padding and resizing (flowgrad.ops.resample): Pad, Resize and the older Upsample."""
from __future__ import annotations

import numpy as np

from ..builder import Value
from ..translations import Translations
from ._common import ints, present

T = Translations("resample")


def _pad(b, x, mode, pads, value):
    attrs = {"mode": mode, "pads": [int(p) for p in pads]}
    if value is not None:
        attrs["value"] = float(value)
    return b.final("pad", [x], **attrs)


@T.imports("Pad")
def pad_1(b, a, ins):
    pads = a.get("pads", a.get("paddings"))
    return _pad(b, ins[0], a.get("mode", "constant"), pads, a.get("value", 0.0))


@T.imports("Pad", since=11, static=(1, 2, 3))
def pad_11(b, a, ins):
    pads = ints(b.static(ins[1], "Pad pads"))
    value = b.static(ins[2] if len(ins) > 2 else None, "Pad constant_value")
    axes = b.static(ins[3] if len(ins) > 3 else None, "Pad axes")
    if axes is not None:
        ndim = ins[0].ndim
        full = [0] * (2 * ndim)
        axes = [int(ax) % ndim for ax in ints(axes)]
        for i, ax in enumerate(axes):
            full[ax], full[ax + ndim] = pads[i], pads[i + len(axes)]
        pads = full
    return _pad(b, ins[0], a.get("mode", "constant"), pads,
                None if value is None or np.size(value) == 0
                else float(np.asarray(value).reshape(-1)[0]))


@T.exports("pad")
def _pad_export(c):
    ins = [c.ins[0], c.const(list(c.op.pads))]
    if c.op.value:
        ins.append(c.const(c.op.value, c.model.dtypes.get(c.ins[0], np.float32)))
    c.node("Pad", ins, c.outs, mode=c.op.mode)


def _resize(b, x: Value, a, scales, sizes, roi=None):
    attrs = present(a, ("mode", "coordinate_transformation_mode", "cubic_coeff_a",
                        "exclude_outside", "extrapolation_value", "nearest_mode", "antialias",
                        "keep_aspect_ratio_policy"))
    if attrs.get("keep_aspect_ratio_policy") == "stretch":
        del attrs["keep_aspect_ratio_policy"]
    if not attrs.get("antialias", 1):
        del attrs["antialias"]
    if "extrapolation_value" in attrs and attrs.get("coordinate_transformation_mode") \
            != "tf_crop_and_resize":
        del attrs["extrapolation_value"]            # only used by tf_crop_and_resize
    if a.get("axes") is not None:                   # opset 18: scales/sizes/roi of these axes
        attrs["axes"] = [int(v) for v in a["axes"]]
    if scales is not None and np.size(scales):
        attrs["scales"] = [float(s) for s in np.asarray(scales).reshape(-1)]
    if sizes is not None and np.size(sizes):
        attrs["sizes"] = ints(sizes)
    if roi is not None and np.size(roi) and attrs.get("coordinate_transformation_mode") \
            == "tf_crop_and_resize":
        attrs["roi"] = [float(r) for r in np.asarray(roi).reshape(-1)]
    return b.final("resize", [x], **attrs)


#: how Upsample and Resize-10 place samples (what Resize-11 spells out in attributes)
_ASYMMETRIC = {"coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}


@T.imports("Upsample")
def upsample_1(b, a, ins):
    scales = a.get("scales")
    if scales is None:
        scales = [1.0, 1.0, float(a["height_scale"]), float(a["width_scale"])]
    return _resize(b, ins[0], {"mode": a.get("mode", "nearest"), **_ASYMMETRIC}, scales, None)


@T.imports("Upsample", since=9, static=(1,))
def upsample_9(b, a, ins):
    return _resize(b, ins[0], {"mode": a.get("mode", "nearest"), **_ASYMMETRIC},
                   b.static(ins[1], "Upsample scales"), None)


@T.imports("Resize", since=10, static=(1,))
def resize_10(b, a, ins):
    return _resize(b, ins[0], {"mode": a.get("mode", "nearest"), **_ASYMMETRIC},
                   b.static(ins[1], "Resize scales"), None)


@T.imports("Resize", since=11, static=(1, 2, 3))
def resize_11(b, a, ins):
    get = lambda i, what: b.static(ins[i] if len(ins) > i else None, what)  # noqa: E731
    return _resize(b, ins[0], a, get(2, "Resize scales"), get(3, "Resize sizes"),
                   get(1, "Resize roi"))
