"""ONNX translations of the detection family (flowgrad.ops.detection): NonMaxSuppression,
RoiAlign, MaxRoiPool, GridSample and AffineGrid."""
from __future__ import annotations

import numpy as np

from ..builder import ImportProblem
from ..translations import Translations, node_exporter
from ._common import ints

T = Translations("detection")


@T.imports("NonMaxSuppression", since=10, static=(2, 3, 4))
def non_max_suppression(b, a, ins):
    """The limits stay inputs (read per run); declared static so that float thresholds
    stored as initializers are constants, never trained."""
    center = a.int("center_point_box", 0)
    if center not in (0, 1):
        raise ImportProblem(f"center_point_box must be 0 or 1, not {center}")
    return b.final("non_max_suppression",
                   [ins.need(0, "boxes"), ins.need(1, "scores"), ins.opt(2), ins.opt(3),
                    ins.opt(4)], center_point_box=center)


@T.exports("non_max_suppression")
def _non_max_suppression(c):
    c.node("NonMaxSuppression", c.ins, c.outs, opset=11,
           center_point_box=c.op.center_point_box)


def _choice(a, name: str, default: str, options) -> str:
    value = a.string(name, default)
    if value not in options:
        raise ImportProblem(f"{name} '{value}' is not one of {', '.join(options)}")
    return value


def _roi_align(b, a, ins, coordinates: str):
    return b.final("roi_align", [ins.need(0, "X"), ins.need(1, "rois"),
                                 ins.need(2, "batch_indices")],
                   mode=_choice(a, "mode", "avg", ("avg", "max")),
                   output_height=a.int("output_height", 1), output_width=a.int("output_width", 1),
                   sampling_ratio=a.int("sampling_ratio", 0),
                   spatial_scale=a.float("spatial_scale", 1.0),
                   coordinate_transformation_mode=coordinates)


@T.imports("RoiAlign", since=10)
def roi_align_10(b, a, ins):
    """Opset 10 has no coordinate_transformation_mode: it behaves as output_half_pixel."""
    return _roi_align(b, a, ins, "output_half_pixel")


@T.imports("RoiAlign", since=16)
def roi_align_16(b, a, ins):
    return _roi_align(b, a, ins, _choice(a, "coordinate_transformation_mode", "half_pixel",
                                         ("half_pixel", "output_half_pixel")))


@T.exports("roi_align")
def _roi_align_export(c):
    op = c.op
    c.node("RoiAlign", c.ins, c.outs, opset=16, mode=op.mode, output_height=op.output_height,
           output_width=op.output_width, sampling_ratio=op.sampling_ratio,
           spatial_scale=op.spatial_scale,
           coordinate_transformation_mode=op.coordinate_transformation_mode)


@T.imports("MaxRoiPool", partial="onnx ships no node tests for it; checked against "
                                 "onnxruntime in tests/test_detection.py")
def max_roi_pool(b, a, ins):
    return b.final("max_roi_pool", [ins.need(0, "X"), ins.need(1, "rois")],
                   pooled_shape=a.ints("pooled_shape"),
                   spatial_scale=a.float("spatial_scale", 1.0))


T.exports("max_roi_pool")(node_exporter("MaxRoiPool", ("pooled_shape", "spatial_scale")))


def _grid_sample(b, a, ins, modes: dict):
    mode = _choice(a, "mode", next(iter(modes)), tuple(modes))
    return b.final("grid_sample", [ins.need(0, "X"), ins.need(1, "grid")], mode=modes[mode],
                   padding_mode=_choice(a, "padding_mode", "zeros",
                                        ("zeros", "border", "reflection")),
                   align_corners=a.bool("align_corners", False))


@T.imports("GridSample", since=16)
def grid_sample_16(b, a, ins):
    """Opset 16 names the modes bilinear and bicubic."""
    return _grid_sample(b, a, ins, {"bilinear": "linear", "nearest": "nearest",
                                    "bicubic": "cubic"})


@T.imports("GridSample", since=20)
def grid_sample_20(b, a, ins):
    return _grid_sample(b, a, ins, {"linear": "linear", "nearest": "nearest",
                                    "cubic": "cubic"})


@T.exports("grid_sample")
def _grid_sample_export(c):
    mode = {"bilinear": "linear", "bicubic": "cubic"}.get(c.op.mode, c.op.mode)
    c.node("GridSample", c.ins, c.outs, opset=20, mode=mode, padding_mode=c.op.padding_mode,
           align_corners=int(c.op.align_corners))


@T.imports("AffineGrid", since=20, static=(1,))
def affine_grid(b, a, ins):
    """The size becomes an attribute when known at load time (the grid's shape is then
    known); otherwise it stays an input read per run."""
    theta, size = ins.need(0, "theta"), ins.need(1, "size")
    if size.is_const or size.initial is not None:
        return b.final("affine_grid", [theta], size=ints(b.static(size, "AffineGrid size"),
                                                          "AffineGrid size"),
                       align_corners=a.bool("align_corners", False))
    return b.final("affine_grid", [theta, size], align_corners=a.bool("align_corners", False))


@T.exports("affine_grid")
def _affine_grid(c):
    """A size attribute is written with its batch entry taken from theta at run time
    (``Concat(Shape(theta)[:1], [C, H, W])``): flowgrad reads the batch from theta, while
    onnxruntime checks that the two agree, and an exported batch axis is dynamic."""
    if len(c.ins) > 1 and c.ins[1]:
        size = c.ins[1]
    else:
        (batch,) = c.node("Shape", [c.ins[0]], start=0, end=1, opset=15)
        (size,) = c.node("Concat", [batch, c.const(np.array(c.op.size[1:]))], axis=0)
    c.node("AffineGrid", [c.ins[0], size], c.outs, opset=20,
           align_corners=int(c.op.align_corners))
