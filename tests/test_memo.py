"""A frozen plan computes what depends only on input shapes once per shape (flowgrad.plan.memo).

The models are ONNX graphs with free dims, as exporters write them: an anchor grid built from
Shape -> Gather -> Cast -> Range -> Unsqueeze -> Add, added to a convolution's output and
reshaped to a target concatenated from the batch dim.  Every frozen result is compared bit for
bit with a live plan's (which memoises nothing), over several runs and changing sizes."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import flowgrad


def _init(name, value, dtype=np.int64):
    return numpy_helper.from_array(np.asarray(value, dtype), name)


def _grid_model(extra_outputs=(), probe=False) -> onnx.ModelProto:
    """x: [N, 2, H, W] -> conv 3x3 + grid(H, W) -> reshape to [N, 2, H * W]; the grid
    ``grid[i, j] = 0.5 * i + 0.25 * j`` is computed from x's shape alone.  ``probe``: also
    ``p``, a 1x1 conv of the sum to one channel (at batch 1, the grid's size in bytes)."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "i0"], ["n"], axis=0),
        helper.make_node("Gather", ["s", "i2"], ["h"], axis=0),
        helper.make_node("Gather", ["s", "i3"], ["w"], axis=0),
        helper.make_node("Cast", ["h"], ["hf"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["w"], ["wf"], to=TensorProto.FLOAT),
        helper.make_node("Range", ["zero", "hf", "one"], ["ys"]),
        helper.make_node("Range", ["zero", "wf", "one"], ["xs"]),
        helper.make_node("Mul", ["ys", "half"], ["ys2"]),
        helper.make_node("Mul", ["xs", "quarter"], ["xs2"]),
        helper.make_node("Unsqueeze", ["ys2", "ax1"], ["col"]),
        helper.make_node("Unsqueeze", ["xs2", "ax0"], ["row"]),
        helper.make_node("Add", ["col", "row"], ["grid"]),
        helper.make_node("Conv", ["x", "k"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c", "grid"], ["z"]),
        helper.make_node("Unsqueeze", ["n", "ax0"], ["n1"]),
        helper.make_node("Concat", ["n1", "two", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["z", "target"], ["y"]),
    ]
    inits = [_init("i0", 0), _init("i2", 2), _init("i3", 3), _init("ax0", [0]),
             _init("ax1", [1]), _init("two", [2]), _init("minus1", [-1]),
             _init("zero", 0.0, np.float32), _init("one", 1.0, np.float32),
             _init("half", 0.5, np.float32), _init("quarter", 0.25, np.float32),
             _init("k", rng.standard_normal((2, 2, 3, 3)), np.float32)]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, "HW"])]
    outputs += [helper.make_tensor_value_info(o, TensorProto.FLOAT, ["H", "W"])
                for o in extra_outputs]
    if probe:
        nodes.append(helper.make_node("Conv", ["z", "k1"], ["p"]))
        inits.append(_init("k1", [[[[1.0]], [[-1.0]]]], np.float32))
        outputs.append(helper.make_tensor_value_info("p", TensorProto.FLOAT,
                                                     ["N", 1, "H", "W"]))
    graph = helper.make_graph(
        nodes, "grid",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, "H", "W"])],
        outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _plans(model):
    """(live plan, frozen plan) of the same model."""
    graph = flowgrad.load(model)
    return flowgrad.compile(graph), flowgrad.compile(graph).freeze()


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _steps_of(prof, op_type):
    return [s for s in prof.steps if s.op == op_type]


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# (a 130 x 130 grid is 66 kB: large enough for the buffer pool, which recycles what nothing
# else refers to)
SIZES = [(1, 2, 4, 6), (1, 2, 4, 6), (2, 2, 5, 3), (1, 2, 4, 6), (1, 2, 130, 130),
         (2, 2, 5, 3), (1, 2, 130, 130), (1, 2, 4, 6), (3, 2, 1, 1), (1, 2, 4, 6)]


def test_a_frozen_plan_gives_the_live_plans_outputs_bit_for_bit_as_sizes_change():
    live, frozen = _plans(_grid_model(["grid"]))
    for i, shape in enumerate(SIZES):
        x = _x(shape, seed=i)
        got = frozen.forward({"x": x}, grad=False)
        _assert_same(got, live.forward({"x": x}, grad=False))
        h, w = shape[2:]
        expect = 0.5 * np.arange(h, dtype=np.float32)[:, None] \
            + 0.25 * np.arange(w, dtype=np.float32)[None, :]
        np.testing.assert_array_equal(got["grid"], expect)


def test_the_shape_only_steps_run_once_per_shape():
    """Profiled after a first run at a size, a frozen plan runs none of the grid's steps (the
    Shape still runs: it is the key); a new size runs them once, in the warm-up; a live plan
    runs them every time."""
    live, frozen = _plans(_grid_model())
    x = _x((1, 2, 4, 6))
    frozen.forward({"x": x}, grad=False)
    prof = flowgrad.profile(frozen, {"x": x}, repeat=3)
    assert all(s.calls == 0 for s in _steps_of(prof, "range")) and _steps_of(prof, "range")
    assert all(s.calls == 3 for s in _steps_of(prof, "shape"))
    assert all(s.calls == 3 for s in _steps_of(prof, "conv+add") + _steps_of(prof, "conv"))
    _assert_same(prof.outputs, live.forward({"x": x}, grad=False))
    for shape in [(1, 2, 7, 5), (1, 2, 4, 6)]:          # each warm-up run misses
        x = _x(shape)
        prof = flowgrad.profile(frozen, {"x": x}, repeat=2)
        assert all(s.calls == 0 for s in _steps_of(prof, "range"))
        _assert_same(prof.outputs, live.forward({"x": x}, grad=False))
    assert "range" in prof.table(top=50)
    live_prof = flowgrad.profile(live.eval(), {"x": x}, repeat=2)
    assert all(s.calls == 2 for s in _steps_of(live_prof, "range"))


def test_a_static_output_can_be_written_by_the_caller():
    """The grid, asked for as an output, is handed over as the caller's own array: writing
    into it changes neither the next runs' grid nor what is computed from it."""
    live, frozen = _plans(_grid_model(["grid"]))
    x = _x((1, 2, 4, 6))
    for _ in range(4):
        got = frozen.forward({"x": x}, grad=False)
        _assert_same(got, live.forward({"x": x}, grad=False))
        for value in got.values():
            value[...] = 999.0


def test_gradients_of_the_inputs_still_flow_through_a_frozen_plan():
    live, frozen = _plans(_grid_model())
    x = _x((2, 2, 5, 4))
    for _ in range(2):
        frozen.forward({"x": x}, grad=False)
        _assert_same(frozen.forward({"x": x}), live.forward({"x": x}))
        seed = np.ones((2, 2, 20), np.float32)
        np.testing.assert_array_equal(frozen.backward({"y": seed}, wrt=["x"])["x"],
                                      live.backward({"y": seed}, wrt=["x"])["x"])


def _nonzero_model() -> onnx.ModelProto:
    """y = sum(x) + (number of positive elements of x): a shape that depends on values."""
    nodes = [
        helper.make_node("Greater", ["x", "zero"], ["pos"]),
        helper.make_node("NonZero", ["pos"], ["idx"]),
        helper.make_node("Shape", ["idx"], ["s"]),
        helper.make_node("Gather", ["s", "one"], ["count"], axis=0),
        helper.make_node("Range", ["zero_i", "count", "one"], ["r"]),
        helper.make_node("Cast", ["r"], ["rf"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMax", ["rf"], ["last"], keepdims=0),
        helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
        helper.make_node("Add", ["total", "last"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "nonzero",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])],
        [_init("zero", 0.0, np.float32), _init("zero_i", 0), _init("one", 1)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_shape_read_from_values_is_recomputed_when_the_values_change():
    live, frozen = _plans(_nonzero_model())
    x = np.full((2, 6), -1.0, np.float32)
    for positives in [3, 3, 7, 3, 12, 1, 7]:           # same input shape, other values
        x.reshape(-1)[:] = -1.0
        x.reshape(-1)[:positives] = 1.0
        got = frozen.forward({"x": x}, grad=False)
        _assert_same(got, live.forward({"x": x}, grad=False))
        assert got["y"] == (positives - (12 - positives)) + positives - 1


def _random_model(seeded: bool = False) -> onnx.ModelProto:
    """y = x + noise, the noise drawn like a tensor of x's shape made from Shape(x)."""
    extra = {"seed": 3.0} if seeded else {}
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("ConstantOfShape", ["s"], ["zeros"],
                         value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0])),
        helper.make_node("RandomNormalLike", ["zeros"], ["noise"], **extra),
        helper.make_node("Add", ["x", "noise"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "noisy",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_random_op_after_a_shape_is_never_memoised():
    """Each run draws new numbers, the same as a live plan of the same seed draws."""
    live, frozen = _plans(_random_model())
    x = np.zeros((2, 3), np.float32)
    runs = []
    for shape in [(2, 3), (2, 3), (2, 3), (4, 3), (2, 3), (2, 3)]:
        x = np.zeros(shape, np.float32)
        got = frozen.forward({"x": x}, grad=False)
        _assert_same(got, live.forward({"x": x}, grad=False))
        runs.append(got["y"])
    assert not np.array_equal(runs[0], runs[1]) and not np.array_equal(runs[1], runs[2])
    assert frozen.rng.bit_generator.state == live.rng.bit_generator.state
    prof = flowgrad.profile(frozen, {"x": x}, repeat=3)
    assert [s.calls for s in _steps_of(prof, "random_normal")] == [3]
    assert [s.calls for s in _steps_of(prof, "constant_of_shape")] == [0]


def test_a_random_op_seeded_by_its_attribute_gives_the_same_values_memoised():
    live, frozen = _plans(_random_model(seeded=True))
    for shape in [(2, 3), (2, 3), (5, 3), (2, 3)]:
        x = np.ones(shape, np.float32)
        _assert_same(frozen.forward({"x": x}, grad=False), live.forward({"x": x}, grad=False))


@pytest.mark.parametrize("outputs", [None, ["grid"], ["y", "grid"]])
def test_other_outputs_compile_their_own_memo(outputs):
    live, frozen = _plans(_grid_model(["grid"]))
    for shape in [(1, 2, 3, 3), (1, 2, 6, 2), (1, 2, 3, 3)]:
        x = _x(shape)
        _assert_same(frozen.forward({"x": x}, outputs=outputs, grad=False),
                     live.forward({"x": x}, outputs=outputs, grad=False))


def test_the_buffer_pool_never_recycles_a_kept_value():
    """The grid of a 130 x 130 input (66 kB) is large enough for the pool, and released after
    the convolution reads it; a second convolution then asks for an output of that size.  The
    memo's reference keeps the grid out of the pool (it recycles only what nothing else refers
    to), so that output is never written over the grid kept for the next run."""
    from flowgrad.plan.memo import StaticGroup
    from flowgrad.plan.memory import MIN_BYTES

    live, frozen = _plans(_grid_model(probe=True))
    for i, shape in enumerate([(1, 2, 130, 130), (1, 2, 140, 120)] * 3):
        x = _x(shape, seed=i)
        _assert_same(frozen.forward({"x": x}, grad=False), live.forward({"x": x}, grad=False))
    kept = [value for program in frozen._forward_programs.values()
            for entry in program.static_run or () if isinstance(entry[0], StaticGroup)
            for _, values in entry[0].cache for value in values]
    assert any(v.nbytes >= MIN_BYTES for v in kept)
    free = [b for buffers in frozen._pool._free.values() for b in buffers]
    assert not any(np.shares_memory(v, b) for v in kept for b in free)


def _if_model() -> onnx.ModelProto:
    """y = x * (2 if the batch has more than one row else 3): an If on a shape, whose
    branches read nothing but constants."""
    def branch(name, value):
        return helper.make_graph(
            [helper.make_node("Constant", [], [name + "_v"],
                              value=numpy_helper.from_array(np.float32(value), "c"))],
            name, [], [helper.make_tensor_value_info(name + "_v", TensorProto.FLOAT, [])])
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "i0"], ["n"], axis=0),
        helper.make_node("Greater", ["n", "one"], ["many"]),
        helper.make_node("If", ["many"], ["k"], then_branch=branch("two", 2.0),
                         else_branch=branch("three", 3.0)),
        helper.make_node("Mul", ["x", "k"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "if_on_shape",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [_init("i0", 0), _init("one", 1)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_control_flow_is_never_memoised():
    """An If fed only by a shape still runs its body every time (a body may hold anything);
    the Gather before it, static, runs once per shape."""
    live, frozen = _plans(_if_model())
    for rows in [1, 2, 2, 1, 3]:
        x = _x((rows, 3))
        _assert_same(frozen.forward({"x": x}, grad=False), live.forward({"x": x}, grad=False))
    prof = flowgrad.profile(frozen, {"x": x}, repeat=3)
    assert [s.calls for s in _steps_of(prof, "if")] == [3]
    assert [s.calls for s in _steps_of(prof, "gather")] == [0]
