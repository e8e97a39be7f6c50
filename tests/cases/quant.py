"""Cases for flowgrad/ops/quant.py.

``dequantize_linear`` is differentiable in its scale (checked by finite differences per tensor,
per axis and blocked, with and without a zero point).  The other ops are forward-only (integer
outputs, or a piecewise-constant map): their cases check shape inference, config round-trips
and dtypes.  The straight-through backward of ``quantize_linear`` is a surrogate, which finite
differences of the true (piecewise-constant) function cannot confirm: tests/test_quant.py
checks it against its formula and end to end.

``dynamic_quantize_lstm`` with ``straight_through`` reuses the float lstm's backward; over one
step no dynamic quantizer lies between ``B``, ``initial_c`` or ``P`` and the outputs, so there
finite differences of the op itself confirm those gradients (``wrt``).  Through the quantized
products (``X``, ``initial_h``, longer sequences) the gradient is the straight-through estimate,
checked against the float lstm in tests/test_quant.py.
"""
import numpy as np

from flowgrad.testing import Case, positive


def ints(shape, dtype, low, high):
    """An input maker: integers of ``dtype`` in ``[low, high)``."""
    return lambda rng: rng.integers(low, high, size=shape).astype(dtype)


U8 = np.uint8


def qlstm_case(D, lengths=None, attrs=None, id=""):
    """One step of a dynamic_quantize_lstm (T = 1, batch 3, input 4, hidden 3) with int8
    weights in onnxruntime's (D, inputs, 4H) layout, per-column W scales, every optional input;
    gradients checked for B, initial_c and P."""
    H, I, N = 3, 4, 3
    return Case([(1, N, I), ints((D, I, 4 * H), np.int8, -127, 128),
                 ints((D, H, 4 * H), np.int8, -127, 128), (D, 8 * H), lengths, (D, N, H),
                 (D, N, H), (D, 3 * H), positive((D, 4 * H), 0.005, 0.02),
                 np.zeros((D, 4 * H), np.int8), positive((D,), 0.01, 0.02), np.zeros(D, np.int8)],
                {"straight_through": True, **(attrs or {})}, wrt=(3, 6, 7), id=id)


CASES = {
    "quantize_linear": [
        Case([(3, 4), positive(()), np.asarray(128, U8)], id="per-tensor"),
        Case([(2, 3, 4), positive((3,)), ints((3,), np.int8, -5, 5)], {"axis": 1},
             id="per-axis"),
        Case([(2, 5), positive((2, 3))], {"axis": 1, "block_size": 2,
                                          "output_dtype": "int16"}, id="blocked-no-zp"),
    ],
    "dequantize_linear": [
        Case([ints((3, 4), U8, 0, 256), positive(()), np.asarray(128, U8)], id="per-tensor"),
        Case([ints((2, 3, 4), np.int8, -128, 128), positive((3,)),
              ints((3,), np.int8, -5, 5)], {"axis": 1}, id="per-axis"),
        Case([ints((2, 5), np.int16, -300, 300), positive((2, 2))],
             {"axis": -1, "block_size": 3}, id="blocked-no-zp"),
        Case([ints((4, 3), np.int32, -1000, 1000), positive(())], id="int32"),
    ],
    "dynamic_quantize_linear": [Case([(3, 4)])],
    "matmul_integer": [
        Case([ints((3, 4), U8, 0, 256), ints((4, 2), np.int8, -128, 128),
              np.asarray(7, U8), ints((2,), np.int8, -3, 3)]),
    ],
    "qlinear_matmul": [
        Case([ints((3, 4), U8, 0, 256), np.asarray(0.02), np.asarray(100, U8),
              ints((4, 2), np.int8, -128, 128), positive((2,), 0.01, 0.02),
              np.zeros(2, np.int8), np.asarray(0.5), np.asarray(3, np.int8)]),
    ],
    "conv_integer": [
        Case([ints((2, 2, 5, 5), U8, 0, 256), ints((3, 2, 3, 3), U8, 0, 256),
              np.asarray(9, U8), np.asarray(120, U8)], {"pads": [1, 1, 1, 1]}),
    ],
    "qlinear_conv": [
        Case([ints((2, 2, 5, 5), U8, 0, 256), np.asarray(0.05), np.asarray(128, U8),
              ints((4, 2, 3, 3), np.int8, -128, 128), positive((4,), 0.001, 0.01),
              np.zeros(4, np.int8), np.asarray(0.1), np.asarray(10, U8),
              ints((4,), np.int32, -500, 500)], {"strides": [2, 2]}),
    ],
    "qgemm": [
        Case([ints((3, 4), U8, 0, 256), np.asarray(0.02), np.asarray(100, U8),
              ints((2, 4), np.int8, -128, 128), positive((2,), 0.01, 0.02),
              np.zeros(2, np.int8), ints((2,), np.int32, -500, 500), np.asarray(0.5),
              np.asarray(3, U8)], {"transB": True}, id="requantized"),
        Case([ints((4, 3), np.int8, -128, 128), np.asarray(0.02), np.asarray(1, np.int8),
              ints((4, 2), np.int8, -128, 128), np.asarray(0.01), np.asarray(0, np.int8)],
             {"transA": True, "alpha": 0.5}, id="float-output"),
    ],
    "qlinear_add": [
        Case([ints((2, 3, 4), U8, 0, 256), np.asarray(0.03), np.asarray(7, U8),
              ints((3, 1), U8, 0, 256), np.asarray(0.02), np.asarray(130, U8),
              np.asarray(0.05), np.asarray(120, U8)]),
    ],
    "qlinear_global_average_pool": [
        Case([ints((2, 3, 4, 5), np.int8, -128, 128), np.asarray(0.03), np.asarray(-3, np.int8),
              np.asarray(0.01), np.asarray(5, np.int8)]),
    ],
    "qlinear_concat": [
        Case([np.asarray(0.05), np.asarray(3, U8), ints((2, 3, 4), U8, 0, 256),
              np.asarray(0.04), np.asarray(7, U8), ints((2, 2, 4), U8, 0, 256),
              np.asarray(0.05), np.asarray(3, U8)], {"axis": 1}),
    ],
    "qlinear_leaky_relu": [
        Case([ints((3, 4), np.int8, -128, 128), np.asarray(0.03), np.asarray(2, np.int8),
              np.asarray(0.02), np.asarray(-5, np.int8)], {"alpha": 0.1}),
    ],
    "qlinear_mul": [
        Case([ints((2, 3, 4), np.int8, -128, 128), np.asarray(0.03), np.asarray(7, np.int8),
              ints((3, 1), np.int8, -128, 128), np.asarray(0.02), np.asarray(-3, np.int8),
              np.asarray(0.05), np.asarray(1, np.int8)]),
    ],
    "qlinear_average_pool": [
        Case([ints((2, 3, 5, 6), U8, 0, 256), np.asarray(0.03), np.asarray(7, U8),
              np.asarray(0.02), np.asarray(100, U8)],
             {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [2, 2]}),
    ],
    "dynamic_quantize_lstm": [
        qlstm_case(1, id="forward"),
        qlstm_case(2, np.asarray([1, 0, 1], np.int32), {"direction": "bidirectional"},
                   id="bidirectional-lengths"),
        qlstm_case(1, None, {"direction": "reverse", "clip": 1.5, "input_forget": True},
                   id="reverse-clip-input-forget"),
    ],
}
