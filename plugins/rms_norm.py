"""rms_norm: y = x / sqrt(mean(x^2, last axis) + eps) * gain (Zhang & Sennrich 2019).

An op with a non-trivial backward: every output depends on every input of its row.  With
n = x / r and r = sqrt(mean(x^2) + eps), the chain rule through r gives

    dL/dx = (dL/dn - n * mean(dL/dn * n)) / r,      dL/dn = dL/dy * gain

which costs two passes over x instead of a (features x features) Jacobian.

The op also imports from and exports to ONNX as a node of this plugin's own domain
(``com.example::RMSNorm``): see the translations at the end, and docs/onnx.md.
"""
import numpy as np

import flowgrad
from flowgrad.onnx import Translations
from flowgrad.op import Spec, format_shape


class RMSNorm(flowgrad.Op):
    """Scales each row (last axis) of x to unit root-mean-square, then by a learnt gain."""

    type = "rms_norm"
    inputs = ("x", "gain")
    outputs = ("y",)
    attrs = {"eps": flowgrad.Attr("float", 1e-6, doc="added to the mean square, for stability")}

    def check(self):
        if self.eps < 0:
            raise flowgrad.AttrError("eps must be >= 0", attr="eps")

    def infer(self, x, gain):
        if x.ndim < 1:      # a scalar has no row to normalize (and no last axis to name)
            raise flowgrad.ShapeError(f"x must have at least one axis (the rows to normalize "
                                      f"are along its last); got a scalar {format_shape(x.shape)}")
        # None is a dim known only at run time (the batch axis, or any axis of an ONNX model)
        if gain.ndim != 1 or None not in (gain.shape[0], x.shape[-1]) \
                and gain.shape[0] != x.shape[-1]:
            raise flowgrad.ShapeError(f"gain must have shape ({x.shape[-1]},), the last axis of "
                                      f"x {format_shape(x.shape)}; got {format_shape(gain.shape)}")
        return (Spec(x.shape, x.dtype),)

    def forward(self, ctx, x, gain):
        r = np.sqrt((x * x).mean(axis=-1, keepdims=True) + self.eps)
        n = x / r
        ctx.save(n, r, gain)
        return (n * gain,)

    def backward(self, ctx, gy):
        n, r, gain = ctx.saved
        gx = ggain = None
        if ctx.needs_input_grad[0]:
            gn = gy * gain
            gx = (gn - n * (gn * n).mean(axis=-1, keepdims=True)) / r
        if ctx.needs_input_grad[1]:
            ggain = (gy * n).reshape(-1, n.shape[-1]).sum(axis=0)
        return gx, ggain


@flowgrad.hookimpl
def flowgrad_register_ops(ops):
    ops.add(RMSNorm)


#: the ONNX domain of this plugin's nodes (a model using them imports it at version 1)
DOMAIN = "com.example"
T = Translations("rms_norm")


@T.imports("RMSNorm", domain=DOMAIN)
def _import_rms_norm(b, attrs, inputs):
    return b.final("rms_norm", inputs, eps=attrs.get("eps", 1e-6))


@T.exports("rms_norm")
def _export_rms_norm(c):
    c.node("RMSNorm", c.ins, c.outs, domain=DOMAIN, eps=c.op.eps)


@flowgrad.hookimpl
def flowgrad_register_onnx(onnx):
    onnx.add(T)
