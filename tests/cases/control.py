"""Cases for flowgrad/ops/control.py: if, loop and scan, with bodies written in their plain form
(inputs, consts, nodes, outputs: what ``config()`` gives and YAML holds).  Each body reads an
outer value (the last inputs), so its gradient is summed over the iterations."""
import numpy as np

from flowgrad.testing import Case

F = "float64"


def body(inputs, nodes, outputs, consts=()):
    """A plain body: ``inputs`` (name, shape, dtype), ``nodes`` (name, op, [source node or
    (node, port)], attrs), ``outputs`` (node or (node, port))."""
    def ref(src):
        return [src, 0] if isinstance(src, str) else list(src)
    return {"inputs": [[n, list(s), d] for n, s, d in inputs],
            "consts": [[n, d, list(np.shape(v)), np.ravel(v).tolist()] for n, d, v in consts],
            "nodes": [[n, op, [ref(s) for s in srcs], attrs] for n, op, srcs, attrs in nodes],
            "outputs": [ref(o) for o in outputs]}


# h <- tanh(h @ W + x_i) with x_i the i-th row of an outer value; outputs cond, h, and h as scan
_RNN_LOOP = body(
    [("i", (), "int64"), ("c", (), "bool"), ("h", (None, 3), F), ("W", (3, 3), F),
     ("X", (4, 3), F)],
    [("row", "gather", ["X", "i"], {"axis": 0}),
     ("hw", "matmul", ["h", "W"], {}),
     ("pre", "add", ["hw", "row"], {}),
     ("h2", "tanh", ["pre"], {}),
     ("two", "less", ["i", "limit"], {})],
    ["two", "h2", "h2"],
    consts=[("limit", "int64", np.array(2))])

# a while loop: the condition (i < 2) ends it after 3 iterations, whatever M says
_SCALE_LOOP = body(
    [("i", (), "int64"), ("c", (), "bool"), ("v", (None,), F), ("a", (None,), F)],
    [("va", "mul", ["v", "a"], {}), ("s", "sin", ["va"], {}), ("go", "less", ["i", "limit"], {})],
    ["go", "s"],
    consts=[("limit", "int64", np.array(2))])

# s <- s * x_t + w ; y_t = s
_SCAN = body(
    [("s", (2,), F), ("x", (2,), F), ("w", (2,), F)],
    [("sx", "mul", ["s", "x"], {}), ("s2", "add", ["sx", "w"], {}), ("y", "tanh", ["s2"], {})],
    ["s2", "y"])

_THEN = body([("x", (None, 3), F), ("w", (3,), F)], [("y", "mul", ["x", "w"], {})], ["y"])
_ELSE = body([("x", (None, 3), F), ("w", (3,), F)],
             [("y", "add", ["x", "w"], {}), ("z", "exp", ["y"], {})], ["z"])

CASES = {
    "loop": [
        Case([np.array(4, np.int64), np.array(True), (2, 3), (3, 3), (4, 3)],
             {"body": _RNN_LOOP, "num_carried": 1}, id="rnn-M-and-cond"),
        Case([np.array(4, np.int64), (2, 3), (3, 3), (4, 3)],
             {"body": _RNN_LOOP, "num_carried": 1, "condition": False}, id="for-loop"),
        Case([np.array(True), (5,), (5,)],
             {"body": _SCALE_LOOP, "num_carried": 1, "trip_count": False}, id="while-loop"),
        Case([np.array(0, np.int64), (5,), (5,)],
             {"body": _SCALE_LOOP, "num_carried": 1, "condition": False}, id="zero-trips"),
    ],
    "scan": [
        Case([(2,), (4, 2), (2,)], {"body": _SCAN, "num_scan_inputs": 1, "num_outer": 1},
             id="forward"),
        Case([(2,), (2, 5), (2,)],
             {"body": _SCAN, "num_scan_inputs": 1, "num_outer": 1, "scan_input_axes": [1],
              "scan_input_directions": [1], "scan_output_axes": [-1],
              "scan_output_directions": [1]}, id="axes-reversed"),
        Case([(3, 2), (3, 4, 2), (2,)], {"body": _SCAN, "num_scan_inputs": 1, "num_outer": 1,
                                        "batch_axis": True}, id="scan8-batch"),
    ],
    "if": [
        Case([np.array(True), (2, 3), (3,)], {"then_branch": _THEN, "else_branch": _ELSE},
             id="then"),
        Case([np.array([False]), (2, 3), (3,)], {"then_branch": _THEN, "else_branch": _ELSE},
             id="else"),
    ],
}


# -- sequence and optional ops (flowgrad/ops/sequence.py): forward only -------------------

def _seq(*shapes):
    """An input maker: a boxed sequence of standard-normal float32 arrays (the ops that take a
    tensor out declare float32, the network precision)."""
    from flowgrad.ops.sequence import box
    return lambda rng: box([rng.standard_normal(s).astype(np.float32) for s in shapes])


def _opt(shape):
    from flowgrad.ops.sequence import box
    return lambda rng: box(None if shape is None else
                           rng.standard_normal(shape).astype(np.float32))


I64 = np.int64
CASES.update({
    "sequence_construct": [Case([(2, 3), (4, 3)])],
    "sequence_insert": [Case([_seq((2,), (3,)), (4,), np.array(1, I64)], id="middle"),
                        Case([_seq((2,)), (4,), None], id="end")],
    "sequence_erase": [Case([_seq((2,), (3,), (1,)), np.array(-3, I64)], id="first"),
                       Case([_seq((2,), (3,)), None], id="last")],
    "sequence_length": [Case([_seq((2,), (3,), (1,))])],
    "sequence_at": [Case([_seq((2, 3), (4, 3)), np.array(-1, I64)],
                         {"shape": [None, 3], "dtype": "float32"})],
    "concat_from_sequence": [
        Case([_seq((2, 3), (4, 3))], {"axis": 0, "shape": [None, 3], "dtype": "float32"},
             id="concat"),
        Case([_seq((2, 3), (2, 3))], {"axis": -1, "new_axis": True, "shape": [2, 3, None],
                                      "dtype": "float32"}, id="stack-last")],
    "split_to_sequence": [Case([(5, 2), np.array(2, I64)], id="chunks"),
                          Case([(3, 4), None], {"axis": 1, "keepdims": False}, id="squeezed"),
                          Case([(5, 2), np.array([1, 4], I64)], id="lengths")],
    "optional": [Case([(2, 3)], id="tensor"), Case([None], id="empty")],
    "optional_has_element": [Case([_opt((2,))], id="full"), Case([_opt(None)], id="empty")],
    "optional_get_element": [Case([_opt((2, 3))], {"shape": [None, 3], "dtype": "float32"},
                                  id="tensor"),
                             Case([_seq((2,), (1,))], id="sequence")],
})

_DOUBLE = body([("x", (None,), "float32"), ("w", (None,), "float32")],
               [("y", "add", ["x", "w"], {}), ("n", "shape", ["y"], {})], ["y", "n"])
CASES["sequence_map"] = [
    Case([_seq((3,), (3,)), (3,)], {"body": _DOUBLE}, id="sequence-and-tensor"),
    Case([_seq((2,), (2,), (2,)), _seq((2,), (2,), (2,))], {"body": _DOUBLE},
         id="two-sequences")]


# -- if_per_shape: an If whose then branch squeezes or not by a dim (PyTorch's traced
# ``x.squeeze(1)``), then unsqueezes or not by the rank, as Silero VAD's decoder does --------

def squeeze_or_not_branches() -> dict:
    """The two branches of an If reading outer ``x`` (float, ``[N, T]``) and ``a`` (scalar):
    then ``sum(tanh(u * a), axis 1)`` where ``u`` is ``x`` squeezed on axis 1 when ``T == 1``
    (rank 1, an If on ``Shape(x)[1] == 1``) and unsqueezed back when its rank is 1 (an If on
    ``Size(Shape(v)) == 1``); else ``sum(sigmoid(x) * a, axis 1)``.  Both give ``[N, 1]``.
    The names are unique in the model (onnxruntime refuses shadowed names)."""
    from onnx import TensorProto as TP
    from onnx import helper as h
    from onnx import numpy_helper

    def vi(name, shape=None):
        return h.make_tensor_value_info(name, TP.FLOAT, shape)

    def ints(name, value):
        return h.make_node("Constant", [], [name],
                           value=numpy_helper.from_array(np.array(value, np.int64), name))

    squeeze = h.make_graph([ints("sq_axes", [1]), h.make_node("Squeeze", ["x", "sq_axes"],
                                                               ["x_squeezed"])],
                           "squeeze", [], [vi("x_squeezed")])
    keep = h.make_graph([h.make_node("Identity", ["x"], ["x_kept"])], "keep", [], [vi("x_kept")])
    unsqueeze = h.make_graph([ints("unsq_axes", [1]), h.make_node("Unsqueeze", ["v", "unsq_axes"],
                                                                   ["v_unsqueezed"])],
                             "unsqueeze", [], [vi("v_unsqueezed")])
    keep2 = h.make_graph([h.make_node("Identity", ["v"], ["v_kept"])], "keep2", [],
                         [vi("v_kept")])
    then = h.make_graph(
        [h.make_node("Shape", ["x"], ["x_shape"]), ints("one", 1),
         h.make_node("Gather", ["x_shape", "one"], ["t"]),
         h.make_node("Equal", ["t", "one"], ["t_is_1"]),
         h.make_node("If", ["t_is_1"], ["v"], then_branch=squeeze, else_branch=keep),
         h.make_node("Shape", ["v"], ["v_shape"]), h.make_node("Size", ["v_shape"], ["rank"]),
         h.make_node("Equal", ["rank", "one"], ["rank_is_1"]),
         h.make_node("If", ["rank_is_1"], ["u"], then_branch=unsqueeze, else_branch=keep2),
         h.make_node("Mul", ["u", "a"], ["ua"]), h.make_node("Tanh", ["ua"], ["th"]),
         ints("sum_axes", [1]),
         h.make_node("ReduceSum", ["th", "sum_axes"], ["y_then"], keepdims=1)],
        "then", [], [vi("y_then", [None, 1])])
    other = h.make_graph(
        [h.make_node("Sigmoid", ["x"], ["sg"]), h.make_node("Mul", ["sg", "a"], ["sga"]),
         ints("sum_axes_else", [1]),
         h.make_node("ReduceSum", ["sga", "sum_axes_else"], ["y_else"], keepdims=1)],
        "else", [], [vi("y_else", [None, 1])])
    return {"then_branch": then, "else_branch": other}


def per_shape_attr() -> str:
    """``if_per_shape``'s ``model`` attribute for the If of :func:`squeeze_or_not_branches`."""
    import base64

    from onnx import TensorProto as TP
    from onnx import helper as h
    graph = h.make_graph(
        [h.make_node("If", ["cond"], ["y0"], **squeeze_or_not_branches())], "if_per_shape",
        [h.make_tensor_value_info("cond", TP.BOOL, None),
         h.make_tensor_value_info("x", TP.FLOAT, [None, None]),
         h.make_tensor_value_info("a", TP.FLOAT, [])],
        [h.make_tensor_value_info("y0", TP.FLOAT, [None, 1])])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    return base64.b64encode(model.SerializeToString()).decode("ascii")


_PER_SHAPE = {"model": per_shape_attr()}
CASES["if_per_shape"] = [
    Case([np.array(True), (3, 1), ()], _PER_SHAPE, id="then-squeezed"),
    Case([np.array(True), (3, 4), ()], _PER_SHAPE, id="then-kept"),
    Case([np.array([False]), (3, 1), ()], _PER_SHAPE, id="else"),
]
