"""Fused *regions*: a producer and the small DAG of elementwise ops after it (hard-swish's
diamond ``x * clip(x + 3, 0, 6) / 6``, SiLU's ``x * sigmoid(x)``, a squeeze-excite scale),
run as one step.  Each fused program is checked against the unfused one (a forward with
gradient fuses nothing) on hand-written and random graphs, and an ONNX model with the
hard-swish and squeeze-excite patterns against onnxruntime."""
from __future__ import annotations

import numpy as np
import pytest

import flowgrad
from flowgrad.loaders.yaml_loader import load_yaml
from flowgrad.plan import Plan
from flowgrad.plan import fusion
from flowgrad.plugins import make_registry

REGISTRY = make_registry()


def _plan(tmp_path, text, dtype=np.float32):
    plan = Plan(load_yaml(str(tmp_path / "g.yaml"), text=text), dtype=dtype)
    rng = np.random.default_rng(7)
    for name, value in plan.params.items():
        value[...] = rng.standard_normal(value.shape)
    return plan


def _names(plan, outputs=("out",)):
    return [step.name for *_, step in plan._forward_programs[(outputs, True)].run]


def _x(n, c=3, h=6, w=7, seed=2):
    return np.random.default_rng(seed).standard_normal((n, c, h, w)).astype(np.float32)


HARD_SWISH = """
flowgrad: 1
name: hard_swish
inputs:
  x: {shape: [3, 6, 7]}
params:
  K: {shape: [8, 3, 3, 3], init: {kind: he_normal}}
  b: {shape: [8], init: {kind: zeros}}
  K2: {shape: [4, 8, 1, 1], init: {kind: he_normal}}
constants:
  three: {value: 3.0}
  six: {value: 6.0}
nodes:
  conv: {op: conv, in: {x: x, W: K, b: b}, pads: [1, 1, 1, 1]}
  a:    {op: add, in: [conv, three]}
  c:    {op: clip, in: a, min: 0.0, max: 6.0}
  m:    {op: mul, in: [conv, c]}
  hs:   {op: div, in: [m, six]}
  out:  {op: conv, in: {x: hs, W: K2}}
outputs: [out]
"""


@pytest.mark.parametrize("n", [1, 5])
def test_the_hard_swish_diamond_joins_the_conv_before_it(tmp_path, n, monkeypatch):
    if n > 1:      # several blocks, the last one shorter
        monkeypatch.setattr(fusion, "BLOCK_ELEMENTS", 2 * 8 * 6 * 7)
    plan = _plan(tmp_path, HARD_SWISH)
    x = _x(n)
    unfused = plan.forward({"x": x})["out"]
    fused = plan.forward({"x": x}, grad=False)["out"]
    np.testing.assert_array_equal(fused, unfused)      # the same ops, in the same order
    assert _names(plan) == ["conv", "out"]


def test_a_value_read_outside_the_region_ends_it_before(tmp_path):
    """``a`` asked for as an output: the conv's region cannot swallow it; ``c`` then takes
    the rest, reading the conv's value as a ready input."""
    plan = _plan(tmp_path, HARD_SWISH)
    x = _x(2)
    ref = plan.forward({"x": x}, outputs=("a", "out"))
    got = plan.forward({"x": x}, outputs=("a", "out"), grad=False)
    for k in ("a", "out"):
        np.testing.assert_array_equal(got[k], ref[k])
    names = _names(plan, ("a", "out"))
    assert names == ["conv", "conv#branch", "a", "c", "out"]


SE = """
flowgrad: 1
name: squeeze_excite
inputs:
  x: {shape: [3, 6, 7]}
params:
  K: {shape: [8, 3, 1, 1], init: {kind: he_normal}}
  K1: {shape: [2, 8, 1, 1], init: {kind: he_normal}}
  K2: {shape: [8, 2, 1, 1], init: {kind: he_normal}}
  b2: {shape: [8], init: {kind: zeros}}
  g: {shape: [8], init: {kind: constant, value: 1.0}}
  beta: {shape: [8], init: {kind: zeros}}
  mu: {shape: [8], init: {kind: zeros}, trainable: false}
  var: {shape: [8], init: {kind: constant, value: 1.0}, trainable: false}
nodes:
  conv: {op: conv, in: {x: x, W: K}}
  bn:   {op: batch_norm, in: {x: conv, scale: g, bias: beta, mean: mu, var: var}}
  act:  {op: sigmoid, in: bn}
  silu: {op: mul, in: [bn, act]}
  pool: {op: global_avg_pool, in: silu}
  s1:   {op: conv, in: {x: pool, W: K1}}
  r:    {op: relu, in: s1}
  s2:   {op: conv, in: {x: r, W: K2, b: b2}}
  hsig: {op: hard_sigmoid, in: s2}
  out:  {op: mul, in: [silu, hsig]}
outputs: [out]
"""


@pytest.mark.parametrize("n", [1, 3])
def test_silu_and_squeeze_excite(tmp_path, n):
    plan = _plan(tmp_path, SE)
    plan.params["var"][...] = np.abs(plan.params["var"]) + 0.5
    x = _x(n)
    unfused = plan.forward({"x": x})["out"]
    fused = plan.forward({"x": x}, grad=False)["out"]
    np.testing.assert_allclose(fused, unfused, rtol=2e-6, atol=1e-6)   # bn folded into K
    names = _names(plan)
    # conv + bn + SiLU's diamond in one step; the excitation's conv + hard_sigmoid in
    # another; the scale reads two values of other shapes and runs on its own
    assert names == ["conv", "silu#branch", "pool", "s1", "s2", "out"]


def _random_region(seed: int) -> tuple[str, tuple[str, ...]]:
    """A conv and a random DAG of elementwise ops after it: each reads earlier values of the
    DAG (so values fan out), scalars, per-channel params or a second batched input; one
    intermediate is sometimes asked for too."""
    rng = np.random.default_rng(seed)
    values, nodes = ["conv"], []
    for i in range(int(rng.integers(3, 9))):
        kind = rng.choice(["relu", "sigmoid", "tanh", "clip", "add", "sub", "mul", "div"])
        pick = values[int(rng.integers(len(values)))]
        if kind in ("relu", "sigmoid", "tanh"):
            nodes.append(f"  v{i}: {{op: {kind}, in: {pick}}}")
        elif kind == "clip":
            nodes.append(f"  v{i}: {{op: clip, in: {pick}, min: -0.5, max: 1.0}}")
        else:
            other = ("k" if kind == "div" else
                     rng.choice(["k", "s", "y"] + values))
            pair = [pick, other] if rng.random() < 0.7 or kind == "div" else [other, pick]
            nodes.append(f"  v{i}: {{op: {kind}, in: [{pair[0]}, {pair[1]}]}}")
        values.append(f"v{i}")
    outputs = (values[-1],)
    if rng.random() < 0.3 and len(values) > 2:
        outputs = (values[int(rng.integers(1, len(values) - 1))],) + outputs
    text = f"""
flowgrad: 1
name: region{seed}
inputs:
  x: {{shape: [3, 5, 5]}}
  y: {{shape: [4, 5, 5]}}
params:
  K: {{shape: [4, 3, 3, 3], init: {{kind: he_normal}}}}
  b: {{shape: [4], init: {{kind: zeros}}}}
  k: {{shape: [1, 4, 1, 1], init: {{kind: constant, value: 1.5}}}}
constants:
  s: {{value: 0.25}}
nodes:
  conv: {{op: conv, in: {{x: x, W: K, b: b}}, pads: [1, 1, 1, 1]}}
""" + "\n".join(nodes) + f"\noutputs: [{', '.join(outputs)}]\n"
    return text, outputs


@pytest.mark.parametrize("seed", range(16))
def test_random_regions_give_the_unfused_values(tmp_path, seed, monkeypatch):
    text, outputs = _random_region(seed)
    n = 1 + seed % 4
    if seed % 2:
        monkeypatch.setattr(fusion, "BLOCK_ELEMENTS", 2 * 4 * 5 * 5)
    plan = _plan(tmp_path, text, dtype=np.float64 if seed % 3 == 0 else np.float32)
    plan.params["k"][...] = np.abs(plan.params["k"]) + 0.5
    feeds = {"x": _x(n, 3, 5, 5, seed), "y": _x(n, 4, 5, 5, seed + 100)}
    for _ in range(2):                 # the second run: recycled buffers
        unfused = plan.forward(feeds, outputs=outputs)
        fused = plan.forward(feeds, outputs=outputs, grad=False)
        for name in outputs:
            np.testing.assert_array_equal(fused[name], unfused[name], err_msg=text)
        plan.params["k"][...] += 0.25   # a live param changed in place is read again
    assert len(_names(plan, outputs)) < len(plan._forward_programs[(outputs, False)].run)
    # frozen, the constants are filled into the regions' programs once (a frozen plan may
    # fold a product by ``k`` into the conv where the live plan did not: rounding)
    unfused = plan.forward(feeds, outputs=outputs)
    plan.freeze()
    for _ in range(2):
        fused = plan.forward(feeds, outputs=outputs, grad=False)
        for name in outputs:
            np.testing.assert_allclose(fused[name], unfused[name], rtol=2e-5, atol=1e-5,
                                       err_msg=text)


def test_buffers_are_reused_once_their_value_is_dead():
    add, relu, mul = (REGISTRY.ops[t]() for t in ("add", "relu", "mul"))
    # v1 = relu(v0); v2 = add(v0, k) (v0 dies: in place); v3 = mul(v1, v2): v1 dies first
    steps, nbuf = fusion._assign_buffers([(relu, (0,), ()), (add, (0, None), (False,)),
                                          (mul, (1, 2), ())])
    assert [target for *_, target, _ in steps] == [1, 0, 1] and nbuf == 2
    # a non-commutative op reading the value on its second port writes elsewhere
    sub = REGISTRY.ops["sub"]()
    steps, nbuf = fusion._assign_buffers([(sub, (None, 0), (False,))])
    assert steps[0][1:3] == ((None, 0), 1) and nbuf == 2


def _se_model():
    """PP-OCR's MobileNetV3 block as paddle2onnx writes it: conv, hard-swish as
    Add/Clip/Mul/Div, a squeeze-excite whose convs take their bias through a Reshape of a
    constant, HardSigmoid, and the excitation's Mul."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    c, r = 8, 2

    def init(name, value):
        return numpy_helper.from_array(np.asarray(value, np.float32), name)

    inits = [init("W1", rng.standard_normal((c, 3, 3, 3)) * 0.5),
             init("three", 3.0), init("six", 6.0),
             init("W2", rng.standard_normal((r, c, 1, 1))), init("b2", rng.standard_normal(r)),
             init("W3", rng.standard_normal((c, r, 1, 1))), init("b3", rng.standard_normal(c)),
             numpy_helper.from_array(np.array([1, r, 1, 1], np.int64), "shape2"),
             numpy_helper.from_array(np.array([1, c, 1, 1], np.int64), "shape3"),
             init("lo", 0.0), init("hi", 6.0)]
    nodes = [helper.make_node("Conv", ["x", "W1"], ["conv"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["conv", "three"], ["a"]),
             helper.make_node("Clip", ["a", "lo", "hi"], ["cl"]),
             helper.make_node("Mul", ["conv", "cl"], ["m"]),
             helper.make_node("Div", ["m", "six"], ["hs"]),
             helper.make_node("GlobalAveragePool", ["hs"], ["pool"]),
             helper.make_node("Conv", ["pool", "W2"], ["s1"]),
             helper.make_node("Reshape", ["b2", "shape2"], ["rb2"]),
             helper.make_node("Add", ["s1", "rb2"], ["s1b"]),
             helper.make_node("Relu", ["s1b"], ["s1r"]),
             helper.make_node("Conv", ["s1r", "W3"], ["s2"]),
             helper.make_node("Reshape", ["b3", "shape3"], ["rb3"]),
             helper.make_node("Add", ["s2", "rb3"], ["s2b"]),
             helper.make_node("HardSigmoid", ["s2b"], ["gate"], alpha=0.2, beta=0.5),
             helper.make_node("Mul", ["hs", "gate"], ["y"])]
    graph = helper.make_graph(
        nodes, "se", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 12, 20])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", c, 12, 20])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_an_onnx_hard_swish_and_squeeze_excite_block_fuses(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model = _se_model()
    path = tmp_path / "se.onnx"
    path.write_bytes(model.SerializeToString())
    net = flowgrad.compile(flowgrad.load(str(path)))
    x = np.random.default_rng(1).uniform(-2, 2, (2, 3, 12, 20)).astype(np.float32)
    unfused = net.forward({"x": x})["y"]
    fused = net.forward({"x": x}, grad=False)["y"]
    np.testing.assert_array_equal(fused, unfused)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (reference,) = session.run(["y"], {"x": x})
    np.testing.assert_allclose(fused, reference, rtol=1e-5, atol=1e-5)
    program = net._forward_programs[(("y",), True)]
    types = [step.op.type for *_, step in program.run]
    # conv + hard-swish in one step; each excitation conv with its bias (the Reshape of a
    # constant runs just before it) and activation in one
    assert types.count("conv") == 3 and "clip" not in types and "div" not in types
    assert "relu" not in types and "hard_sigmoid" not in types
    assert len(program.run) < len(net._forward_programs[(("y",), False)].run) - 6


def test_a_float16_plan_runs_its_regions_op_by_op(tmp_path):
    plan = _plan(tmp_path, HARD_SWISH, dtype=np.float16)
    x = _x(2)
    unfused = plan.forward({"x": x})["out"]
    fused = plan.forward({"x": x}, grad=False)["out"]
    assert fused.dtype == np.float16
    np.testing.assert_array_equal(fused, unfused)
    assert _names(plan) == ["conv", "out"]


def _onnx_net(tmp_path, nodes, x_type, x_shape, y_shape, inits, output="y"):
    """A one-input ONNX model of these nodes, written to ``tmp_path`` and compiled."""
    from onnx import TensorProto, helper
    graph = helper.make_graph(
        nodes, "m", [helper.make_tensor_value_info("x", x_type, x_shape)],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, y_shape)], inits)
    path = tmp_path / "m.onnx"
    path.write_bytes(helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString())
    return flowgrad.compile(flowgrad.load(str(path)))


def _conv_bn(rng, c, **more):
    """A 3 -> ``c`` 3x3 conv's weight and a batch norm's params (and ``more``) as float32
    initializers, with the Conv and BatchNormalization nodes reading them."""
    from onnx import helper, numpy_helper
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in {
        "W": rng.standard_normal((c, 3, 3, 3)), "g": rng.standard_normal(c),
        "beta": rng.standard_normal(c), "mu": rng.standard_normal(c),
        "var": rng.uniform(0.5, 2, c), **more}.items()]
    nodes = [helper.make_node("Conv", ["x", "W"], ["conv"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["conv", "g", "beta", "mu", "var"], ["bn"])]
    return inits, nodes


def _count_folds(monkeypatch) -> list:
    folds = []
    fold = fusion._folded
    monkeypatch.setattr(fusion, "_folded", lambda *a: (folds.append(1), fold(*a))[1])
    return folds


def test_batch_norm_folds_into_a_conv_whose_image_size_is_known_only_at_run_time(
        tmp_path, monkeypatch):
    """An ONNX model's image dims are free: the fold is decided on the run's sizes."""
    from onnx import TensorProto, helper
    c = 6
    inits, nodes = _conv_bn(np.random.default_rng(0), c, three=np.array(3.0),
                            six=np.array(6.0))
    nodes += [helper.make_node("Add", ["bn", "three"], ["a"]),
              helper.make_node("Relu", ["a"], ["cl"]),
              helper.make_node("Mul", ["bn", "cl"], ["m"]),
              helper.make_node("Div", ["m", "six"], ["y"])]
    net = _onnx_net(tmp_path, nodes, TensorProto.FLOAT, ["N", 3, "H", "W"], ["N", c, "H", "W"],
                    inits)
    folds = _count_folds(monkeypatch)
    x = np.random.default_rng(1).standard_normal((1, 3, 10, 14)).astype(np.float32)
    unfused = net.forward({"x": x})["y"]
    fused = net.forward({"x": x}, grad=False)["y"]
    assert folds, "the batch norm is folded into the conv's weights"
    np.testing.assert_allclose(fused, unfused, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch", [1, 3])
def test_a_model_that_fixes_its_batch_fuses_too(tmp_path, monkeypatch, batch):
    """onnx's ResNet-50 fixes its batch at 1 (a Reshape to a constant shape: no free batch
    axis to cut into blocks): its regions run as one block of the whole tensor, the batch norm
    folded into the conv."""
    from onnx import TensorProto, helper, numpy_helper
    c = 5
    rng = np.random.default_rng(0)
    inits, nodes = _conv_bn(rng, c, r=rng.standard_normal((batch, c, 8, 9)))
    inits.append(numpy_helper.from_array(np.array([batch, c * 8 * 9]), "shape"))
    nodes += [helper.make_node("Add", ["bn", "r"], ["a"]),
              helper.make_node("Sigmoid", ["a"], ["s"]),
              helper.make_node("Mul", ["a", "s"], ["y"]),
              helper.make_node("Reshape", ["y", "shape"], ["z"])]
    net = _onnx_net(tmp_path, nodes, TensorProto.FLOAT, [batch, 3, 8, 9], [batch, c * 8 * 9],
                    inits, output="z")
    folds = _count_folds(monkeypatch)
    x = np.random.default_rng(1).standard_normal((batch, 3, 8, 9)).astype(np.float32)
    assert net.graph.dag.nodes["x"]["spec"].shape[0] == batch      # no free batch axis
    unfused = net.forward({"x": x})["z"]
    fused = net.forward({"x": x}, grad=False)["z"]
    assert folds, "the batch norm is folded into the conv's weights"
    np.testing.assert_allclose(fused, unfused, rtol=1e-5, atol=1e-5)
    types = [step.op.type for *_, step in net._forward_programs[(("z",), True)].run]
    assert types == ["conv", "reshape"]


def test_a_dynamically_quantized_conv_runs_as_two_steps(tmp_path):
    """onnxruntime's quantize_dynamic writes ConvInteger -> Add(int32 bias) -> Cast ->
    Mul(scale) -> SiLU: the bias add joins the conv (its bias, cast and reshaped after the
    conv in the file's order, runs just before), the dequantizing cast leads a region of the
    rest."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    c = 4
    inits = [numpy_helper.from_array(rng.integers(0, 255, (c, 2, 3, 3)).astype(np.uint8), "w"),
             numpy_helper.from_array(rng.integers(-100, 100, c).astype(np.int8), "b8"),
             numpy_helper.from_array(np.array([1, c, 1, 1]), "bshape"),
             numpy_helper.from_array(np.array(0.01, np.float32), "scale")]
    nodes = [helper.make_node("ConvInteger", ["x", "w"], ["acc"], pads=[1, 1, 1, 1]),
             helper.make_node("Cast", ["b8"], ["b32"], to=TensorProto.INT32),
             helper.make_node("Reshape", ["b32", "bshape"], ["bias"]),
             helper.make_node("Add", ["acc", "bias"], ["sum"]),
             helper.make_node("Cast", ["sum"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["f", "scale"], ["d"]),
             helper.make_node("Sigmoid", ["d"], ["s"]),
             helper.make_node("Mul", ["d", "s"], ["y"])]
    net = _onnx_net(tmp_path, nodes, TensorProto.UINT8, ["N", 2, 6, 5], ["N", c, 6, 5], inits)
    x = rng.integers(0, 255, (2, 2, 6, 5)).astype(np.uint8)
    fused = net.forward({"x": x}, grad=False)["y"]
    program = net._forward_programs[(("y",), True)]
    runs = [step.nodes for *_, step in program.run]
    assert ("acc", "sum") in runs and ("f", "d", "d#branch", "s", "y") in runs, runs
    net.train()                                     # training mode: nothing fused
    np.testing.assert_array_equal(net.forward({"x": x}, grad=False)["y"], fused)


def test_a_baked_constant_is_used_only_while_it_is_the_operand_given():
    """A region's one-pass program fills a constant operand into its scalar template once;
    given another array in its place (same shape), it fills every column afresh instead."""
    from flowgrad.backend import CPUBackend
    add, mul = REGISTRY.ops["add"](), REGISTRY.ops["mul"]()
    one_pass = fusion._OnePass([(add, (0, None), (False,)), (mul, (1, None), (False,))])
    baked, scale = np.array(2.0, np.float32), np.array([[[[3.0]], [[4.0]]]], np.float32)
    backend = CPUBackend(None, [baked])
    x = np.random.default_rng(0).standard_normal((1, 2, 3, 4)).astype(np.float32)
    for offset in (baked, np.array(5.0, np.float32), baked):
        block = x.copy()
        assert one_pass(block, (offset, scale), 0, 1, backend)
        np.testing.assert_array_equal(block, (x + offset) * scale)
    (layout,) = one_pass.layouts.values()
    assert [k for k, _ in layout.baked] == [0] and [k for _, k, _ in layout.columns] == [1]
