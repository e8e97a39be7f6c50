"""Optimizers, learning-rate schedules and gradient clipping: one loop for weights and inputs.

An optimizer updates *leaves* — named arrays, changed in place — from gradients with the same
names.  It does not know whether a leaf is a weight matrix (training) or an input image (input
optimization); that is the point.  Per-leaf ``lr_mult`` scales the learning rate and
``decay_mult`` the weight decay (Caffe's per-param multipliers; the YAML ``params`` section
sets them).

Built-in kinds: ``sgd`` (momentum, Nesterov), ``adam``, ``adamw`` (decoupled decay) and
``rmsprop``.  Plugins add kinds through the ``flowgrad_register_optimizers`` hook.
Every optimizer's state is a flat ``{key: array}`` so checkpoints store it exactly.
"""
from __future__ import annotations

import math
from typing import Any, Callable, ClassVar, Mapping

import numpy as np

from .errors import FlowgradError, PluginError, did_you_mean


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


BUILTIN_OPTIMIZERS: tuple[type[Optimizer], ...] = (SGD, Adam, AdamW, RMSprop)


def optimizer_kinds(registry: Any = None) -> dict[str, type[Optimizer]]:
    """Built-in optimizers plus those plugins return from ``flowgrad_register_optimizers``."""
    kinds = {cls.kind: cls for cls in BUILTIN_OPTIMIZERS}
    if registry is None:
        from .plugins import default_registry
        registry = default_registry()
    owner = {kind: "flowgrad (built in)" for kind in kinds}
    for plugin, found in registry.call_each("flowgrad_register_optimizers"):
        for cls in found or ():
            if not (isinstance(cls, type) and issubclass(cls, Optimizer) and cls.kind):
                raise PluginError(f"flowgrad_register_optimizers of plugin "
                                  f"{registry.describe(plugin)} returned {cls!r}, which is not "
                                  "an Optimizer subclass with a 'kind' name")
            if cls.kind in kinds and kinds[cls.kind] is not cls:
                raise PluginError(f"optimizer '{cls.kind}' is registered twice: by "
                                  f"{owner[cls.kind]} and by plugin {registry.describe(plugin)}")
            kinds[cls.kind], owner[cls.kind] = cls, f"plugin {registry.describe(plugin)}"
    return kinds


def make_optimizer(kind: str, leaves: Mapping[str, np.ndarray], registry: Any = None,
                   **settings: Any) -> Optimizer:
    """An optimizer of ``kind`` (built-in or plugin) over ``leaves``."""
    kinds = optimizer_kinds(registry)
    if kind not in kinds:
        raise FlowgradError(f"unknown optimizer '{kind}'{did_you_mean(kind, kinds)} "
                            f"(optimizers: {', '.join(sorted(kinds))})")
    return kinds[kind](leaves, **settings)


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

SCHEDULES = ("constant", "step", "cosine")


def make_schedule(lr: float, total_steps: int, steps_per_epoch: int, kind: str = "constant",
                  warmup_steps: int = 0, warmup_epochs: float = 0, step_epochs: float = 10,
                  gamma: float = 0.1, min_lr: float = 0.0) -> Callable[[int], float]:
    """A function from the (0-based) step number to the learning rate.

    ``step``: multiply by ``gamma`` every ``step_epochs`` epochs; ``cosine``: anneal from ``lr``
    to ``min_lr`` over the run; any kind may start with a linear warm-up over ``warmup_steps``
    (or ``warmup_epochs``) steps from ``lr / warm-up length`` up to ``lr``.
    """
    if kind not in SCHEDULES:
        raise FlowgradError(f"unknown schedule '{kind}'{did_you_mean(kind, SCHEDULES)} "
                            f"(schedules: {', '.join(SCHEDULES)})")
    warm = int(warmup_steps or round(warmup_epochs * steps_per_epoch))
    step_size = max(1, int(round(step_epochs * steps_per_epoch)))

    def schedule(step: int) -> float:
        if step < warm:
            return lr * (step + 1) / warm
        if kind == "step":
            return lr * gamma ** (step // step_size)
        if kind == "cosine":
            span = max(1, total_steps - warm)
            progress = min(1.0, (step - warm) / span)
            return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
        return lr

    return schedule
