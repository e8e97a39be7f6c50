"""The ONNX boundary under hostile input: every structural problem is a located message (ONNX
node name and op type, or the initializer or value, and what to do), reported together; huge
declarations are refused before anything is allocated; external data is read only from the
model's folder."""
from __future__ import annotations

import hashlib
import os
import resource
import sys
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import flowgrad
from flowgrad.errors import GraphError
from flowgrad.onnx import Translations, tensors


def model(nodes, inputs=None, outputs=("y",), initializers=(), opset=17, domains=()):
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])] \
        if inputs is None else inputs
    graph = helper.make_graph(
        nodes, "t", inputs, [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
                             for o in outputs], initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]
                             + [helper.make_opsetid(d, 1) for d in domains])


def weight(name="W", shape=(2, 3, 3, 3)):
    return numpy_helper.from_array(np.ones(shape, np.float32), name)


def problems(source, **kw) -> str:
    with pytest.raises(GraphError) as info:
        flowgrad.load(source, **kw)
    return str(info.value)


# -- nodes: arity and attributes, against the op's schema --------------------------------------

def test_a_missing_input_names_node_op_and_input():
    m = model([helper.make_node("Conv", ["x"], ["y"], name="conv_3")])
    text = problems(m)
    assert "ONNX node 'conv_3' (Conv, opset 17): has 1 input(s); Conv-11 takes 2 to 3" in text


def test_an_empty_required_input_is_named():
    m = model([helper.make_node("Conv", ["x", ""], ["y"], name="conv_3")])
    assert "ONNX node 'conv_3' (Conv, opset 17): needs input 1 (W), which is empty; connect " \
           "a value to it" in problems(m)


def test_a_missing_required_attribute():
    m = model([helper.make_node("Cast", ["x"], ["y"], name="to_int")])
    assert "ONNX node 'to_int' (Cast, opset 17): needs attribute 'to'; add it" in problems(m)


def test_an_attribute_of_the_wrong_type():
    m = model([helper.make_node("Conv", ["x", "W"], ["y"], name="c", pads="same")],
              initializers=[weight()])
    assert "ONNX node 'c' (Conv, opset 17): attribute 'pads' must be of type ints, not " \
           "string; fix its type" in problems(m)


def test_an_attribute_given_twice():
    node = helper.make_node("Relu", ["x"], ["y"], name="r")
    node.attribute.extend([helper.make_attribute("alpha", 1.0)] * 2)
    assert "attribute 'alpha' is given twice" in problems(model([node]))


def test_an_attribute_that_is_not_utf8():
    node = helper.make_node("Pad", ["x", "pads"], ["y"], name="pad_1", mode="XXXX")
    pads = numpy_helper.from_array(np.zeros(8, np.int64), "pads")
    data = model([node], initializers=[pads]).SerializeToString().replace(b"XXXX", b"\xff\xfe"
                                                                                 b"\xfd\xfc")
    assert "ONNX node 'pad_1' (Pad, opset 17): attribute 'mode' is not UTF-8 text" \
        in problems(data)


def test_a_name_that_is_not_utf8():
    data = model([helper.make_node("Relu", ["x"], ["y"], name="QQQQ")]).SerializeToString()
    text = problems(data.replace(b"QQQQ", b"\xff\xfe\xfd\xfc"))
    assert "model.graph.node[0].name is not valid UTF-8 text" in text


def test_the_handlers_accessors_name_what_is_missing():
    """Ops without a schema (plugins, other domains) are checked by the handler's accessors."""
    T = Translations("needs_b")

    @T.imports("Affine", domain="com.example")
    def _affine(b, a, ins):
        x, w, bias = ins.need(0, "X"), ins.need(1, "W"), ins.need(2, "B")
        return b.final("add", [b.op("mul", [x, w])[0], bias], )

    class Plugin:
        @flowgrad.hookimpl
        def flowgrad_register_onnx(self, onnx):
            onnx.add(T)

    registry = flowgrad.make_registry(plugins=[Plugin()])
    node = helper.make_node("Affine", ["x", "x"], ["y"], name="affine_1", domain="com.example")
    text = problems(model([node], domains=["com.example"]), registry=registry)
    assert "ONNX node 'affine_1' (Affine, opset 1): needs input 2 (B); the node has 2 " \
           "input(s)" in text


def test_typed_attribute_readers():
    from flowgrad.onnx.access import Attrs
    from flowgrad.onnx.builder import ImportProblem
    a = Attrs(helper.make_node("X", [], [], axis=1, pads=[1, 2], alpha=0.5, mode="edge"))
    assert (a.int("axis"), a.ints("pads"), a.float("alpha"), a.string("mode")) == \
        (1, [1, 2], 0.5, "edge")
    assert a.int("missing", 7) == 7 and a.float("axis") == 1.0 and a.get("mode") == "edge"
    with pytest.raises(ImportProblem, match="attribute 'mode' must be an int, not a string"):
        a.int("mode")
    with pytest.raises(ImportProblem, match="needs attribute 'k'; add it"):
        a.int("k")


def test_a_built_in_handler_checks_load_time_values():
    k = numpy_helper.from_array(np.array([1.5], np.float32), "k")
    m = model([helper.make_node("TopK", ["x", "k"], ["y", "i"], name="top")],
              outputs=("y",), initializers=[k])
    assert "ONNX node 'top' (TopK, opset 17): TopK k must be an integer" in problems(m)


def test_problems_of_several_nodes_are_reported_together():
    m = model([helper.make_node("Conv", ["x"], ["h"], name="a"),
               helper.make_node("Cast", ["h"], ["y"], name="b")])
    text = problems(m)
    assert "ONNX node 'a' (Conv" in text and "ONNX node 'b' (Cast" in text
    assert text.endswith("2 errors")


def test_an_odd_opset_and_an_empty_model():
    assert "opset versions start at 1" in problems(model([helper.make_node("Relu", ["x"], ["y"])],
                                                         opset=0))
    assert "declares no graph outputs" in problems(b"")


# -- tensors: element types, dims, data sizes, memory ------------------------------------------

def relu_with(init):
    return model([helper.make_node("Add", ["x", init.name], ["y"], name="add")],
                 initializers=[init])


def test_unknown_and_numpy_less_element_types():
    w = weight(shape=(4,))
    w.data_type = 99
    assert "initializer 'W' has element type unknown element type 99" in problems(relu_with(w))
    w.data_type = TensorProto.BFLOAT16
    assert "initializer 'W' has element type BFLOAT16, which flowgrad cannot compute with" \
        in problems(relu_with(w))


def test_raw_data_of_the_wrong_size():
    w = weight(shape=(4,))
    w.raw_data = w.raw_data[:5]
    assert "initializer 'W' has 5 bytes of raw data, but its dims [4] and type FLOAT need 16; " \
           "the file is truncated" in problems(relu_with(w))


def test_typed_data_of_the_wrong_count_and_negative_dims():
    w = helper.make_tensor("W", TensorProto.FLOAT, [2], [1.0, 2.0])
    w.dims[:] = [2, 3]
    assert "holds 2 values in float_data, but its dims [2, 3] need 6" in problems(relu_with(w))
    w = weight(shape=(2, 3))
    w.dims[1] = -3
    assert "initializer 'W' has negative dims [2, -3]" in problems(relu_with(w))


def test_graph_inputs_with_bad_types_or_dims():
    x = helper.make_tensor_value_info("x", TensorProto.STRING, ["N", 3])
    assert "graph input 'x' has element type STRING" in problems(
        model([helper.make_node("Relu", ["x"], ["y"])], inputs=[x]))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", -3])
    assert "graph input 'x' has negative dims" in problems(
        model([helper.make_node("Relu", ["x"], ["y"])], inputs=[x]))


def test_a_huge_declared_initializer_is_refused_before_allocation():
    w = weight(shape=(4,))
    w.dims[:] = [10**6, 10**6]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    text = problems(relu_with(w))
    assert time.perf_counter() - start < 2.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000   # KiB
    assert "initializer 'W' declares 1000000000000 elements (3.6 TiB), over flowgrad's bound" \
        in text


def test_initializers_over_the_bound_together(monkeypatch):
    monkeypatch.setattr(tensors, "MAX_BYTES", 100)
    inits = [weight("A", (20,)), weight("B", (20,))]
    m = model([helper.make_node("Sum", ["x", "A", "B"], ["y"])], initializers=inits)
    assert "the model's initializers take 160 B, over flowgrad's bound of 100 B" in problems(m)


def test_a_folded_value_over_the_bound_is_refused_before_it_is_built():
    shape = numpy_helper.from_array(np.array([10**6, 10**6], np.int64), "shape")
    m = model([helper.make_node("ConstantOfShape", ["shape"], ["c"], name="zeros"),
               helper.make_node("Add", ["x", "c"], ["y"])], initializers=[shape])
    start = time.perf_counter()
    text = problems(m)
    assert time.perf_counter() - start < 2.0
    assert "ONNX node 'zeros' (ConstantOfShape, opset 17): ConstantOfShape's output would have " \
           "shape [1000000, 1000000] (3.6 TiB), over flowgrad's bound" in text


# -- external data -----------------------------------------------------------------------------

@pytest.fixture
def external(tmp_path):
    """A model folder with an MLP whose weights live in ``weights.bin``; returns a function
    writing a variant (``edit(tensor_entries)``) and returning its path."""
    folder = tmp_path / "model"
    folder.mkdir()
    W = np.arange(12, dtype=np.float32).reshape(4, 3)
    init = numpy_helper.from_array(W, "W")
    (folder / "weights.bin").write_bytes(init.raw_data)
    init.ClearField("raw_data")
    init.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "weights.bin"), ("offset", "0"), ("length", "48")):
        entry = init.external_data.add()
        entry.key, entry.value = key, value
    base = helper.make_model(helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])], "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], initializer=[init]),
        opset_imports=[helper.make_opsetid("", 17)])

    def variant(**entries):
        m = onnx.ModelProto()
        m.CopyFrom(base)
        data = m.graph.initializer[0].external_data
        for key, value in entries.items():
            matches = [e for e in data if e.key == key]
            entry = matches[0] if matches else data.add()
            entry.key, entry.value = key, value
        path = folder / "m.onnx"
        onnx.save(m, path)
        return str(path)

    variant.folder = folder
    variant.W = W
    return variant


def test_external_data_is_read(external):
    g = flowgrad.load(external())
    np.testing.assert_array_equal(g.value_of("W"), external.W)
    digest = hashlib.sha1(external.W.tobytes()).hexdigest()
    np.testing.assert_array_equal(flowgrad.load(external(checksum=digest)).value_of("W"),
                                  external.W)


@pytest.mark.parametrize("entries,message", [
    ({"offset": "-1"}, "external data offset '-1' is not a non-negative integer"),
    ({"offset": "1.5"}, "external data offset '1.5' is not a non-negative integer"),
    ({"length": "abc"}, "external data length 'abc' is not a non-negative integer"),
    ({"length": "4"}, "external data length 4 does not match the 48 bytes its dims [4, 3]"),
    ({"length": str(2**62)}, "does not match the 48 bytes"),
    ({"offset": "8"}, "reaches past the end of 'weights.bin' (48 bytes)"),
    ({"offset": "4096"}, "external data offset 4096 is past the end of 'weights.bin'"),
    ({"location": "weights.bin\x00.txt"}, "contains a NUL character"),
    ({"location": "../weights.bin"}, "leads outside the model's folder"),
    ({"location": "/etc/hostname"}, "is an absolute path, outside the model's folder"),
    ({"location": "missing.bin"}, "needs external file 'missing.bin', which is not a file"),
    ({"location": ""}, "external data has no location"),
    ({"checksum": "0" * 40}, "checksum of its external data does not match"),
    ({"basepath": "/"}, "unknown external data key(s) 'basepath'"),
])
def test_external_data_mistakes_are_named(external, entries, message):
    text = problems(external(**entries))
    assert "tensor 'W': " in text and message in text


def test_a_symlink_out_of_the_folder_is_refused_and_never_opened(external, tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.ones(12, np.float32).tobytes())
    os.symlink(secret, external.folder / "link.bin")
    opened = []

    def audit(event, args):
        if event == "open" and args and str(args[0]).endswith("secret.bin"):
            opened.append(args[0])

    sys.addaudithook(audit)
    text = problems(external(location="link.bin"))
    assert "resolves (through a symlink) to" in text and "outside the model's folder" in text
    assert not opened


def test_nothing_is_left_to_onnx_external_data_helper(external, monkeypatch):
    """flowgrad reads external data itself, so onnx's checks (which differ between the onnx
    versions pyproject allows, 1.16 on) are never relied on."""
    def refuse(*args, **kwargs):
        raise AssertionError("onnx's external data loader was called")

    for name in ("load_external_data_for_model", "load_external_data_for_tensor"):
        monkeypatch.setattr(onnx.external_data_helper, name, refuse)
    np.testing.assert_array_equal(flowgrad.load(external()).value_of("W"), external.W)


def test_in_memory_model_with_external_data_needs_base_dir(external):
    m = onnx.load(external(), load_external_data=False)
    assert "pass base_dir=" in problems(m)
    g = flowgrad.load(m, base_dir=str(external.folder))
    np.testing.assert_array_equal(g.value_of("W"), external.W)
