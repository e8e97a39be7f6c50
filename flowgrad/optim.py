"""Optimizers, learning-rate schedules and gradient clipping: one loop for weights and inputs.

An optimizer updates *leaves* — named arrays, changed in place — from gradients with the same
names.  It does not know whether a leaf is a weight matrix (training) or an input image (input
optimization); that is the point.  Per-leaf ``lr_mult`` scales the learning rate and
``decay_mult`` the weight decay (Caffe's per-param multipliers; the YAML ``params`` section
sets them).

Built-in kinds: ``sgd`` (momentum, Nesterov), ``adam``, ``adamw`` (decoupled decay) and
``rmsprop``; schedules ``constant``, ``step`` and ``cosine``.  Plugins add both through the
``flowgrad_register_optimizers`` and ``flowgrad_register_schedules`` hooks, exactly as
:mod:`flowgrad.builtins` registers these.
Every optimizer's state is a flat ``{key: array}`` so checkpoints store it exactly.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar, Mapping

import numpy as np

from .errors import FlowgradError, did_you_mean


class Optimizer:
    """Base class: subclasses set ``kind``, ``defaults`` and implement :meth:`update`.

    ``leaves`` maps names to the live arrays to update in place.  Hyper-parameters are keyword
    arguments checked against ``defaults`` (unknown ones are errors).  ``lr_mult`` and
    ``decay_mult`` map leaf names to multipliers (missing names: 1.0).
    """

    kind: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, leaves: Mapping[str, np.ndarray], lr: float = 0.01,
                 weight_decay: float = 0.0, lr_mult: Mapping[str, float] | None = None,
                 decay_mult: Mapping[str, float] | None = None, **hyper: Any):
        unknown = [k for k in hyper if k not in self.defaults]
        if unknown:
            raise FlowgradError(f"optimizer '{self.kind}' has no setting '{unknown[0]}'"
                                f"{did_you_mean(unknown[0], self.defaults)} (settings: lr, "
                                f"weight_decay, {', '.join(self.defaults)})")
        self.leaves = dict(leaves)
        for name, leaf in self.leaves.items():
            if isinstance(leaf, np.ndarray) and not leaf.flags.writeable:
                raise FlowgradError(f"param '{name}' is read-only (a frozen plan's: "
                                    "Plan.freeze); an optimizer updates params in place")
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.lr_mult = {k: float((lr_mult or {}).get(k, 1.0)) for k in self.leaves}
        self.decay_mult = {k: float((decay_mult or {}).get(k, 1.0)) for k in self.leaves}
        self.hyper = {**self.defaults, **hyper}
        self.steps = 0
        self.state: dict[str, dict[str, np.ndarray]] = {k: {} for k in self.leaves}

    def step(self, grads: Mapping[str, np.ndarray], lr: float | None = None) -> None:
        """Apply one update to every leaf that has a gradient (a schedule may pass ``lr``)."""
        self.steps += 1
        base = self.lr if lr is None else float(lr)
        for name, grad in grads.items():
            if name not in self.leaves:
                continue
            leaf = self.leaves[name]
            self.update(name, leaf, np.asarray(grad, dtype=leaf.dtype), self.state[name],
                        base * self.lr_mult[name], self.weight_decay * self.decay_mult[name])

    def update(self, name: str, leaf: np.ndarray, grad: np.ndarray, state: dict[str, np.ndarray],
               lr: float, decay: float) -> None:
        """Update ``leaf`` in place; ``state`` is this leaf's dict of buffers (kept by us)."""
        raise NotImplementedError

    def _buffer(self, state: dict, key: str, like: np.ndarray) -> np.ndarray:
        if key not in state:
            state[key] = np.zeros_like(like)
        return state[key]

    # -- checkpoints -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Every buffer as ``{"leaf/buffer": array}`` plus ``"#steps"``, copied."""
        out = {f"{leaf}/{key}": value.copy() for leaf, buffers in self.state.items()
               for key, value in buffers.items()}
        out["#steps"] = np.asarray(self.steps, dtype=np.int64)
        return out

    def load_state_dict(self, values: Mapping[str, np.ndarray]) -> None:
        self.steps = int(values.get("#steps", 0))
        self.state = {k: {} for k in self.leaves}
        for key, value in values.items():
            if key == "#steps":
                continue
            leaf, _, buffer = key.rpartition("/")
            if leaf not in self.state:
                raise FlowgradError(f"optimizer state names '{leaf}', which this optimizer does "
                                    f"not update{did_you_mean(leaf, self.state)}")
            self.state[leaf][buffer] = np.array(value, dtype=self.leaves[leaf].dtype)


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, as PyTorch defines it:
    ``v = momentum v + (g + decay p)``; step ``g + momentum v`` (Nesterov) or ``v``."""

    kind = "sgd"
    defaults = {"momentum": 0.0, "nesterov": False}

    def update(self, name, leaf, grad, state, lr, decay):
        if decay:
            grad = grad + decay * leaf
        momentum = self.hyper["momentum"]
        if momentum:
            v = self._buffer(state, "velocity", leaf)
            v *= momentum
            v += grad
            grad = grad + momentum * v if self.hyper["nesterov"] else v
        leaf -= lr * grad


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction; weight decay is added to the gradient (L2)."""

    kind = "adam"
    defaults = {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8}
    decoupled: ClassVar[bool] = False

    def update(self, name, leaf, grad, state, lr, decay):
        b1, b2, eps = self.hyper["beta1"], self.hyper["beta2"], self.hyper["eps"]
        if decay and not self.decoupled:
            grad = grad + decay * leaf
        m = self._buffer(state, "m", leaf)
        v = self._buffer(state, "v", leaf)
        m *= b1
        m += (1 - b1) * grad
        v *= b2
        v += (1 - b2) * grad * grad
        t = self.steps
        step = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        if decay and self.decoupled:
            leaf -= (lr * decay) * leaf
        leaf -= step * m / (np.sqrt(v) + eps * math.sqrt(1 - b2 ** t))


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): ``p -= lr * decay * p``."""

    kind = "adamw"
    decoupled = True


class RMSprop(Optimizer):
    """RMSprop: divide by a running RMS of the gradient; optional momentum."""

    kind = "rmsprop"
    defaults = {"alpha": 0.99, "eps": 1e-8, "momentum": 0.0}

    def update(self, name, leaf, grad, state, lr, decay):
        if decay:
            grad = grad + decay * leaf
        sq = self._buffer(state, "square_avg", leaf)
        sq *= self.hyper["alpha"]
        sq += (1 - self.hyper["alpha"]) * grad * grad
        step = grad / (np.sqrt(sq) + self.hyper["eps"])
        if self.hyper["momentum"]:
            buf = self._buffer(state, "momentum", leaf)
            buf *= self.hyper["momentum"]
            buf += step
            step = buf
        leaf -= lr * step


def optimizer_kinds(registry: Any = None) -> dict[str, type[Optimizer]]:
    """Every registered optimizer kind (built-in or plugin): ``{kind: class}``."""
    return _registry(registry).table("optimizer")


def make_optimizer(kind: str, leaves: Mapping[str, np.ndarray], registry: Any = None,
                   **settings: Any) -> Optimizer:
    """An optimizer of ``kind`` (built-in or plugin) over ``leaves``."""
    return _lookup(optimizer_kinds(registry), kind, "optimizer")(leaves, **settings)


def _registry(registry: Any) -> Any:
    if registry is None:
        from .plugins import default_registry
        registry = default_registry()
    return registry


def _lookup(kinds: Mapping[str, Any], kind: str, what: str) -> Any:
    if kind not in kinds:
        raise FlowgradError(f"unknown {what} '{kind}'{did_you_mean(kind, kinds)} "
                            f"({what}s: {', '.join(sorted(kinds))})")
    return kinds[kind]


# -- gradient clipping ---------------------------------------------------------------------

def global_norm(grads: Mapping[str, np.ndarray]) -> float:
    """The L2 norm of all gradients taken together (accumulated in float64)."""
    return math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))


def clip_by_global_norm(grads: Mapping[str, np.ndarray], max_norm: float
                        ) -> tuple[dict[str, np.ndarray], float]:
    """Scale all gradients by ``max_norm / norm`` when their global norm exceeds ``max_norm``.

    Returns the (possibly new) gradients and the norm before clipping.  Scaling all together
    keeps the update's direction, unlike clipping each array or element.
    """
    norm = global_norm(grads)
    if norm <= max_norm or not math.isfinite(norm):
        return dict(grads), norm
    scale = max_norm / (norm + 1e-12)
    return {k: g * scale for k, g in grads.items()}, norm


# -- learning-rate schedules ---------------------------------------------------------------

class Schedule:
    """Base class of learning-rate schedules: a function from the (0-based) step to the rate.

    Subclasses set ``kind`` (the name in ``train: schedule: {kind: ...}``), declare their
    settings with defaults in ``defaults`` and implement :meth:`rate`.  Every kind may start
    with a linear warm-up over ``warmup_steps`` (or ``warmup_epochs``) steps, from
    ``lr / warm-up length`` up to ``lr``; the base class applies it.  Plugins add kinds through
    the ``flowgrad_register_schedules`` hook.
    """

    kind: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}
    WARMUP: ClassVar[tuple[str, ...]] = ("warmup_steps", "warmup_epochs")

    def __init__(self, lr: float, total_steps: int, steps_per_epoch: int,
                 warmup_steps: int = 0, warmup_epochs: float = 0, **settings: Any):
        unknown = [k for k in settings if k not in self.defaults]
        if unknown:
            known = [*self.WARMUP, *self.defaults]
            raise FlowgradError(f"schedule '{self.kind}' has no setting '{unknown[0]}'"
                                f"{did_you_mean(unknown[0], known)} (settings: "
                                f"{', '.join(known)})")
        self.lr, self.total_steps, self.steps_per_epoch = float(lr), total_steps, steps_per_epoch
        self.settings = {**self.defaults, **settings}
        self.warmup = int(warmup_steps or round(warmup_epochs * steps_per_epoch))

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        return self.rate(step)

    def rate(self, step: int) -> float:
        """The rate at ``step`` (after the warm-up)."""
        raise NotImplementedError


class Constant(Schedule):
    """The optimizer's ``lr`` throughout."""

    kind = "constant"

    def rate(self, step):
        return self.lr


class StepDecay(Schedule):
    """Multiply by ``gamma`` every ``step_epochs`` epochs."""

    kind = "step"
    defaults = {"step_epochs": 10, "gamma": 0.1}

    def rate(self, step):
        size = max(1, int(round(self.settings["step_epochs"] * self.steps_per_epoch)))
        return self.lr * self.settings["gamma"] ** (step // size)


class Cosine(Schedule):
    """Anneal from ``lr`` to ``min_lr`` over the run (after the warm-up), as half a cosine."""

    kind = "cosine"
    defaults = {"min_lr": 0.0}

    def rate(self, step):
        low = self.settings["min_lr"]
        progress = min(1.0, (step - self.warmup) / max(1, self.total_steps - self.warmup))
        return low + (self.lr - low) * 0.5 * (1 + math.cos(math.pi * progress))


def schedule_kinds(registry: Any = None) -> dict[str, type[Schedule]]:
    """Every registered schedule kind (built-in or plugin): ``{kind: class}``."""
    return _registry(registry).table("schedule")


def make_schedule(lr: float, total_steps: int, steps_per_epoch: int, kind: str = "constant",
                  registry: Any = None, **settings: Any) -> Schedule:
    """The schedule ``kind`` (built-in or plugin) for a run of ``total_steps`` steps."""
    cls = _lookup(schedule_kinds(registry), kind, "schedule")
    return cls(lr, total_steps, steps_per_epoch, **settings)
