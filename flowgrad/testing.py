"""The authoring kit: the checks flowgrad's own ops pass, usable from any plugin's pytest.

    import numpy as np
    from flowgrad.testing import check_op
    from my_plugin import Swish

    def test_swish():
        check_op(Swish(), [np.random.randn(4, 3), np.array([0.7])])

What each check catches:

* :func:`gradcheck` — ``backward`` against central finite differences, in float64, for every
  float input not in ``no_grad_inputs`` and every float output (each output alone too, with
  ``None`` for the others, as the scheduler passes it).  Inputs and incoming gradients are made
  read-only, so an op that modifies them in place fails loudly instead of corrupting a branch.
* :func:`check_infer` — the ``infer`` shape rule against what ``forward`` really returns, with
  the batch axis unknown as at load time.
* :func:`check_dtypes` — float32 in gives float32 out, and float32 gradients (no silent upcast).
* :func:`check_config` — attributes survive a round-trip through the op's config and YAML text,
  so a graph saved with the op loads back the same.

:func:`check_op` runs them all; :class:`Case` describes inputs declaratively for parametrised
tests (flowgrad's ``tests/cases/`` use it for every built-in op).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .loaders.yaml_source import plain
from .graph import port_names
from .op import Context, Op, Spec


def _readonly(value: Any) -> Any:
    """A read-only view of an array (other values unchanged): in-place writes then raise."""
    if isinstance(value, np.ndarray):
        value = value.view()
        value.flags.writeable = False
    return value


def _forward(op: Op, inputs: Sequence[Any], training: bool = False, seed: int = 0):
    ctx = Context(grad_enabled=True, training=training, rng=np.random.default_rng(seed))
    try:
        outs = op.forward(ctx, *[_readonly(x) for x in inputs])
    except ValueError as e:
        if "read-only" in str(e):
            raise AssertionError(f"{op.type}: forward modified one of its inputs in place ({e}); "
                                 "values are shared between consumers: allocate a new array") \
                from e
        raise
    assert isinstance(outs, tuple), f"{op.type}: forward must return a tuple, got {type(outs)}"
    return ctx, outs


def _is_float(x: Any) -> bool:
    return x is not None and np.asarray(x).dtype.kind == "f"


def _differentiable_inputs(op: Op, inputs: Sequence[Any]) -> list[int]:
    return [i for i, (x, p) in enumerate(zip(inputs, port_names(op, len(inputs))))
            if _is_float(x) and p not in op.no_grad_inputs]


def numeric_grads(op: Op, inputs: Sequence[Any], cotangents: Sequence[np.ndarray | None],
                  wrt: Sequence[int], eps: float = 1e-6, training: bool = False,
                  per_output: bool = False) -> list:
    """Central differences of ``sum_k <cotangent_k, output_k>`` with respect to inputs ``wrt``.

    With ``per_output``, each gradient has an extra leading axis: one slice per output ``k``
    (the derivative of ``<cotangent_k, output_k>`` alone), from the same forward evaluations.
    """
    live = [k for k, c in enumerate(cotangents) if c is not None]

    def objective(args) -> np.ndarray:
        _, outs = _forward(op, args, training)
        terms = np.zeros(len(cotangents))
        for k in live:
            terms[k] = float(np.sum(np.asarray(outs[k], dtype=np.float64) * cotangents[k]))
        return terms

    grads = []
    for i in wrt:
        x = np.array(inputs[i], dtype=np.float64)
        g = np.zeros((len(cotangents),) + x.shape)
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
            g[(slice(None),) + idx] = (plus - minus) / (2 * eps)
        grads.append(g if per_output else g.sum(axis=0))
    return grads


def gradcheck(op: Op, inputs: Sequence[Any], wrt: Sequence[int] | None = None,
              eps: float = 1e-6, rtol: float = 1e-5, atol: float = 1e-7, seed: int = 0,
              training: bool = False) -> float:
    """Check ``op.backward`` against central differences, in float64, for every output.

    Each float output gets a random cotangent.  The backward is checked with all of them at
    once and, for ops with several outputs, with each output alone (``None`` for the others).
    ``wrt`` defaults to every float input not in ``op.no_grad_inputs``.  Returns the largest
    absolute error; raises AssertionError naming the input, the output set and the worst
    element if any error exceeds ``atol + rtol * |numeric|``.
    """
    rng = np.random.default_rng(seed)
    inputs = [np.asarray(x, dtype=np.float64) if _is_float(x) else x for x in inputs]
    ports = port_names(op, len(inputs), indexed=True)
    if wrt is None:
        wrt = _differentiable_inputs(op, inputs)
    _, outs = _forward(op, inputs, training)
    cotangents = [rng.standard_normal(np.shape(o)) if _is_float(o) else None for o in outs]
    live = [k for k, c in enumerate(cotangents) if c is not None]
    if not wrt or not live:
        return 0.0
    numeric = numeric_grads(op, inputs, cotangents, wrt, eps, training, per_output=True)
    subsets = [tuple(live)] + ([(k,) for k in live] if len(live) > 1 else [])
    worst = 0.0
    for subset in subsets:
        ctx, outs = _forward(op, inputs, training)
        ctx.needs_input_grad = tuple(i in wrt for i in range(len(inputs)))
        given = [_readonly(np.asarray(cotangents[k], dtype=outs[k].dtype)) if k in subset
                 else None for k in range(len(outs))]
        label = ("" if len(subsets) == 1 else
                 " (all outputs)" if len(subset) > 1 else
                 f" (only output {subset[0]} '{_output_name(op, len(inputs), subset[0])}' "
                 "has a gradient, the others get None)")
        try:
            analytic = op.backward(ctx, *given)
        except ValueError as e:
            if "read-only" in str(e):
                raise AssertionError(f"{op.type}: backward modified an incoming gradient or a "
                                     f"saved input in place ({e}); allocate a new array") from e
            raise AssertionError(f"{op.type}: backward raised {type(e).__name__}: {e}{label}") \
                from e
        except Exception as e:
            raise AssertionError(f"{op.type}: backward raised {type(e).__name__}: {e}{label}") \
                from e
        assert isinstance(analytic, tuple) and len(analytic) == len(inputs), (
            f"{op.type}: backward must return a tuple with one entry per input ({len(inputs)})"
            f"{label}, got {_kind(analytic)}")
        for i, num in zip(wrt, numeric):
            num = num[list(subset)].sum(axis=0)
            got = analytic[i]
            assert got is not None, (f"{op.type}: backward returned None for input {i} "
                                     f"({ports[i]}){label}")
            got = np.asarray(got, dtype=np.float64)
            assert got.shape == num.shape, (
                f"{op.type}: gradient of input {i} ({ports[i]}) has shape {got.shape}, expected "
                f"{num.shape}{label}")
            err = np.abs(got - num)
            worst = max(worst, float(err.max(initial=0.0)))
            bad = err > atol + rtol * np.abs(num)
            if bad.any():
                idx = np.unravel_index(np.argmax(err - rtol * np.abs(num)), err.shape)
                raise AssertionError(
                    f"{op.type}: gradient of input {i} ({ports[i]}) is wrong at {idx}{label}: "
                    f"backward gives {got[idx]:.8g}, finite differences {num[idx]:.8g}")
    return worst


def _output_name(op: Op, n_inputs: int, k: int) -> str:
    names = op.output_names(n_inputs)
    return names[k] if k < len(names) else str(k)


def _kind(value: Any) -> str:
    return f"a tuple of {len(value)}" if isinstance(value, tuple) else type(value).__name__


def check_infer(op: Op, inputs: Sequence[Any], batch_axis: bool = True) -> None:
    """Check that ``op.infer`` predicts the shapes and dtypes ``op.forward`` produces.

    With ``batch_axis``, the leading axis of each input is declared unknown (as at load time).
    """
    specs = [None if x is None else
             Spec(((None,) + np.shape(x)[1:]) if batch_axis and np.ndim(x) > 0 else np.shape(x),
                  np.asarray(x).dtype) for x in inputs]
    predicted = op.infer(*specs)
    assert isinstance(predicted, tuple), (
        f"{op.type}: infer must return a tuple of Specs, got {type(predicted).__name__}")
    _, outs = _forward(op, inputs)
    assert len(predicted) == len(outs), (
        f"{op.type}: infer gives {len(predicted)} outputs, forward {len(outs)}")
    for k, (spec, out) in enumerate(zip(predicted, outs)):
        shape = np.shape(out)
        assert isinstance(spec, Spec), f"{op.type}: infer output {k} is not a Spec: {spec!r}"
        assert spec.ndim == len(shape) and all(d is None or d == s for d, s in
                                               zip(spec.shape, shape)), (
            f"{op.type}: output {k}: infer says {spec}, forward gives shape {shape}")
        assert spec.dtype == np.asarray(out).dtype, (
            f"{op.type}: output {k}: infer says dtype {spec.dtype}, forward gives "
            f"{np.asarray(out).dtype}")


def check_dtypes(op: Op, inputs: Sequence[Any], training: bool = False) -> None:
    """Check that float32 inputs give float32 outputs and float32 gradients.

    Networks run in float32; a stray float64 (a numpy float64 scalar, ``np.array(0.5)``)
    doubles memory and silently changes every later op.
    """
    inputs32 = [np.asarray(x, dtype=np.float32) if _is_float(x) else x for x in inputs]
    ctx, outs = _forward(op, inputs32, training)
    for k, out in enumerate(outs):
        kind = np.asarray(out).dtype
        assert kind.kind != "f" or kind == np.float32, (
            f"{op.type}: output {k} is {kind} for float32 inputs; keep float32 as float32 "
            "(beware np.float64 scalars; Python floats are fine)")
    if not op.differentiable:
        return
    wrt = _differentiable_inputs(op, inputs32)
    if not wrt:
        return
    ctx.needs_input_grad = tuple(i in wrt for i in range(len(inputs32)))
    grads = op.backward(ctx, *[_readonly(np.ones_like(o)) if _is_float(o) else None
                               for o in outs])
    for i in wrt:
        kind = np.asarray(grads[i]).dtype
        assert kind == np.float32, (f"{op.type}: the gradient of input {i} is {kind} for "
                                    "float32 inputs; keep float32 as float32")


def check_config(op: Op) -> None:
    """Check that an op rebuilt from its ``config()``, also after a trip through YAML text,
    equals it (what saving and reloading a graph does)."""
    import yaml

    config = op.config()
    again = type(op)(**config)
    assert again == op, f"{op.type}: {op!r} rebuilt from its config is {again!r}"
    try:
        text = yaml.safe_dump(plain(config))
    except yaml.YAMLError as e:
        raise AssertionError(f"{op.type}: config {config!r} cannot be written as YAML: {e}") \
            from None
    from_yaml = type(op)(**yaml.safe_load(text))
    assert from_yaml == op, f"{op.type}: {op!r} rebuilt from YAML {text!r} is {from_yaml!r}"



def check_op(op: Op, inputs: Sequence[Any], **gradcheck_options: Any) -> float:
    """Every check: config round-trip, shape inference, float32 dtypes and (for
    differentiable ops) finite-difference gradients.  Returns the largest gradient error."""
    check_config(op)
    check_infer(op, inputs)
    check_dtypes(op, inputs, training=gradcheck_options.get("training", False))
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
        """Build the op and run :func:`check_op` on it; returns the largest gradient error."""
        return check_op(op_cls(**self.attrs), self.materialize(seed), wrt=self.wrt,
                        rtol=self.rtol, atol=self.atol, training=self.training)


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
