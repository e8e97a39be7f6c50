"""Convolutions (flowgrad.ops.conv): flowgrad's ops use ONNX's attribute names."""
from __future__ import annotations

from ..translations import Translations

T = Translations("conv")

#: the window attributes of convolutions and pools
WINDOW = ("auto_pad", "dilations", "kernel_shape", "pads", "strides")

T.same("Conv", "conv", attrs=WINDOW + ("group",))
T.same("ConvTranspose", "conv_transpose", attrs=WINDOW + ("group", "output_padding",
                                                         "output_shape"))
