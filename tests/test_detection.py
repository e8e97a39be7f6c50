"""Detection and spatial-transformer ops against onnxruntime and PyTorch.

* NonMaxSuppression: random boxes in both box formats, several classes and batches, every
  threshold input, boxes with zero area and flipped corners, against onnxruntime exactly; and
  a TopK -> Gather -> NonMaxSuppression post-processing graph imported whole;
* RoiAlign (avg / max, both coordinate modes, adaptive and fixed sampling) and MaxRoiPool
  against onnxruntime;
* GridSample against onnxruntime (every mode, padding and alignment, 4-d; 5-d linear and
  nearest) and against PyTorch autograd (outputs and the gradients w.r.t. image and grid);
  AffineGrid against PyTorch (output and the gradient w.r.t. theta);
* the gradient w.r.t. the image on every GridSample node test (the grid gradient of those
  tests sits on kinks, see tests/test_onnx_gradients.py);
* data-dependent output lengths through a compiled plan, and clear load-time errors for
  malformed nodes.
"""
from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import flowgrad
from flowgrad.errors import FlowgradError
from flowgrad.onnx.backend import FlowgradBackend
from flowgrad.plugins import make_registry
from flowgrad.testing import gradcheck

REGISTRY = make_registry()
RNG = np.random.default_rng(7)
_ELEM = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int64): TensorProto.INT64,
         np.dtype(np.float64): TensorProto.DOUBLE}


def one_node(op_type: str, inputs: dict, n_out: int = 1, opset: int = 20,
             out_type: int = TensorProto.FLOAT, out_rank: int | None = None, **attrs):
    """A one-node model whose inputs are graph inputs (None: an empty optional input); its
    outputs have symbolic dims, as many as the first input's unless ``out_rank`` says."""
    names = [k if v is not None else "" for k, v in inputs.items()]
    rank = next(iter(inputs.values())).ndim if out_rank is None else out_rank
    outs = [f"out{i}" for i in range(n_out)]
    node = helper.make_node(op_type, names, outs, name=f"the_{op_type}", **attrs)
    graph = helper.make_graph(
        [node], "one",
        [helper.make_tensor_value_info(k, _ELEM[v.dtype], v.shape) for k, v in inputs.items()
         if v is not None],
        [helper.make_tensor_value_info(o, out_type, [f"d{i}" for i in range(rank)])
         for o in outs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    feeds = {k: v for k, v in inputs.items() if v is not None}
    return model, feeds


def both(model, feeds):
    """(flowgrad's outputs, onnxruntime's outputs) of ``model`` on ``feeds``."""
    ours = FlowgradBackend.prepare(model).run(feeds)
    theirs = ort.InferenceSession(model.SerializeToString(),
                                  providers=["CPUExecutionProvider"]).run(None, feeds)
    return ours, theirs


# -- NonMaxSuppression --------------------------------------------------------------------------

def random_boxes(batch, n, center: bool, degenerate: bool = False):
    corners = RNG.uniform(0, 20, size=(batch, n, 2, 2)).astype(np.float32)
    if center:
        centre = corners.mean(2)
        size = np.abs(corners[:, :, 1] - corners[:, :, 0]) + 1
        boxes = np.concatenate([centre, size], -1)
    else:     # [y1, x1, y2, x2] with random diagonals (flipped corners are allowed)
        boxes = corners.reshape(batch, n, 4)
    if degenerate:
        boxes[:, ::7, 2] = boxes[:, ::7, 0]          # zero-area boxes never suppress
    return boxes.astype(np.float32)


@pytest.mark.parametrize("center", [0, 1])
@pytest.mark.parametrize("limits", [
    (5, 0.5, None), (3, 0.3, 0.4), (100, 0.0, 0.2), (2, 1.0, None), (10, 0.7, 0.95),
    (0, 0.5, None),
])
def test_nms_matches_onnxruntime(center, limits):
    max_out, iou, score = limits
    boxes = random_boxes(2, 40, bool(center), degenerate=True)
    scores = RNG.random((2, 3, 40)).astype(np.float32)
    scores[:, :, 5] = scores[:, :, 6]                # a tie: lower index first
    inputs = {"boxes": boxes, "scores": scores,
              "max_out": np.array([max_out], np.int64),
              "iou": np.array([iou], np.float32),
              "score": None if score is None else np.array([score], np.float32)}
    model, feeds = one_node("NonMaxSuppression", inputs, out_type=TensorProto.INT64, out_rank=2,
                            center_point_box=center)
    (ours,), (theirs,) = both(model, feeds)
    assert ours.dtype == np.int64 and ours.shape[1:] == (3,)
    np.testing.assert_array_equal(ours, theirs)
    if max_out:
        assert len(ours) > 0


def test_nms_iou_exactly_at_the_threshold_matches_onnxruntime():
    """Two 2x2 boxes overlapping by 1x2: IoU 1/3 in float32, and thresholds around it."""
    boxes = np.array([[[0, 0, 2, 2], [0, 1, 2, 3], [5, 5, 6, 6]]], np.float32)
    scores = np.array([[[0.9, 0.8, 0.7]]], np.float32)
    for iou in (np.float32(1 / 3), np.nextafter(np.float32(1 / 3), 0), 0.33, 0.34):
        model, feeds = one_node("NonMaxSuppression", {
            "boxes": boxes, "scores": scores, "max_out": np.array([3], np.int64),
            "iou": np.array([iou], np.float32)}, out_type=TensorProto.INT64, out_rank=2)
        (ours,), (theirs,) = both(model, feeds)
        np.testing.assert_array_equal(ours, theirs)


def test_topk_gather_nms_postprocessing_matches_onnxruntime():
    """A detection head's post-processing: the top-k scores, their boxes gathered, then NMS
    on them; selected indices mapped back to the original boxes with a second Gather."""
    n, k = 200, 50
    boxes = random_boxes(1, n, center=False)
    scores = RNG.random((1, n)).astype(np.float32)
    inits = [numpy_helper.from_array(np.array([k], np.int64), "k"),
             numpy_helper.from_array(np.array([10], np.int64), "max_out"),
             numpy_helper.from_array(np.array([0.4], np.float32), "iou"),
             numpy_helper.from_array(np.array([0.1], np.float32), "score_floor"),
             numpy_helper.from_array(np.array(0, np.int64), "zero"),
             numpy_helper.from_array(np.array([2], np.int64), "two"),
             numpy_helper.from_array(np.array([1], np.int64), "one_axis")]
    nodes = [
        helper.make_node("TopK", ["scores", "k"], ["top_scores", "top_idx"], axis=1),
        helper.make_node("Gather", ["boxes", "top_idx"], ["top_boxes_4d"], axis=1),
        helper.make_node("Squeeze", ["top_boxes_4d", "one_axis"], ["top_boxes"]),
        helper.make_node("Unsqueeze", ["top_scores", "one_axis"], ["class_scores"]),
        helper.make_node("NonMaxSuppression", ["top_boxes", "class_scores", "max_out", "iou",
                                               "score_floor"], ["selected"]),
        helper.make_node("Gather", ["selected", "two"], ["which_4"], axis=1),
        helper.make_node("Squeeze", ["which_4", "one_axis"], ["which"]),
        helper.make_node("Gather", ["top_idx", "which"], ["kept_2d"], axis=1),
        helper.make_node("Gather", ["top_boxes", "which"], ["kept_boxes"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "postprocess",
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, n, 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, n])],
        [helper.make_tensor_value_info("selected", TensorProto.INT64, [None, 3]),
         helper.make_tensor_value_info("kept_2d", TensorProto.INT64, [1, None]),
         helper.make_tensor_value_info("kept_boxes", TensorProto.FLOAT, [1, None, 4])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    feeds = {"boxes": boxes, "scores": scores}
    ours, theirs = both(model, feeds)
    assert len(ours[0]) > 1
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)
    # the same graph imported with flowgrad.load, a second batch of a different count
    plan = flowgrad.compile(flowgrad.load(model, dynamic_batch=False))
    for seed in (1, 2):
        r = np.random.default_rng(seed)
        feeds = {"boxes": random_boxes(1, n, center=False),
                 "scores": r.random((1, n)).astype(np.float32)}
        got = plan.forward(feeds)
        want = ort.InferenceSession(model.SerializeToString(),
                                    providers=["CPUExecutionProvider"]).run(None, feeds)
        refs = flowgrad.load(model, dynamic_batch=False).meta["onnx"]["outputs"]
        for name, w in zip(("selected", "kept_2d", "kept_boxes"), want):
            np.testing.assert_array_equal(got[refs[name]], w)


# -- RoiAlign, MaxRoiPool ------------------------------------------------------------------

def random_rois(count, height, width, scale=1.0):
    x = RNG.uniform(-2, width / scale + 1, size=(count, 2))
    y = RNG.uniform(-2, height / scale + 1, size=(count, 2))
    return np.stack([x.min(1), y.min(1), x.max(1), y.max(1)], -1).astype(np.float32)


@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("coordinates", ["half_pixel", "output_half_pixel"])
@pytest.mark.parametrize("sampling_ratio,scale", [(0, 1.0), (2, 0.5), (3, 0.25)])
def test_roi_align_matches_onnxruntime(mode, coordinates, sampling_ratio, scale):
    x = RNG.standard_normal((2, 3, 10, 12)).astype(np.float32)
    rois = random_rois(6, 10, 12, scale)
    rois[0] = [3.0, 3.0, 3.0, 3.0]                  # an empty region
    batch = np.array([0, 1, 1, 0, 1, 0], np.int64)
    model, feeds = one_node("RoiAlign", {"X": x, "rois": rois, "batch_indices": batch},
                            opset=16, mode=mode, output_height=3, output_width=4,
                            sampling_ratio=sampling_ratio, spatial_scale=scale,
                            coordinate_transformation_mode=coordinates)
    (ours,), (theirs,) = both(model, feeds)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


def test_roi_align_opset_10_is_output_half_pixel():
    x = RNG.standard_normal((1, 2, 8, 8)).astype(np.float32)
    rois = random_rois(4, 8, 8)
    batch = np.zeros(4, np.int64)
    old, feeds = one_node("RoiAlign", {"X": x, "rois": rois, "batch_indices": batch},
                          opset=10, output_height=2, output_width=2)
    new, _ = one_node("RoiAlign", {"X": x, "rois": rois, "batch_indices": batch}, opset=16,
                      output_height=2, output_width=2,
                      coordinate_transformation_mode="output_half_pixel")
    (a,), (b,) = both(old, feeds)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(a, FlowgradBackend.prepare(new).run(feeds)[0], rtol=1e-6)


@pytest.mark.parametrize("scale", [1.0, 0.5, 0.0625])
def test_max_roi_pool_matches_onnxruntime(scale):
    x = RNG.standard_normal((2, 4, 9, 11)).astype(np.float32)
    corners = random_rois(7, 9, 11, scale)
    rois = np.concatenate([RNG.integers(0, 2, (7, 1)).astype(np.float32), corners], 1)
    rois[0, 1:] = [50, 50, 60, 60]                   # wholly outside: zeros
    model, feeds = one_node("MaxRoiPool", {"X": x, "rois": rois}, opset=13,
                            pooled_shape=[3, 2], spatial_scale=scale)
    (ours,), (theirs,) = both(model, feeds)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)


# -- GridSample, AffineGrid ----------------------------------------------------------------------

MODES = ["linear", "nearest", "cubic"]
PADDINGS = ["zeros", "border", "reflection"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("align", [0, 1])
def test_grid_sample_matches_onnxruntime(mode, padding, align):
    x = RNG.standard_normal((2, 3, 6, 7)).astype(np.float32)
    grid = RNG.uniform(-1.6, 1.6, size=(2, 4, 5, 2)).astype(np.float32)
    model, feeds = one_node("GridSample", {"X": x, "grid": grid}, mode=mode,
                            padding_mode=padding, align_corners=align)
    (ours,), (theirs,) = both(model, feeds)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", ["linear", "nearest"])
@pytest.mark.parametrize("padding", PADDINGS)
def test_grid_sample_5d_matches_onnxruntime(mode, padding):
    x = RNG.standard_normal((1, 2, 4, 5, 6)).astype(np.float32)
    grid = RNG.uniform(-1.4, 1.4, size=(1, 3, 2, 4, 3)).astype(np.float32)
    model, feeds = one_node("GridSample", {"X": x, "grid": grid}, opset=22, mode=mode,
                            padding_mode=padding, align_corners=1)
    try:
        (ours,), (theirs,) = both(model, feeds)
    except ort.capi.onnxruntime_pybind11_state.OrtException as e:   # pragma: no cover
        pytest.fail(f"onnxruntime refuses 5-d GridSample: {e}")
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


def test_grid_sample_opset_16_mode_names():
    x = RNG.standard_normal((1, 2, 5, 5)).astype(np.float32)
    grid = RNG.uniform(-1, 1, size=(1, 3, 3, 2)).astype(np.float32)
    for old, new in (("bilinear", "linear"), ("bicubic", "cubic"), ("nearest", "nearest")):
        m16, feeds = one_node("GridSample", {"X": x, "grid": grid}, opset=16, mode=old)
        m20, _ = one_node("GridSample", {"X": x, "grid": grid}, opset=20, mode=new)
        np.testing.assert_array_equal(FlowgradBackend.prepare(m16).run(feeds)[0],
                                      FlowgradBackend.prepare(m20).run(feeds)[0])


# PyTorch's outputs and autograd gradients, recorded by tests/data/detection/
# make_pytorch_refs.py (so CI compares with PyTorch without torch installed)
with np.load(os.path.join(os.path.dirname(__file__), "data", "detection",
                          "pytorch_refs.npz")) as _saved:
    TORCH = dict(_saved)
AFFINE_SIZES = [((2, 3, 4, 5), False), ((2, 3, 4, 5), True), ((2, 1, 3, 4, 5), False),
                ((2, 1, 3, 4, 5), True), ((2, 3, 1, 4), False)]


def _matches_pytorch(key: str, op, inputs: tuple[str, ...], grads: tuple[str, ...]) -> None:
    """Run ``op`` forward and backward on the recorded case ``key`` and compare the output
    and the gradients of ``inputs`` with PyTorch's."""
    ctx = flowgrad.op.Context()
    feeds = [TORCH[f"{key}/{name}"] if name else None for name in inputs]
    (y,) = op.forward(ctx, *feeds)
    ctx.needs_input_grad = tuple(bool(name) for name in grads)
    got = op.backward(ctx, TORCH[f"{key}/seed"])
    np.testing.assert_allclose(y, TORCH[f"{key}/y"], rtol=1e-6, atol=1e-9)
    for name, g in zip(grads, got):
        if name:
            np.testing.assert_allclose(g, TORCH[f"{key}/{name}"], rtol=1e-6, atol=1e-9,
                                       err_msg=name)


@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("align", [False, True])
def test_grid_sample_gradients_match_pytorch(mode, padding, align):
    op = REGISTRY.get("grid_sample")(mode=mode, padding_mode=padding, align_corners=align)
    _matches_pytorch(f"gs-{mode}-{padding}-{align}", op, ("x", "grid"), ("gx", "ggrid"))


def test_grid_sample_5d_gradients_match_pytorch():
    op = REGISTRY.get("grid_sample")(padding_mode="reflection")
    _matches_pytorch("gs5d", op, ("x", "grid"), ("gx", "ggrid"))


@pytest.mark.parametrize("size,align", AFFINE_SIZES)
def test_affine_grid_matches_pytorch(size, align):
    op = REGISTRY.get("affine_grid")(size=list(size), align_corners=align)
    _matches_pytorch(f"ag-{'x'.join(map(str, size))}-{align}", op, ("theta", ""),
                     ("gtheta", ""))


def test_affine_grid_unit_size_with_align_corners_follows_the_reference():
    """A single pixel with align_corners: ONNX's reference puts it at -1 (onnxruntime 1.32
    at +1, PyTorch at 0); flowgrad follows the reference."""
    from onnx.reference import ReferenceEvaluator
    theta = RNG.standard_normal((2, 2, 3)).astype(np.float32)
    model, feeds = one_node("AffineGrid", {"theta": theta,
                                           "size": np.array([2, 3, 1, 4], np.int64)},
                            align_corners=1)
    want = ReferenceEvaluator(model).run(None, feeds)[0]
    np.testing.assert_allclose(FlowgradBackend.prepare(model).run(feeds)[0], want, rtol=1e-6)


def test_affine_grid_feeds_grid_sample_and_trains_theta():
    """A spatial transformer: theta -> AffineGrid -> GridSample, gradient-checked whole
    (w.r.t. the image and theta) and run by onnxruntime alike."""
    from flowgrad.gradcheck import check_graph_gradients
    theta = (np.eye(2, 3) + 0.1 * RNG.standard_normal((2, 3))).astype(np.float32)[None]
    nodes = [helper.make_node("AffineGrid", ["theta", "size"], ["grid"]),
             helper.make_node("GridSample", ["x", "grid"], ["y"], padding_mode="border")]
    graph = helper.make_graph(
        nodes, "stn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 6]),
                       helper.make_tensor_value_info("theta", TensorProto.FLOAT, [1, 2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])],
        initializer=[numpy_helper.from_array(np.array([1, 2, 4, 4], np.int64), "size")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 9
    feeds = {"x": RNG.standard_normal((1, 2, 5, 6)).astype(np.float32), "theta": theta}
    (ours,), (theirs,) = both(model, feeds)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
    g = flowgrad.load(model, dynamic_batch=False)
    checks = check_graph_gradients(g, feeds=feeds, max_elements=8, rtol=1e-4, atol=1e-6)
    assert {c.name for c in checks} == {"x", "theta"} and all(c.ok for c in checks), checks


def _gridsample_cases():
    import importlib
    from onnx.backend.test.case import node as node_cases
    importlib.import_module(f"{node_cases.__name__}.gridsample")
    return [c for c in node_cases._NodeTestCases if c.model.graph.node[0].op_type == "GridSample"]


GRIDSAMPLE_CASES = _gridsample_cases()


@pytest.mark.parametrize("case", GRIDSAMPLE_CASES, ids=lambda c: c.name)
def test_grid_sample_node_tests_image_gradient(case):
    """The image gradient is linear in the image, so it is checkable at the node tests' own
    grids, even where the grid gradient sits on a kink."""
    node = case.model.graph.node[0]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    x, grid = [numpy_helper.to_array(v) if isinstance(v, onnx.TensorProto) else v
               for v in case.data_sets[0][0]]
    mode = attrs.get("mode", b"linear").decode()
    op = REGISTRY.get("grid_sample")(mode=mode,
                                     padding_mode=attrs.get("padding_mode", b"zeros").decode(),
                                     align_corners=bool(attrs.get("align_corners", 0)))
    gradcheck(op, [x, grid], wrt=[0])


# -- data-dependent shapes through a plan, and errors ------------------------------------------

def test_data_dependent_lengths_through_a_compiled_plan():
    """NonZero -> Transpose -> GatherND, Compress and Unique: output lengths change from one
    run of the same plan to the next."""
    nodes = [helper.make_node("NonZero", ["mask"], ["nz"]),
             helper.make_node("Transpose", ["nz"], ["rows"], perm=[1, 0]),
             helper.make_node("GatherND", ["x", "rows"], ["picked"]),
             helper.make_node("Greater", ["x", "zero"], ["positive"]),
             helper.make_node("Reshape", ["positive", "flat"], ["positive_flat"]),
             helper.make_node("Compress", ["x", "positive_flat"], ["kept"]),
             helper.make_node("Unique", ["kept"], ["u", "first", "inverse", "counts"])]
    graph = helper.make_graph(
        nodes, "dd",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4]),
         helper.make_tensor_value_info("mask", TensorProto.BOOL, [3, 4])],
        [helper.make_tensor_value_info(n, t, ["k"]) for n, t in
         (("picked", TensorProto.FLOAT), ("kept", TensorProto.FLOAT), ("u", TensorProto.FLOAT),
          ("counts", TensorProto.INT64))],
        initializer=[numpy_helper.from_array(np.array(0, np.float32), "zero"),
                     numpy_helper.from_array(np.array([-1], np.int64), "flat")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    rep = FlowgradBackend.prepare(model)
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    lengths = set()
    for seed in range(3):
        r = np.random.default_rng(seed)
        feeds = {"x": np.round(r.standard_normal((3, 4)), 1).astype(np.float32),
                 "mask": r.random((3, 4)) < 0.3 + 0.3 * seed}
        ours, theirs = rep.run(feeds), session.run(None, feeds)
        for a, b in zip(ours, theirs):
            np.testing.assert_array_equal(a, b)
        lengths.add(len(ours[0]))
    assert len(lengths) > 1


@pytest.mark.parametrize("op_type,inputs,attrs,message", [
    ("NonMaxSuppression", {"boxes": np.zeros((1, 2, 4), np.float32),
                           "scores": np.zeros((1, 1, 2), np.float32)},
     {"center_point_box": 2}, "center_point_box must be 0 or 1"),
    ("GridSample", {"X": np.zeros((1, 1, 2, 2), np.float32),
                    "grid": np.zeros((1, 2, 2, 2), np.float32)},
     {"mode": "bilinear"}, "mode 'bilinear' is not one of linear, nearest, cubic"),
    ("GridSample", {"X": np.zeros((1, 1, 2, 2, 2), np.float32),
                    "grid": np.zeros((1, 2, 2, 2, 3), np.float32)},
     {"mode": "cubic"}, "cubic mode needs a 4-d input"),
    ("RoiAlign", {"X": np.zeros((1, 1, 4, 4), np.float32),
                  "rois": np.zeros((1, 4), np.float32),
                  "batch_indices": np.zeros(1, np.int64)},
     {"mode": "median"}, "mode 'median' is not one of avg, max"),
    ("RoiAlign", {"X": np.zeros((1, 1, 4, 4), np.float32),
                  "rois": np.zeros((1, 5), np.float32),
                  "batch_indices": np.zeros(1, np.int64)},
     {}, "rois (R, 4)"),
    ("MaxRoiPool", {"X": np.zeros((1, 1, 4, 4), np.float32),
                    "rois": np.zeros((1, 5), np.float32)},
     {"pooled_shape": [2, 0]}, "pooled_shape must be two sizes >= 1"),
])
def test_malformed_nodes_give_one_clear_error(op_type, inputs, attrs, message):
    model, _ = one_node(op_type, inputs, **attrs)
    with pytest.raises(FlowgradError) as info:
        flowgrad.load(model)
    text = str(info.value)
    assert f"the_{op_type}" in text and op_type in text and message in text, text


def test_bad_values_at_run_time_name_the_node():
    model, feeds = one_node("NonMaxSuppression", {
        "boxes": np.zeros((1, 2, 4), np.float32), "scores": np.zeros((1, 1, 2), np.float32),
        "max_out": np.array([2], np.int64), "iou": np.array([1.5], np.float32)},
        out_type=TensorProto.INT64, out_rank=2)
    graph = flowgrad.load(model)
    plan = flowgrad.compile(graph)
    with pytest.raises(FlowgradError, match="iou_threshold must be in"):
        plan.forward({k: v for k, v in feeds.items() if k in graph.inputs})


# -- export: the imported ops written back to ONNX and run by onnxruntime -------------------

_X = RNG.standard_normal((2, 3, 8, 9)).astype(np.float32)
EXPORTED = [
    ("NonMaxSuppression", {"boxes": random_boxes(2, 30, False),
                           "scores": RNG.random((2, 2, 30)).astype(np.float32),
                           "max_out": np.array([4], np.int64),
                           "iou": np.array([0.4], np.float32),
                           "score": np.array([0.1], np.float32)}, {}, 11),
    ("RoiAlign", {"X": _X, "rois": random_rois(5, 8, 9),
                  "batch_indices": np.array([0, 1, 1, 0, 1], np.int64)},
     {"mode": "max", "output_height": 2, "output_width": 3, "sampling_ratio": 2}, 16),
    ("MaxRoiPool", {"X": _X, "rois": np.concatenate(
        [np.array([[0], [1], [1]], np.float32), random_rois(3, 8, 9)], 1)},
     {"pooled_shape": [2, 2], "spatial_scale": 1.0}, 13),
    ("GridSample", {"X": _X, "grid": RNG.uniform(-1.2, 1.2, (2, 3, 4, 2)).astype(np.float32)},
     {"mode": "cubic", "padding_mode": "reflection", "align_corners": 1}, 20),
    ("AffineGrid", {"theta": RNG.standard_normal((2, 2, 3)).astype(np.float32),
                    "size": np.array([2, 3, 4, 5], np.int64)}, {"align_corners": 0}, 20),
]


@pytest.mark.parametrize("op_type,inputs,attrs,opset", EXPORTED, ids=[e[0] for e in EXPORTED])
def test_export_runs_in_onnxruntime(op_type, inputs, attrs, opset):
    from flowgrad.onnx.export import export_onnx
    rank = 2 if op_type == "NonMaxSuppression" else None
    out_type = TensorProto.INT64 if op_type == "NonMaxSuppression" else TensorProto.FLOAT
    model, feeds = one_node(op_type, inputs, opset=opset, out_rank=rank, out_type=out_type,
                            **attrs)
    g = flowgrad.load(model, dynamic_batch=False)
    ours = flowgrad.compile(g).forward({k: v for k, v in feeds.items() if k in g.inputs})
    exported = export_onnx(g)
    kept = {i.name for i in exported.graph.input}
    (theirs,) = ort.InferenceSession(exported.SerializeToString(),
                                     providers=["CPUExecutionProvider"]).run(
        None, {k: v for k, v in feeds.items() if k in kept})
    np.testing.assert_allclose(ours[g.meta["onnx"]["outputs"]["out0"]], theirs, rtol=1e-4,
                               atol=1e-5)


def test_affine_grid_export_takes_the_batch_from_theta():
    """A size initializer says batch 1; imported with a dynamic batch and exported, the model
    runs in onnxruntime at batch 3 (which checks size[0] against theta's batch)."""
    from flowgrad.onnx.export import export_onnx
    nodes = [helper.make_node("AffineGrid", ["theta", "size"], ["grid"]),
             helper.make_node("GridSample", ["x", "grid"], ["y"])]
    graph = helper.make_graph(
        nodes, "stn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 6]),
                       helper.make_tensor_value_info("theta", TensorProto.FLOAT, [1, 2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])],
        initializer=[numpy_helper.from_array(np.array([1, 2, 4, 4], np.int64), "size")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    g = flowgrad.load(model)
    feeds = {"x": RNG.standard_normal((3, 2, 5, 6)).astype(np.float32),
             "theta": RNG.standard_normal((3, 2, 3)).astype(np.float32)}
    ours = flowgrad.compile(g).forward(feeds)[g.meta["onnx"]["outputs"]["y"]]
    (theirs,) = ort.InferenceSession(export_onnx(g).SerializeToString(),
                                     providers=["CPUExecutionProvider"]).run(None, feeds)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
