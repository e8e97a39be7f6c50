"""flowgrad-example-package: the snake activation, shared as a pip package.

Packaging a plugin is the drop-in file plus a ``pyproject.toml`` declaring an entry point in the
``flowgrad`` group that names this module.  Once installed, flowgrad loads it automatically
(``flowgrad --no-autoload`` or ``FLOWGRAD_DISABLE_PLUGIN_AUTOLOAD=1`` turn that off), and
``flowgrad plugins`` shows the package and version it came from.
"""
import numpy as np

import flowgrad
from flowgrad.op import Spec, broadcast_shapes, unbroadcast


class Snake(flowgrad.Op):
    """x + sin(alpha x)^2 / alpha (Ziyin et al. 2020): a periodic activation that extrapolates
    periodic signals; ``alpha`` (the frequency) is a learnable input, one per feature."""

    type = "snake"
    inputs = ("x", "alpha")
    outputs = ("y",)

    def infer(self, x, alpha):
        if broadcast_shapes(x.shape, alpha.shape) != x.shape:
            raise flowgrad.ShapeError(f"alpha {alpha.shape} must broadcast to x {x.shape}")
        return (Spec(x.shape, x.dtype),)

    def forward(self, ctx, x, alpha):
        sin = np.sin(alpha * x)
        ctx.save(x, alpha, sin)
        return (x + sin * sin / alpha,)

    def backward(self, ctx, gy):
        x, alpha, sin = ctx.saved
        sin2 = np.sin(2 * alpha * x)               # d/dx sin^2(ax) / a = sin(2ax)
        gx = gy * (1 + sin2) if ctx.needs_input_grad[0] else None
        galpha = None
        if ctx.needs_input_grad[1]:                # d/da sin^2(ax)/a = x sin(2ax)/a - sin^2(ax)/a^2
            galpha = unbroadcast(gy * (x * sin2 / alpha - sin * sin / (alpha * alpha)),
                                 alpha.shape)
        return gx, galpha


@flowgrad.hookimpl
def flowgrad_register_ops(ops):
    ops.add(Snake)
