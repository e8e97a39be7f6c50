"""flowgrad-example-package: the snake activation and what goes with it, shared as a pip package.

Packaging a plugin is the drop-in file plus a ``pyproject.toml`` declaring an entry point in the
``flowgrad`` group that names this module.  Once installed, flowgrad loads it automatically
(``flowgrad --no-autoload`` or ``FLOWGRAD_DISABLE_PLUGIN_AUTOLOAD=1`` turn that off), and
``flowgrad plugins`` shows the package and version it came from and what it contributes.

One module contributes one extension of each common kind, through the same hooks flowgrad's
built-ins use: the ``snake`` op, its ONNX import and export (in this package's own ONNX domain),
a ``sign_sgd`` optimizer, an ``energy`` visualization objective, and a ``sine_waves`` data set.
"""
import numpy as np

import flowgrad
from flowgrad.data import Dataset
from flowgrad.onnx import Translations
from flowgrad.op import Spec, broadcast_shapes, unbroadcast
from flowgrad.optim import Optimizer
from flowgrad.visualize.objectives import Objective

#: the ONNX domain snake nodes are exported in (and imported from)
DOMAIN = "org.example.snake"


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


ONNX = Translations("snake")


@ONNX.imports("Snake", domain=DOMAIN)
def import_snake(b, attrs, inputs):
    return b.op("snake", inputs[:2])


@ONNX.exports("snake")
def export_snake(c):
    c.node("Snake", c.ins, c.outs, domain=DOMAIN)


class SignSGD(Optimizer):
    """Step every leaf by ``lr`` times the sign of its gradient (plus decay)."""

    kind = "sign_sgd"

    def update(self, name, leaf, grad, state, lr, decay):
        leaf -= lr * np.sign(grad + decay * leaf)


class Energy(Objective):
    """The mean square of a value, per image: ``energy(node)``."""

    def __init__(self, ref):
        self.refs = (ref,)

    def __call__(self, acts):
        a = acts[self.refs[0]]
        size = a[0].size
        return (a.reshape(len(a), -1) ** 2).sum(axis=1) / size, {self.refs[0]: 2 * a / size}


def sine_waves(spec):
    """256 seeded samples of 16 points of a sine wave; the label is its frequency class (0-3)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 256)
    t = np.linspace(0, 1, 16, dtype=np.float32)
    phase = rng.uniform(0, 2 * np.pi, (256, 1))
    x = np.sin(2 * np.pi * (labels[:, None] + 1) * t + phase).astype(np.float32)
    return Dataset(x, labels.astype(np.int64), name=spec)


@flowgrad.hookimpl
def flowgrad_register_ops(ops):
    ops.add(Snake)


@flowgrad.hookimpl
def flowgrad_register_onnx(onnx):
    onnx.add(ONNX)


@flowgrad.hookimpl
def flowgrad_register_optimizers(optimizers):
    optimizers.add(SignSGD)


@flowgrad.hookimpl
def flowgrad_register_objectives(objectives):
    objectives.add("energy", Energy)


@flowgrad.hookimpl
def flowgrad_register_data_loaders(data_loaders):
    data_loaders.add("sine_waves", sine_waves)
