"""beta_swish: y = x * sigmoid(beta * x), with beta a learnable input (Ramachandran et al. 2017).

A drop-in flowgrad plugin: load it with ``flowgrad --plugins plugins/beta_swish.py ...`` or
``flowgrad.make_registry(paths=["plugins/beta_swish.py"])``.  ``beta`` is an input port, not an
attribute, so it can be a param in YAML and is trained like any weight: give it shape ``[1]``
for one shared beta, or ``[features]`` for one per feature.
"""
import numpy as np

import flowgrad
from flowgrad.op import Spec, broadcast_shapes, unbroadcast


class BetaSwish(flowgrad.Op):
    """x * sigmoid(beta * x): a ReLU-like curve whose sharpness beta is learnt."""

    type = "beta_swish"
    inputs = ("x", "beta")
    outputs = ("y",)

    def infer(self, x, beta):
        if broadcast_shapes(x.shape, beta.shape) != x.shape:
            raise flowgrad.ShapeError(f"beta {beta.shape} must broadcast to x {x.shape}")
        return (Spec(x.shape, x.dtype),)

    def forward(self, ctx, x, beta):
        s = 1 / (1 + np.exp(-beta * x))
        ctx.save(x, beta, s)
        return (x * s,)

    def backward(self, ctx, gy):
        x, beta, s = ctx.saved
        ds = s * (1 - s)                       # sigmoid'(beta x)
        gx = gy * (s + beta * x * ds) if ctx.needs_input_grad[0] else None
        gbeta = unbroadcast(gy * x * x * ds, beta.shape) if ctx.needs_input_grad[1] else None
        return gx, gbeta


@flowgrad.hookimpl
def flowgrad_register_ops(ops):
    ops.add(BetaSwish)
