"""Objectives: what an optimized input should make a network do.

An objective names the graph values it reads (``refs``) and maps their batched activations to
one value per image and the gradient of the *sum* of those values with respect to each
activation.  Summing (not averaging) over images keeps every image's gradient independent of
the batch size, which is what makes a batch of N images identical to N separate runs.

Built-ins: ``neuron`` (any index; a partial index averages the rest, so ``neuron(conv, 3)`` is
channel 3's spatial mean), ``channel``, ``layer`` (mean square, DeepDream), ``logit``,
``direction`` / ``cosine`` (a direction in activation space along axis 1), and ``diversity``
(Gram-matrix similarity across the batch, a batch-level term).  Objectives combine with ``+``,
``-`` and scalar ``*``; ``-objective`` minimises.

Specs such as ``"logits[3]"``, ``"channel(conv2, 5) - 0.5 * layer(h1)"`` are parsed with
Python's ``ast`` module into these objects; nothing is evaluated.
"""
from __future__ import annotations

import ast
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..errors import FlowgradError, PluginError, did_you_mean

Values = tuple[np.ndarray, dict[str, np.ndarray]]


class Objective:
    """Base class: ``refs`` and ``__call__(acts) -> (values[N], {ref: d sum(values) / d act})``."""

    refs: tuple[str, ...] = ()
    per_image: bool = True      # False: the value of one image depends on the others

    def __call__(self, acts: Mapping[str, np.ndarray]) -> Values:
        raise NotImplementedError

    def __add__(self, other: "Objective") -> "Objective":
        return Combination([(1.0, self), (1.0, _objective(other))])

    def __sub__(self, other: "Objective") -> "Objective":
        return Combination([(1.0, self), (-1.0, _objective(other))])

    def __mul__(self, k: float) -> "Objective":
        return Combination([(float(k), self)])

    __rmul__ = __mul__

    def __neg__(self) -> "Objective":
        return Combination([(-1.0, self)])

    def describe(self) -> str:
        return repr(self)


def _objective(value: Any) -> Objective:
    if not isinstance(value, Objective):
        raise FlowgradError(f"objectives combine only with objectives, got {value!r}")
    return value


class Combination(Objective):
    """``sum(weight * objective)``."""

    def __init__(self, terms: Sequence[tuple[float, Objective]]):
        flat: list[tuple[float, Objective]] = []
        for weight, obj in terms:
            if isinstance(obj, Combination):
                flat += [(weight * w, o) for w, o in obj.terms]
            else:
                flat.append((weight, obj))
        self.terms = flat
        self.refs = tuple(dict.fromkeys(r for _, o in flat for r in o.refs))
        self.per_image = all(o.per_image for _, o in flat)

    def __call__(self, acts):
        total, grads = None, {}
        for weight, obj in self.terms:
            values, g = obj(acts)
            total = weight * values if total is None else total + weight * values
            for ref, grad in g.items():
                grads[ref] = weight * grad if ref not in grads else grads[ref] + weight * grad
        return total, grads

    def __repr__(self):
        parts = []
        for w, o in self.terms:
            text = o.describe()
            parts.append(text if w == 1 else f"-{text}" if w == -1 else f"{w:g}*{text}")
        return " + ".join(parts).replace("+ -", "- ")


class Neuron(Objective):
    """The activation at ``index`` (batch axis excluded); a partial index averages the rest."""

    def __init__(self, ref: str, *index: int):
        self.refs = (ref,)
        self.index = tuple(int(i) for i in index)

    def __call__(self, acts):
        a = acts[self.refs[0]]
        if len(self.index) > a.ndim - 1:
            raise FlowgradError(f"'{self.refs[0]}' has {a.ndim - 1} axes after the batch; the "
                                f"index {list(self.index)} has {len(self.index)}")
        for axis, (i, n) in enumerate(zip(self.index, a.shape[1:])):
            if not -n <= i < n:
                raise FlowgradError(f"index {i} is out of range for axis {axis + 1} of "
                                    f"'{self.refs[0]}' (size {n})")
        key = (slice(None),) + self.index
        picked = a[key]
        rest = picked.shape[1:]
        size = int(np.prod(rest)) if rest else 1
        values = picked.reshape(len(a), -1).mean(axis=1) if rest else picked
        grad = np.zeros_like(a)
        grad[key] = 1.0 / size
        return values, {self.refs[0]: grad}

    def __repr__(self):
        return f"{self.refs[0]}[{', '.join(map(str, self.index))}]"


def channel(ref: str, c: int) -> Objective:
    """Channel ``c`` (axis 1) averaged over the remaining axes."""
    return Neuron(ref, c)


def logit(ref: str, k: int) -> Objective:
    """Class score ``k`` of a ``(N, classes)`` output."""
    return Neuron(ref, k)


class Layer(Objective):
    """Mean square of a whole layer (DeepDream): amplify whatever the layer already sees."""

    def __init__(self, ref: str):
        self.refs = (ref,)

    def __call__(self, acts):
        a = acts[self.refs[0]]
        size = a[0].size
        return (a.reshape(len(a), -1) ** 2).mean(axis=1), {self.refs[0]: 2.0 * a / size}

    def __repr__(self):
        return f"layer({self.refs[0]})"


class Direction(Objective):
    """Projection on a direction ``v`` of axis 1 (channels or units), averaged over positions;
    ``cosine=True`` divides by the norms, rewarding the direction and not mere magnitude."""

    def __init__(self, ref: str, vector: Sequence[float], cosine: bool = False):
        self.refs = (ref,)
        self.v = np.asarray(vector, dtype=np.float64)
        self.cosine = cosine
        if self.v.ndim != 1:
            raise FlowgradError("a direction is a list of numbers, one per channel")

    def __call__(self, acts):
        a = acts[self.refs[0]]
        if a.ndim < 2 or a.shape[1] != len(self.v):
            raise FlowgradError(f"the direction has {len(self.v)} entries but '{self.refs[0]}' "
                                f"has {a.shape[1] if a.ndim > 1 else 0} channels")
        shape = (1, -1) + (1,) * (a.ndim - 2)
        v = self.v.astype(a.dtype).reshape(shape)
        positions = int(np.prod(a.shape[2:])) if a.ndim > 2 else 1
        dot = (a * v).sum(axis=1)                                     # (N, *positions)
        if not self.cosine:
            values = dot.reshape(len(a), -1).mean(axis=1)
            return values, {self.refs[0]: np.broadcast_to(v / positions, a.shape).copy()}
        norm_a = np.sqrt((a * a).sum(axis=1)) + 1e-8
        norm_v = float(np.linalg.norm(self.v)) + 1e-8
        cos = dot / (norm_a * norm_v)
        values = cos.reshape(len(a), -1).mean(axis=1)
        na = np.expand_dims(norm_a, 1)
        grad = (v / (na * norm_v) - np.expand_dims(cos, 1) * a / (na * na)) / positions
        return values, {self.refs[0]: grad}

    def __repr__(self):
        return f"{'cosine' if self.cosine else 'direction'}({self.refs[0]}, ...)"


class Diversity(Objective):
    """Minus the mean cosine similarity between each image's Gram matrix (channel
    co-activations of ``ref``) and the other images' — pushes a batch apart in style."""

    per_image = False

    def __init__(self, ref: str):
        self.refs = (ref,)

    def __call__(self, acts):
        a = acts[self.refs[0]]
        n = len(a)
        if n < 2:
            return np.zeros(n, dtype=a.dtype), {self.refs[0]: np.zeros_like(a)}
        if a.ndim > 2:
            feats = a.reshape(n, a.shape[1], -1)                       # (N, C, P)
            gram = feats @ np.swapaxes(feats, 1, 2) / feats.shape[2]    # (N, C, C)
        else:
            feats, gram = None, a
        flat = gram.reshape(n, -1)
        norm = np.linalg.norm(flat, axis=1, keepdims=True) + 1e-8
        unit = flat / norm
        sim = unit @ unit.T
        values = -(sim.sum(axis=1) - np.diag(sim)) / (n - 1)
        g_unit = -2.0 / (n - 1) * (unit.sum(axis=0, keepdims=True) - unit)
        g_flat = (g_unit - (g_unit * unit).sum(axis=1, keepdims=True) * unit) / norm
        if feats is None:
            return values, {self.refs[0]: g_flat.reshape(a.shape)}
        g_gram = g_flat.reshape(gram.shape)
        g_feats = (g_gram + np.swapaxes(g_gram, 1, 2)) @ feats / feats.shape[2]
        return values, {self.refs[0]: g_feats.reshape(a.shape)}

    def __repr__(self):
        return f"diversity({self.refs[0]})"


BUILTIN_OBJECTIVES: dict[str, Callable[..., Objective]] = {
    "neuron": Neuron,
    "channel": channel,
    "layer": Layer,
    "logit": logit,
    "direction": lambda ref, v: Direction(ref, v),
    "cosine": lambda ref, v: Direction(ref, v, cosine=True),
    "diversity": Diversity,
}


def objective_factories(registry: Any = None) -> dict[str, Callable[..., Objective]]:
    """Built-in objective factories plus those from ``flowgrad_register_objectives``."""
    found = dict(BUILTIN_OBJECTIVES)
    if registry is None:
        from ..plugins import default_registry
        registry = default_registry()
    # collect() names both plugins when two claim a name
    for name, factory in registry.collect("flowgrad_register_objectives", "objective").items():
        if name in found and found[name] is not factory:
            raise PluginError(f"objective '{name}' is built in; a plugin cannot register it "
                              "again")
        if not callable(factory):
            raise PluginError(f"objective '{name}' must be callable, got {factory!r}")
        found[name] = factory
    return found


def parse_objective(spec: str, factories: Mapping[str, Callable[..., Objective]] | None = None
                    ) -> Objective:
    """Parse a spec like ``"logits[3]"`` or ``"channel(conv1, 2) + 0.1 * layer(h1)"``.

    Grammar: ``node[i, ...]`` (a neuron), ``name(node, args...)`` for every factory, numbers,
    ``[v, ...]`` lists, ``+``, ``-``, ``*`` by a number, unary ``-``.  Node names that are not
    Python identifiers can be quoted: ``layer("my-node")``; ``node.port`` selects an output.
    """
    factories = dict(BUILTIN_OBJECTIVES if factories is None else factories)
    try:
        tree = ast.parse(spec.strip(), mode="eval")
    except SyntaxError as e:
        raise FlowgradError(f"objective '{spec}': cannot parse ({e.msg}); write e.g. "
                            "'logits[3]' or 'channel(conv1, 2) - 0.5 * layer(h1)'") from None
    return _Parser(spec, factories).objective(tree.body)


class _Parser:
    def __init__(self, spec: str, factories: Mapping[str, Callable[..., Objective]]):
        self.spec = spec
        self.factories = factories

    def fail(self, message: str) -> FlowgradError:
        return FlowgradError(f"objective '{self.spec}': {message}")

    def objective(self, node: ast.AST) -> Objective:
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
            left, right = self.objective(node.left), self.objective(node.right)
            return left + right if isinstance(node.op, ast.Add) else left - right
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
            if self.is_number(node.left):
                return self.number(node.left) * self.objective(node.right)
            if self.is_number(node.right):
                return self.objective(node.left) * self.number(node.right)
            raise self.fail("'*' multiplies an objective by a number")
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -self.objective(node.operand)
        if isinstance(node, ast.Subscript):
            index = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
            return Neuron(self.ref(node.value), *[self.integer(i) for i in index])
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            name = node.func.id
            if name not in self.factories:
                raise self.fail(f"unknown objective '{name}'{did_you_mean(name, self.factories)}"
                                f" (objectives: {', '.join(sorted(self.factories))})")
            if node.keywords or not node.args:
                raise self.fail(f"write {name}(node, ...) with positional arguments")
            args = [self.ref(node.args[0])] + [self.argument(a) for a in node.args[1:]]
            try:
                made = self.factories[name](*args)
            except TypeError as e:
                raise self.fail(f"bad arguments for {name}: {e}") from None
            return _objective(made)
        if isinstance(node, (ast.Name, ast.Attribute)):
            ref = self.ref(node)
            raise self.fail(f"'{ref}' alone is a value, not an objective; write e.g. "
                            f"'{ref}[0]', 'channel({ref}, 0)' or 'layer({ref})'")
        raise self.fail(f"unsupported syntax '{ast.unparse(node)}'")

    def ref(self, node: ast.AST) -> str:
        if isinstance(node, ast.Name):
            return node.id
        if isinstance(node, ast.Attribute):
            return f"{self.ref(node.value)}.{node.attr}"
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        raise self.fail(f"expected a node name, got '{ast.unparse(node)}'")

    def argument(self, node: ast.AST) -> Any:
        if isinstance(node, (ast.List, ast.Tuple)):
            return [self.number(e) for e in node.elts]
        if isinstance(node, (ast.Name, ast.Attribute)) or (
                isinstance(node, ast.Constant) and isinstance(node.value, str)):
            return self.ref(node)
        return self.number(node)

    @staticmethod
    def is_number(node: ast.AST) -> bool:
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            node = node.operand
        return isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) \
            and not isinstance(node.value, bool)

    def number(self, node: ast.AST) -> float | int:
        if not self.is_number(node):
            raise self.fail(f"expected a number, got '{ast.unparse(node)}'")
        return ast.literal_eval(node)

    def integer(self, node: ast.AST) -> int:
        value = self.number(node)
        if not isinstance(value, int):
            raise self.fail(f"an index must be an integer, got {value!r}")
        return value
