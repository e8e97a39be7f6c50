"""Objectives: what an optimized input should make a network do.

An objective names the graph values it reads (``refs``) and maps their batched activations to
one value per image and the gradient of the *sum* of those values with respect to each
activation.  Summing (not averaging) over images keeps every image's gradient independent of
the batch size, which is what makes a batch of N images identical to N separate runs.

Built-ins: ``neuron`` (any index; a partial index averages the rest, so ``neuron(conv, 3)`` is
channel 3's spatial mean), ``channel``, ``layer`` (mean square, DeepDream), ``logit``,
``direction`` / ``cosine`` (a direction in activation space along axis 1), and ``diversity``
(Gram-matrix similarity across the batch, a batch-level term); lucid's ``direction_neuron``,
``channel_interpolate`` and ``alignment`` live in :mod:`.lucid_objectives`.  Objectives
combine with ``+``, ``-``, ``*`` and ``/`` (by a number or by another objective: the product
and quotient rules); ``-objective`` minimises.  Batch-level terms (``per_image = False``) may
appear in any image's expression: :mod:`.batch` evaluates each over the images that name it.

Specs such as ``"logits[3]"``, ``"channel(conv2, 5) - 0.5 * layer(h1)"`` are parsed with
Python's ``ast`` module into these objects; nothing is evaluated.
"""
from __future__ import annotations

import ast
import functools
import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..errors import FlowgradError, did_you_mean

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

    def __mul__(self, other: "Objective | float") -> "Objective":
        if isinstance(other, Objective):
            return Product(self, other)
        return Combination([(_number(other), self)])

    def __rmul__(self, k: float) -> "Objective":
        return Combination([(_number(k), self)])

    def __truediv__(self, other: "Objective | float") -> "Objective":
        if isinstance(other, Objective):
            return Quotient(self, other)
        return Combination([(1.0 / _number(other), self)])

    def __neg__(self) -> "Objective":
        return Combination([(-1.0, self)])

    def describe(self) -> str:
        return repr(self)


def _objective(value: Any) -> Objective:
    if not isinstance(value, Objective):
        raise FlowgradError(f"objectives combine only with objectives, got {value!r}")
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise FlowgradError(f"objectives combine only with objectives and numbers, got "
                            f"{value!r}")
    return float(value)


class _Pair(Objective):
    """Two per-image objectives combined image by image (the product and quotient rules need
    each image's own value and gradient, which a batch-level term does not have alone)."""

    symbol = ""

    def __init__(self, left: Objective, right: Objective):
        for side in (left, right):
            if not _objective(side).per_image:
                raise FlowgradError(f"'{side.describe()}' depends on the whole batch: it can be "
                                    f"added to an objective, not multiplied or divided")
        self.left, self.right = left, right
        self.refs = tuple(dict.fromkeys(left.refs + right.refs))

    def __call__(self, acts):
        a, grads_a = self.left(acts)
        b, grads_b = self.right(acts)
        values, scale_a, scale_b = self.combine(a, b)
        grads: dict[str, np.ndarray] = {}
        for factor, side in ((scale_a, grads_a), (scale_b, grads_b)):
            for ref, g in side.items():
                term = factor.reshape((-1,) + (1,) * (g.ndim - 1)) * g
                grads[ref] = term if ref not in grads else grads[ref] + term
        return values, grads

    def combine(self, a: np.ndarray, b: np.ndarray):
        """Per image: the value and its derivatives with respect to ``a`` and ``b``."""
        raise NotImplementedError

    def __repr__(self):
        def wrap(o: Objective) -> str:
            text = o.describe()
            return f"({text})" if isinstance(o, (Combination, _Pair)) else text
        return f"{wrap(self.left)} {self.symbol} {wrap(self.right)}"


class Product(_Pair):
    """``a * b`` image by image; ``d(ab) = b da + a db``."""

    symbol = "*"

    def combine(self, a, b):
        return a * b, b, a


class Quotient(_Pair):
    """``a / b`` image by image; ``d(a/b) = da / b - a db / b^2`` (non-finite where ``b`` is 0,
    which stops the optimization with a message)."""

    symbol = "/"

    def combine(self, a, b):
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / b
            return a * inv, inv, -a * inv * inv


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

    def check(self, a: np.ndarray) -> None:
        """Raise a FlowgradError unless the index fits the batched activation ``a``."""
        if len(self.index) > a.ndim - 1:
            raise FlowgradError(f"'{self.refs[0]}' has {a.ndim - 1} axes after the batch; the "
                                f"index {list(self.index)} has {len(self.index)}")
        for axis, (i, n) in enumerate(zip(self.index, a.shape[1:])):
            if not -n <= i < n:
                raise FlowgradError(f"index {i} is out of range for axis {axis + 1} of "
                                    f"'{self.refs[0]}' (size {n})")

    def __call__(self, acts):
        a = acts[self.refs[0]]
        self.check(a)
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


class PerImage:
    """Objective ``i`` of a list on image ``i`` of a batch, in a few array operations per step.

    Calling each objective on its own one-image slice costs a dozen small numpy calls per
    image; for a batch of 8 channels that was more than the network's own step.  So the
    objectives are flattened into weighted terms (a :class:`Combination` into its terms,
    anything else one term of weight 1), and the terms that read the same kind of value at the
    same place — every :class:`Neuron` of one value with indices of one length, every
    :class:`Layer` of one value — are evaluated together: one gather of the rows they read and
    one scattered add of their gradients.  Each row goes through the same operations as it
    would alone, so a batch still equals N separate runs.  Other objectives (plugins,
    :class:`Direction`) are called image by image on their one-image slices, as before.
    """

    def __init__(self, objectives: Sequence[Objective]):
        self.n = len(objectives)
        terms = []                                   # (image, weight, leaf objective)
        for i, obj in enumerate(objectives):
            parts = obj.terms if type(obj) is Combination else [(1.0, obj)]
            terms += [(i, float(w), leaf) for w, leaf in parts]
        self.terms = terms
        self.images = np.array([i for i, _, _ in terms], dtype=np.intp)
        self.weights = np.array([w for _, w, _ in terms], dtype=np.float64)
        members: dict[tuple, list[int]] = {}
        self.singles: list[int] = []
        for t, (_, _, leaf) in enumerate(terms):
            if type(leaf) is Neuron:
                members.setdefault(("neuron", leaf.refs[0], len(leaf.index)), []).append(t)
            elif type(leaf) is Layer:
                members.setdefault(("layer", leaf.refs[0]), []).append(t)
            else:
                self.singles.append(t)
        self.groups = [_Group(key, np.array(ts, dtype=np.intp), self) for key, ts in
                       members.items()]
        # one term per image, in image order: an image's value is its term's, no sum needed
        self.one_each = [i for i, _, _ in terms] == list(range(self.n))

    def __call__(self, acts: Mapping[str, np.ndarray], refs: Sequence[str]) -> Values:
        """Values ``(N,)`` and seeds ``{ref: d sum(values) / d act}`` for every ref in ``refs``."""
        dtype = acts[refs[0]].dtype
        term_values = np.empty(len(self.terms), dtype=dtype)
        seeds = {r: np.zeros_like(acts[r]) for r in refs}
        for group in self.groups:
            group(acts, seeds, term_values)
        for t in self.singles:
            i, weight, leaf = self.terms[t]
            v, grads = leaf({r: acts[r][i:i + 1] for r in leaf.refs})
            term_values[t] = weight * v[0]
            for r, g in grads.items():
                seeds[r][i:i + 1] += weight * g
        if self.one_each:
            return term_values, seeds
        values = np.zeros(self.n, dtype=dtype)
        np.add.at(values, self.images, term_values)  # each image's terms, in order
        return values, seeds


class _Group:
    """Terms of :class:`PerImage` evaluated together: ``("neuron", ref, index length)`` or
    ``("layer", ref)``."""

    def __init__(self, key: tuple, members: np.ndarray, owner: PerImage):
        self.kind, self.ref = key[0], key[1]
        self.members = members
        self.rows = owner.images[members]
        self.weights = owner.weights[members]
        self.leaves = [owner.terms[t][2] for t in members]
        self.depth = key[2] if self.kind == "neuron" else 0
        self.index: tuple = ()
        self.shape: tuple | None = None              # the shape the index was checked against
        # no two terms touch the same element: then a plain += scatters exactly (for neurons
        # known once the shape is, as -1 and n-1 are the same element)
        self.distinct = self.kind == "layer" and len(set(self.rows.tolist())) == len(self.rows)

    def __call__(self, acts, seeds, term_values) -> None:
        a = acts[self.ref]
        rows = self.rows
        weights = self.weights.astype(a.dtype)
        seed = seeds[self.ref]
        if self.kind == "neuron":
            if a.shape != self.shape:
                for leaf in self.leaves:
                    leaf.check(a)
                self.index = tuple(np.array([leaf.index[k] % a.shape[k + 1]
                                             for leaf in self.leaves], dtype=np.intp)
                                   for k in range(self.depth))
                where = set(zip(self.rows.tolist(), *(i.tolist() for i in self.index)))
                self.distinct = len(where) == len(self.rows)
                self.shape = a.shape
            at = (rows,) + self.index
            picked = a[at]
            rest = picked.shape[1:]
            size = math.prod(rest)
            values = picked.reshape(len(rows), -1).sum(axis=1) / size if rest else picked
            grads = (weights * a.dtype.type(1.0 / size)).reshape((-1,) + (1,) * len(rest))
        else:
            at = rows
            picked = a[rows]
            size = a[0].size
            values = (picked.reshape(len(rows), -1) ** 2).sum(axis=1) / size
            grads = weights.reshape((-1,) + (1,) * (a.ndim - 1)) * (2.0 * picked / size)
        if self.distinct:
            seed[at] += grads
        else:
            np.add.at(seed, at, grads)
        term_values[self.members] = weights * values


# lucid's objectives subclass Objective, so they are imported once it exists; the package
# imports them from here (never from their module first), which keeps this the first import
from .lucid_objectives import Alignment, ChannelInterpolate, DirectionNeuron  # noqa: E402

BUILTIN_OBJECTIVES: dict[str, Callable[..., Objective]] = {
    "neuron": Neuron,
    "channel": channel,
    "layer": Layer,
    "logit": logit,
    "direction": lambda ref, v: Direction(ref, v),
    "cosine": lambda ref, v: Direction(ref, v, cosine=True),
    "diversity": Diversity,
    "direction_neuron": DirectionNeuron,
    "channel_interpolate": ChannelInterpolate,
    "alignment": Alignment,
}


def objective_factories(registry: Any = None) -> dict[str, Callable[..., Objective]]:
    """Every registered objective factory (built-in or plugin): ``{name: factory}``."""
    if registry is None:
        from ..plugins import default_registry
        registry = default_registry()
    return registry.table("objective")


def quote_ref(ref: str) -> str:
    """``ref`` as it is written inside an objective spec: as it is when it parses as a name
    (``conv1``, ``conv1.indices``), else as a quoted string (``"layer/conv_1:3"``,
    ``"input.1"``), so a spec built from any node name parses back to that name.  Names may
    hold ``/``, ``:`` and ``.`` because a channel is never a suffix of the name: it is an
    argument (``channel("layer/conv_1:3", 2)``) or an index (``"logits:0"[3]``)."""
    if all(part.isidentifier() for part in ref.split(".")):
        return ref
    return repr(ref)


def parse_objective(spec: str, factories: Mapping[str, Callable[..., Objective]] | None = None
                    ) -> Objective:
    """Parse a spec like ``"logits[3]"`` or ``"channel(conv1, 2) + 0.1 * layer(h1)"``.

    Grammar: ``node[i, ...]`` (a neuron), ``name(node, args..., key=value...)`` for every
    factory (arguments: node names, numbers, ``[v, ...]`` lists), ``+``, ``-``, ``*`` and ``/``
    (by a number or between objectives), unary ``-``.  Node names that are not Python
    identifiers can be quoted: ``layer("my-node")``; ``node.port`` selects an output.
    """
    factories = BUILTIN_OBJECTIVES if factories is None else factories
    known = _PARSED.get(spec)
    if known is not None and all(factories.get(n) is BUILTIN_OBJECTIVES[n] for n in known[1]):
        return known[0]
    try:
        tree = _syntax(spec.strip())
    except SyntaxError as e:
        raise FlowgradError(f"objective '{spec}': cannot parse ({e.msg}); write e.g. "
                            "'logits[3]' or 'channel(conv1, 2) - 0.5 * layer(h1)'") from None
    parser = _Parser(spec, dict(factories))
    objective = parser.objective(tree.body)
    if parser.builtin_only and len(_PARSED) < 4096:
        _PARSED[spec] = (objective, frozenset(parser.called))
    return objective


#: spec -> (objective, the factory names it called), for specs made by built-in factories
#: only: a ``visualize`` call parses one spec per image, at ~25 µs each, and built-in
#: objectives are values that nothing changes, so one object serves every call.  A plugin's
#: factory is called afresh every time (its objectives may keep state).
_PARSED: dict[str, tuple[Objective, frozenset[str]]] = {}


@functools.lru_cache(maxsize=4096)
def _syntax(spec: str) -> ast.Expression:
    """The syntax tree of a spec, kept: Python's parser takes ~60 µs a spec (the tree is only
    read, never changed)."""
    return ast.parse(spec, mode="eval")


class _Parser:
    def __init__(self, spec: str, factories: Mapping[str, Callable[..., Objective]]):
        self.spec = spec
        self.factories = factories
        self.called: set[str] = set()        # the factory names called
        self.builtin_only = True             # and all of them the built-in ones

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
            return self.pair(node, lambda a, b: a * b)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            if self.is_number(node.left):
                raise self.fail("a number divided by an objective is not supported; write "
                                "'1 * a / b' with objectives a and b")
            if self.is_number(node.right):
                if self.number(node.right) == 0:
                    raise self.fail("division by zero")
                return self.objective(node.left) / self.number(node.right)
            return self.pair(node, lambda a, b: a / b)
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
            if not node.args:
                raise self.fail(f"write {name}(node, ...): the first argument names a value")
            args = [self.ref(node.args[0])] + [self.argument(a) for a in node.args[1:]]
            keywords = {k.arg: self.number(k.value) for k in node.keywords if k.arg}
            if len(keywords) != len(node.keywords):
                raise self.fail(f"write {name}(node, ..., key=number) without '**'")
            self.called.add(name)
            self.builtin_only &= self.factories[name] is BUILTIN_OBJECTIVES.get(name)
            try:
                made = self.factories[name](*args, **keywords)
            except TypeError as e:
                raise self.fail(f"bad arguments for {name}: {e}") from None
            return _objective(made)
        if isinstance(node, (ast.Name, ast.Attribute)):
            ref = self.ref(node)
            raise self.fail(f"'{ref}' alone is a value, not an objective; write e.g. "
                            f"'{ref}[0]', 'channel({ref}, 0)' or 'layer({ref})'")
        raise self.fail(f"unsupported syntax '{ast.unparse(node)}'")

    def pair(self, node: ast.BinOp, make: Callable[[Objective, Objective], Objective]
             ) -> Objective:
        """Two objectives multiplied or divided; a batch-level operand is reported here."""
        left, right = self.objective(node.left), self.objective(node.right)
        try:
            return make(left, right)
        except FlowgradError as e:
            raise self.fail(e.diagnostics[0].message) from None

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
