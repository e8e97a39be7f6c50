"""Padding and resizing (flowgrad.ops.resample): Pad, Resize and the older Upsample."""
from __future__ import annotations

import numpy as np

from ..access import scalar
from ..builder import ImportProblem, Value
from ..translations import Translations
from ._common import axis, floats, ints, present

T = Translations("resample")


def _pad(b, x, mode, pads, value):
    attrs = {"mode": mode, "pads": pads}
    if value is not None:
        attrs["value"] = value
    return b.final("pad", [x], **attrs)


@T.imports("Pad")
def pad_1(b, a, ins):
    """Opset 1 names the pads ``paddings``."""
    pads = a.ints("pads") if "pads" in a else a.ints("paddings")
    return _pad(b, ins.need(0, "data"), a.string("mode", "constant"), pads,
                a.float("value", 0.0))


@T.imports("Pad", since=11, static=(1, 2, 3))
def pad_11(b, a, ins):
    x = ins.need(0, "data")
    pads = ints(b.static(ins.need(1, "pads"), "Pad pads"), "Pad pads")
    value = b.static(ins.opt(2), "Pad constant_value")
    axes = b.static(ins.opt(3), "Pad axes")
    if axes is not None:
        ndim = x.ndim
        full = [0] * (2 * ndim)
        axes = [axis(ax, ndim, "Pad axis") for ax in ints(axes, "Pad axes")]
        if len(pads) != 2 * len(axes):
            raise ImportProblem(f"Pad has {len(pads)} pads for {len(axes)} axes; give two per "
                                "axis (all begins, then all ends)")
        for i, ax in enumerate(axes):
            full[ax], full[ax + ndim] = pads[i], pads[i + len(axes)]
        pads = full
    return _pad(b, x, a.string("mode", "constant"), pads,
                None if value is None or np.size(value) == 0
                else scalar(value, "Pad constant_value"))


@T.exports("pad")
def _pad_export(c):
    ins = [c.ins[0], c.const(list(c.op.pads))]
    if c.op.value:
        ins.append(c.const(c.op.value, c.model.dtypes.get(c.ins[0], np.float32)))
    c.node("Pad", ins, c.outs, mode=c.op.mode)


#: Resize's attributes that flowgrad's resize op takes under the same name
_RESIZE = ("mode", "coordinate_transformation_mode", "cubic_coeff_a", "exclude_outside",
           "extrapolation_value", "nearest_mode", "antialias", "keep_aspect_ratio_policy")


def _resize(b, x: Value, attrs: dict, scales, sizes, roi=None, axes=None):
    """``attrs``: the resize op's attributes named as in ONNX; ``scales``, ``sizes`` and ``roi``
    the load-time values (or None)."""
    attrs = dict(attrs)
    if attrs.get("keep_aspect_ratio_policy") == "stretch":
        del attrs["keep_aspect_ratio_policy"]
    if not attrs.get("antialias", 1):
        del attrs["antialias"]
    if "extrapolation_value" in attrs and attrs.get("coordinate_transformation_mode") \
            != "tf_crop_and_resize":
        del attrs["extrapolation_value"]            # only used by tf_crop_and_resize
    if axes is not None:                            # opset 18: scales/sizes/roi of these axes
        attrs["axes"] = axes
    if scales is not None and np.size(scales):
        attrs["scales"] = floats(scales, "Resize scales")
        if not all(np.isfinite(s) and s > 0 for s in attrs["scales"]):
            raise ImportProblem(f"Resize scales must be positive, finite numbers, not "
                                f"{attrs['scales'][:6]}")
    if sizes is not None and np.size(sizes):
        attrs["sizes"] = ints(sizes, "Resize sizes")
        if min(attrs["sizes"]) < 0:
            raise ImportProblem(f"Resize sizes must be >= 0, not {attrs['sizes'][:6]}")
    if roi is not None and np.size(roi) and attrs.get("coordinate_transformation_mode") \
            == "tf_crop_and_resize":
        attrs["roi"] = floats(roi, "Resize roi")
    return b.final("resize", [x], **attrs)


#: how Upsample and Resize-10 place samples (what Resize-11 spells out in attributes)
_ASYMMETRIC = {"coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}


@T.imports("Upsample")
def upsample_1(b, a, ins):
    scales = a.floats("scales", None)
    if scales is None:
        scales = [1.0, 1.0, a.float("height_scale"), a.float("width_scale")]
    return _resize(b, ins.need(0, "X"), {"mode": a.string("mode", "nearest"), **_ASYMMETRIC},
                   scales, None)


@T.imports("Upsample", since=9, static=(1,))
def upsample_9(b, a, ins):
    return _resize(b, ins.need(0, "X"), {"mode": a.string("mode", "nearest"), **_ASYMMETRIC},
                   b.static(ins.need(1, "scales"), "Upsample scales"), None)


@T.imports("Resize", since=10, static=(1,))
def resize_10(b, a, ins):
    return _resize(b, ins.need(0, "X"), {"mode": a.string("mode", "nearest"), **_ASYMMETRIC},
                   b.static(ins.need(1, "scales"), "Resize scales"), None)


@T.imports("Resize", since=11, static=(1, 2, 3))
def resize_11(b, a, ins):
    return _resize(b, ins.need(0, "X"), present(a, _RESIZE),
                   b.static(ins.opt(2), "Resize scales"), b.static(ins.opt(3), "Resize sizes"),
                   b.static(ins.opt(1), "Resize roi"), a.ints("axes", None))
