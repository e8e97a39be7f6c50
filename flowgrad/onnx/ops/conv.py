"""Convolutions (flowgrad.ops.conv): flowgrad's ops use ONNX's attribute names."""
from __future__ import annotations

from ..translations import Translations
from ._common import ints, present

T = Translations("conv")

#: the window attributes of convolutions and pools
WINDOW = ("auto_pad", "dilations", "kernel_shape", "pads", "strides")

T.same("Conv", "conv", attrs=WINDOW + ("group",))
T.same("ConvTranspose", "conv_transpose", attrs=WINDOW + ("group", "output_padding",
                                                         "output_shape"))


@T.imports("Col2Im", since=18, static=(1, 2))
def col2im(b, a, ins):
    """image_shape and block_shape are inputs in ONNX; they fix the output's shape, so they
    must be known at load time."""
    image = ints(b.static(ins.need(1, "image_shape"), "Col2Im image_shape"), "Col2Im image_shape")
    block = ints(b.static(ins.need(2, "block_shape"), "Col2Im block_shape"), "Col2Im block_shape")
    return b.final("col2im", [ins.need(0, "input")], image_shape=image, block_shape=block,
                   **present(a, ("dilations", "pads", "strides")))


@T.exports("col2im")
def _col2im(c):
    c.node("Col2Im", [c.ins[0], c.const(list(c.op.image_shape)),
                      c.const(list(c.op.block_shape))], c.outs,
           **{k: list(getattr(c.op, k)) for k in ("dilations", "pads", "strides")
              if getattr(c.op, k)})


T.same("DeformConv", "deform_conv", attrs=("dilations", "group", "kernel_shape", "offset_group",
                                           "pads", "strides"), since=19)


@T.imports("CausalConvWithState", since=27)
def causal_conv_with_state(b, a, ins):
    values = [ins.need(0, "input"), ins.need(1, "weight"), ins.opt(2), ins.opt(3)]
    return b.final("causal_conv_with_state", values, activation=a.string("activation", "none"))


@T.exports("causal_conv_with_state")
def _causal_conv_with_state(c):
    c.node("CausalConvWithState", c.ins, c.outs, opset=27, activation=c.op.activation)
