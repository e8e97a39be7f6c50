"""Tools for op authors (and flowgrad's own tests): finite-difference gradient checks,
shape-inference checks and attribute round-trips, usable from any pytest.

    from flowgrad.testing import check_op
    check_op(MyOp(alpha=0.5), [np.random.randn(3, 4)])
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .op import Context, Op, Spec


def _forward(op: Op, inputs: Sequence[Any], training: bool = False, seed: int = 0):
    ctx = Context(grad_enabled=True, training=training, rng=np.random.default_rng(seed))
    outs = op.forward(ctx, *inputs)
    assert isinstance(outs, tuple), f"{op.type}: forward must return a tuple, got {type(outs)}"
    return ctx, outs


def numeric_grads(op: Op, inputs: Sequence[Any], cotangents: Sequence[np.ndarray],
                  wrt: Sequence[int], eps: float = 1e-6, training: bool = False) -> list:
    """Central differences of ``sum_k <cotangent_k, output_k>`` with respect to inputs ``wrt``."""
    def objective(args):
        _, outs = _forward(op, args, training)
        return sum(float(np.sum(np.asarray(o, dtype=np.float64) * c))
                   for o, c in zip(outs, cotangents) if c is not None)

    grads = []
    for i in wrt:
        x = np.array(inputs[i], dtype=np.float64)
        g = np.zeros_like(x)
        args = list(inputs)
        for idx in np.ndindex(x.shape):
            orig = x[idx]
            x[idx] = orig + eps
            args[i] = x.copy()
            plus = objective(args)
            x[idx] = orig - eps
            args[i] = x.copy()
            minus = objective(args)
            x[idx] = orig
            g[idx] = (plus - minus) / (2 * eps)
        grads.append(g)
    return grads


def gradcheck(op: Op, inputs: Sequence[Any], wrt: Sequence[int] | None = None,
              eps: float = 1e-6, rtol: float = 1e-5, atol: float = 1e-7, seed: int = 0,
              training: bool = False) -> float:
    """Check ``op.backward`` against central differences, in float64, for every output.

    Each output gets a random cotangent (``None`` for some outputs of multi-output ops is
    tested too, as the scheduler may pass it).  ``wrt`` defaults to every float input that is
    not in ``op.no_grad_inputs``.  Returns the largest absolute error; raises AssertionError
    with the worst element if any exceeds ``atol + rtol * |numeric|``.
    """
    rng = np.random.default_rng(seed)
    inputs = [np.asarray(x, dtype=np.float64) if x is not None and np.asarray(x).dtype.kind == "f"
              else x for x in inputs]
    ports = (op.input_names[0],) * len(inputs) if op.variadic else op.input_names
    if wrt is None:
        wrt = [i for i, (x, p) in enumerate(zip(inputs, ports))
               if x is not None and np.asarray(x).dtype.kind == "f" and p not in op.no_grad_inputs]
    ctx, outs = _forward(op, inputs, training)
    cotangents = [rng.standard_normal(np.shape(o)) if np.asarray(o).dtype.kind == "f" else None
                  for o in outs]
    ctx.needs_input_grad = tuple(i in wrt for i in range(len(inputs)))
    analytic = op.backward(ctx, *[None if c is None else np.asarray(c, dtype=o.dtype)
                                  for c, o in zip(cotangents, outs)])
    assert isinstance(analytic, tuple) and len(analytic) == len(inputs), (
        f"{op.type}: backward must return a tuple with one entry per input ({len(inputs)})")
    numeric = numeric_grads(op, inputs, cotangents, wrt, eps, training)
    worst = 0.0
    for i, num in zip(wrt, numeric):
        got = analytic[i]
        assert got is not None, f"{op.type}: backward returned None for input {i}"
        got = np.asarray(got, dtype=np.float64)
        assert got.shape == num.shape, (
            f"{op.type}: gradient of input {i} has shape {got.shape}, expected {num.shape}")
        err = np.abs(got - num)
        worst = max(worst, float(err.max(initial=0.0)))
        bad = err > atol + rtol * np.abs(num)
        if bad.any():
            idx = np.unravel_index(np.argmax(err - rtol * np.abs(num)), err.shape)
            raise AssertionError(f"{op.type}: gradient of input {i} ({ports[i]}) is wrong at "
                                 f"{idx}: backward gives {got[idx]:.8g}, finite differences "
                                 f"{num[idx]:.8g}")
    return worst


def check_infer(op: Op, inputs: Sequence[Any], batch_axis: bool = True) -> None:
    """Check that ``op.infer`` predicts the shapes and dtypes ``op.forward`` produces.

    With ``batch_axis``, the leading axis of each input is declared unknown (as at load time).
    """
    specs = [None if x is None else
             Spec(((None,) + np.shape(x)[1:]) if batch_axis and np.ndim(x) > 0 else np.shape(x),
                  np.asarray(x).dtype) for x in inputs]
    predicted = op.infer(*specs)
    _, outs = _forward(op, inputs)
    assert len(predicted) == len(outs), (
        f"{op.type}: infer gives {len(predicted)} outputs, forward {len(outs)}")
    for k, (spec, out) in enumerate(zip(predicted, outs)):
        shape = np.shape(out)
        assert spec.ndim == len(shape) and all(d is None or d == s for d, s in
                                               zip(spec.shape, shape)), (
            f"{op.type}: output {k}: infer says {spec}, forward gives shape {shape}")
        assert spec.dtype == np.asarray(out).dtype, (
            f"{op.type}: output {k}: infer says dtype {spec.dtype}, forward gives "
            f"{np.asarray(out).dtype}")


def check_config(op: Op) -> None:
    """Check that an op rebuilt from its ``config()`` equals it."""
    again = type(op)(**op.config())
    assert again == op, f"{op.type}: {op!r} rebuilt from its config is {again!r}"


def check_op(op: Op, inputs: Sequence[Any], **gradcheck_options: Any) -> float:
    """All three checks; returns the largest finite-difference error."""
    check_config(op)
    check_infer(op, inputs)
    if not op.differentiable:
        return 0.0
    return gradcheck(op, inputs, **gradcheck_options)


# -- declarative cases, for parametrised tests over many ops -----------------------------

InputMaker = tuple | np.ndarray | Callable[[np.random.Generator], np.ndarray] | None


@dataclass
class Case:
    """One gradient-check case: attributes and how to make each input.

    An input is a shape tuple (standard normal float64), an array (used as is), a callable
    ``rng -> array`` (see :func:`positive`, :func:`integers`, :func:`away_from`), or ``None``
    for an absent optional input.
    """

    inputs: Sequence[InputMaker]
    attrs: dict[str, Any] = field(default_factory=dict)
    wrt: Sequence[int] | None = None
    training: bool = False
    rtol: float = 1e-5
    atol: float = 1e-7
    id: str = ""

    def materialize(self, seed: int = 0) -> list:
        rng = np.random.default_rng(seed)
        out = []
        for make in self.inputs:
            if make is None or isinstance(make, np.ndarray):
                out.append(make)
            elif isinstance(make, tuple):
                out.append(rng.standard_normal(make))
            else:
                out.append(make(rng))
        return out

    def run(self, op_cls: type[Op], seed: int = 0) -> float:
        """Build the op, check config, infer and gradients; returns the largest error."""
        op = op_cls(**self.attrs)
        inputs = self.materialize(seed)
        check_config(op)
        check_infer(op, inputs)
        if not op.differentiable:
            return 0.0
        return gradcheck(op, inputs, wrt=self.wrt, rtol=self.rtol, atol=self.atol,
                         training=self.training)


def positive(shape: tuple, low: float = 0.5, high: float = 2.0):
    """An input maker: uniform values in ``[low, high]`` (for log, sqrt, division...)."""
    return lambda rng: rng.uniform(low, high, size=shape)


def integers(shape: tuple, high: int, low: int = 0):
    """An input maker: int64 values in ``[low, high)`` (labels, indices)."""
    return lambda rng: rng.integers(low, high, size=shape).astype(np.int64)


def away_from(shape: tuple, points: Sequence[float] = (0.0,), margin: float = 0.05):
    """An input maker: standard normal values at least ``margin`` from each kink in ``points``."""
    def make(rng):
        x = rng.standard_normal(shape)
        for p in points:
            near = np.abs(x - p) < margin
            x[near] = p + np.where(x[near] >= p, margin, -margin) * 2
        return x
    return make
