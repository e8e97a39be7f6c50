"""Input optimization: the training loop turned around — params frozen, the input a leaf.

Every step: parameterization -> image; penalties on the image; random transforms; the model's
preprocessing; forward to the objectives' values; seed them (negated: the optimizer
minimises); backward to the input; back through the preprocessing, the transforms and the
parameterization; one optimizer update.  The objective values and the penalties are kept
apart, so a caption never reports a penalised total under an objective's name, and an
objective whose gradient never leaves zero (a unit that never activates) is named in a
warning instead of silently yielding a flat image.  The optimizer is
the same :mod:`flowgrad.optim` code that trains weights.

N images chase N objectives in one forward/backward.  Every stage treats each image as if it
were alone (objectives sum over images and are evaluated row by row, each image has its own
seeded generator, the optimizers are element-wise), so the batch gives the same images as N
separate runs from the same start — to float64 rounding, as the tests check.

The network runs as the plan's *frozen twin* (:func:`frozen_view`): the same graph with the
params read as constants, compiled once per plan and reused by every later call, so a short
call costs about one step.  The twin reads the plan's own param arrays, so training the plan
between calls needs nothing; like the plan itself, it is not meant for concurrent calls.
"""
from __future__ import annotations

import math
import warnings
import weakref
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import networkx as nx
import numpy as np

from ..errors import FlowgradError
from ..optim import make_optimizer
from ..plan import Plan
from .batch import BatchTerms
from .objectives import Combination, Neuron, Objective, PerImage, parse_objective
from .param import Pipeline
from .penalties import apply_penalties
from .preprocess import Preprocess, preprocess_of
from .transforms import Transforms


@dataclass
class Visualization:
    """The result: ``images`` in the input's shape ``(N, *input shape)``, the same as ``views``
    ``(N, C, H, W)``, the objectives' ``labels``; per step, each image's objective ``values``
    and, apart, the weighted sum of its ``penalties`` (what was maximised is their difference);
    ``snapshots`` ``(step, views)`` after the chosen numbers of steps; the labels of the
    ``inactive`` objectives, whose gradient was zero at every step."""

    images: np.ndarray
    views: np.ndarray
    labels: list[str]
    values: list[np.ndarray] = field(default_factory=list)
    penalties: list[np.ndarray] = field(default_factory=list)
    snapshots: list[tuple[int, np.ndarray]] = field(default_factory=list)
    inactive: list[str] = field(default_factory=list)

    def at(self, step: int) -> np.ndarray:
        """The views ``(N, C, H, W)`` after ``step`` steps (a threshold or snapshot step)."""
        for k, views in self.snapshots:
            if k == step:
                return views
        raise FlowgradError(f"no images kept at step {step} (kept: "
                            f"{', '.join(str(k) for k, _ in self.snapshots) or 'none'})")

    def captions(self) -> list[str]:
        """Each label with its final objective value, and the penalties apart when there were
        any (a caption never shows a penalised total under the objective's name)."""
        if not self.values:
            return list(self.labels)
        final = self.values[-1]
        penalty = self.penalties[-1] if self.penalties else np.zeros_like(final)
        shown = bool(np.any(penalty))
        return [f"{label}\n= {v:.3g}" + (f"\npenalties {p:.3g}" if shown else "")
                for label, v, p in zip(self.labels, final, penalty)]


class InactiveObjectiveWarning(UserWarning):
    """An objective's gradient was zero at every step: its image only followed the penalties."""


def frozen(plan: Plan) -> Plan:
    """A plan in eval mode over a copy of ``plan``'s graph whose params are constants holding
    ``plan``'s own live arrays: backward then computes only the gradient of the input, never
    the weights', and nothing is copied, so training ``plan`` between two calls is seen.

    Params become constants (not frozen params) because a plan copies every param array it is
    built from, so that optimizers may update it in place, while it reads constants as given.
    """
    return _twin(plan, {})[0]


def _twin(plan: Plan, folded: dict[str, str], sliced: dict[str, tuple[int, ...]] | None = None
          ) -> tuple[Plan, list]:
    """:func:`frozen` with the ``{conv: batch_norm}`` pairs ``folded``
    (:func:`fold_batch_norms`) and the ``{conv: channels}`` of ``sliced``
    (:func:`slice_channels`), and what to refresh before each call."""
    graph = plan.graph.copy()
    for name, value in plan.params.items():
        graph.make_const(name, value)
    folds = fold_batch_norms(graph, folded, plan.dtype) if folded else []
    if sliced:
        folds += slice_channels(graph, sliced, plan.dtype)
    out = Plan(graph, dtype=plan.dtype, seed=plan.seed)
    return out.eval(), folds


#: each plan's frozen twins (one per set of batch norms an objective keeps unfolded), built
#: once -- compiling and the first runs of its programs are the expensive part of a short
#: visualize call -- and dropped with the plan
_FROZEN: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

#: how many twins a plan keeps (one per set of unfolded pairs and of sliced channels: a layer
#: rendered a batch of channels at a time asks for one per batch)
TWINS = 4

#: a twin's folded batch norms (:class:`_Fold`) and sliced convolutions (:class:`_Slice`),
#: refreshed from the live params every call
_FOLDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def frozen_view(plan: Plan, refs: Sequence[str] = (),
                sliced: dict[str, tuple[int, ...]] | None = None) -> Plan:
    """:func:`frozen` ``(plan)``, cached per plan, with every convolution followed only by a
    batch norm folded into one convolution (:func:`fold_batch_norms`) unless ``refs`` (the
    values an objective reads) name the convolution or the batch norm; and each convolution
    of ``sliced`` computing only the given output channels (:func:`slice_channels`).

    Training updates the shared arrays in place, which needs nothing; the folded and sliced
    weights are recomputed from them at every call (a few small per-channel products).  The
    twins are rebuilt only if the plan's param arrays were replaced by other arrays, or its
    graph, dtype or seed changed; the last :data:`TWINS` of them are kept."""
    cached = _FROZEN.get(plan)
    if not (cached is not None and cached[0] is plan.graph and cached[1] == plan.dtype
            and cached[2] == plan.seed and len(cached[3]) == len(plan.params)
            and all(cached[3].get(k) is v for k, v in plan.params.items())):
        cached = (plan.graph, plan.dtype, plan.seed, dict(plan.params),
                  _fold_candidates(plan.graph), {})
        _FROZEN[plan] = cached
    candidates, twins = cached[4], cached[5]
    named = set()
    for ref in refs:
        try:
            named.add(plan.graph.resolve(ref)[0])
        except KeyError:            # visualize names the unknown ref in its own message
            pass
    kept = frozenset(conv for conv, bn in candidates.items() if conv in named or bn in named)
    key = (kept, tuple(sorted((sliced or {}).items())))
    net = twins.pop(key, None)
    if net is None:
        net, _FOLDS[net] = _twin(plan, {c: b for c, b in candidates.items() if c not in kept},
                                 dict(key[1]))
        while len(twins) >= TWINS:          # the least recently used goes
            del twins[next(iter(twins))]
    twins[key] = net                        # (re)inserted last: the most recently used
    for fold in _FOLDS[net]:
        fold.refresh()
    return net


@dataclass
class _Fold:
    """One convolution and the evaluation-mode batch norm after it, as one convolution:
    ``bn(conv(x, W) + b) = conv(x, a W) + (a b + beta - a mean)`` with ``a = gamma /
    sqrt(var + eps)`` per output channel.  ``W`` and ``b`` are the arrays the folded
    convolution reads, recomputed in place from the live ``sources`` by :meth:`refresh`."""

    W: np.ndarray
    b: np.ndarray
    sources: tuple          # (W, b or None, gamma, beta, mean, var): the live arrays
    eps: float

    def refresh(self) -> None:
        W, b, gamma, beta, mean, var = self.sources
        a = gamma * (1.0 / np.sqrt(var + self.eps))         # as BatchNorm.affine computes it
        np.multiply(W, a.reshape((-1,) + (1,) * (W.ndim - 1)), out=self.W, casting="unsafe")
        shift = beta - mean * a
        if b is not None:
            shift = shift + b * a
        self.b[...] = shift


def _fold_candidates(graph) -> dict[str, str]:
    """``{conv: batch_norm}``: every convolution whose output only a batch norm reads, as its
    ``x``, with the weights, the bias and the batch norm's four vectors read straight from
    params or constants (not computed, not shared through a branch)."""
    def leaf(src) -> bool:
        return src is not None and src[1] == 0 and (graph.is_param(src[0])
                                                    or graph.is_const(src[0]))

    found = {}
    for name in graph.ops:
        if graph.op_of(name).type != "conv":
            continue
        readers = graph.consumers(name, 0)
        if len(readers) != 1 or readers[0][1] != 0:
            continue
        bn = readers[0][0]
        if not graph.is_op(bn) or graph.op_of(bn).type != "batch_norm":
            continue
        sources = graph.input_sources(name)
        bias = sources[2] if len(sources) > 2 else None
        if not leaf(sources[1]) or (bias is not None and not leaf(bias)) \
                or not all(leaf(s) for s in graph.input_sources(bn)[1:5]):
            continue
        if graph.value_of(sources[1][0]).dtype.kind != "f":
            continue
        found[name] = bn
    return found


def fold_batch_norms(graph, pairs: dict[str, str], dtype) -> list[_Fold]:
    """Rewrite ``graph`` (a frozen twin's: params are constants) so that each ``conv`` of
    ``pairs`` reads new constants ``<conv>#folded_W`` and ``#folded_b`` and takes the place
    of its batch norm, which is removed; return the folds, to :meth:`_Fold.refresh` before
    every run.

    Why: in evaluation mode a batch norm is a per-channel affine map, and after a
    convolution it is the same function as a convolution with scaled weights -- so an input
    optimization step through ResNet-14 runs no batch norm forward or backward at all
    (onnxruntime folds them too).  The shapes do not change, so the graph stays prepared.
    """
    folds = []
    for conv, bn in pairs.items():
        sources = graph.input_sources(conv)
        W_name = sources[1][0]
        b_name = sources[2][0] if len(sources) > 2 and sources[2] is not None else None
        vectors = [s[0] for s in graph.input_sources(bn)[1:5]]
        W = graph.value_of(W_name)
        fold = _Fold(np.empty(W.shape, dtype), np.empty(graph.value_of(vectors[0]).shape, dtype),
                     (W, None if b_name is None else graph.value_of(b_name),
                      *(graph.value_of(v) for v in vectors)), float(graph.op_of(bn).epsilon))
        fold.refresh()
        order = graph.order_of(W_name)
        for name in (W_name, b_name):
            if name is not None:
                graph.dag.remove_edge(name, conv)
        for port, (suffix, value) in ((1, ("W", fold.W)), (2, ("b", fold.b))):
            new = f"{conv}#folded_{suffix}"
            graph.add_const(new, value, order=order + port / 4)    # beside the weights
            graph.connect(new, 0, conv, port)
        for _, dst, data in list(graph.dag.out_edges(bn, data=True)):
            graph.connect(conv, 0, dst, data["dst_port"])
        graph.dag.remove_node(bn)
        folds.append(fold)
    graph.prepared = True           # every value keeps its shape: the inferred specs hold
    return folds


@dataclass
class _Slice:
    """A convolution computing only ``channels`` of its outputs: ``W`` and ``b`` are the rows
    of the live ``sources`` (weights, bias or None) it reads, copied in place by
    :meth:`refresh`."""

    W: np.ndarray
    b: np.ndarray | None
    sources: tuple
    channels: np.ndarray

    def refresh(self) -> None:
        W, b = self.sources
        np.take(W.astype(self.W.dtype, copy=False), self.channels, axis=0, out=self.W)
        if b is not None:
            np.take(b.astype(self.b.dtype, copy=False), self.channels, out=self.b)


def slice_channels(graph, sliced: dict[str, tuple[int, ...]], dtype) -> list[_Slice]:
    """Rewrite ``graph`` (a frozen twin's) so that each ``conv`` of ``sliced`` reads new
    constants ``<conv>#channels_W`` (``_b``) holding only the rows of its weights (bias) for
    the given output channels, and so computes only those; what read the convolution is cut
    off from it (nothing there runs: :func:`sliceable` allows it only for a value no other
    objective's value depends on).

    Why: an objective on a channel reads one channel of the layer, yet a convolution's
    forward and backward cost is proportional to its output channels -- 8 channels of
    LeNet's 32-channel ``conv2`` are a quarter of its work, and the gradient reaching the
    input is the same, since the other channels' seeds are zero.
    """
    slices = []
    for conv, channels in sliced.items():
        sources = graph.input_sources(conv)
        W_name = sources[1][0]
        b_name = sources[2][0] if len(sources) > 2 and sources[2] is not None else None
        W = graph.value_of(W_name)
        index = np.array(channels, dtype=np.intp)
        cut = _Slice(np.empty((len(index),) + W.shape[1:], dtype),
                     None if b_name is None else np.empty(len(index), dtype),
                     (W, None if b_name is None else graph.value_of(b_name)), index)
        cut.refresh()
        order = graph.order_of(W_name)
        for port, name, value in ((1, W_name, cut.W), (2, b_name, cut.b)):
            if name is None:
                continue
            graph.dag.remove_edge(name, conv)
            new = f"{conv}#channels_{'W' if port == 1 else 'b'}"
            graph.add_const(new, value, order=order + port / 4)
            graph.connect(new, 0, conv, port)
        graph.dag.remove_edges_from(list(graph.dag.out_edges(conv, keys=True)))
        (spec,) = graph.specs(conv)
        graph.set_specs(conv, (replace(spec, shape=(spec.shape[0], len(index))
                                       + tuple(spec.shape[2:])),))
        slices.append(cut)
    graph.prepared = True
    return slices


def sliceable(graph, objectives: Sequence[Objective], refs: Sequence[str]
              ) -> tuple[dict[str, tuple[int, ...]], list[Objective]]:
    """Which convolutions may compute only the channels the objectives read, and the
    objectives with their channel indices renumbered for that: ``({conv: channels},
    objectives)``.

    A value qualifies when it is output 0 of an ungrouped ``conv`` whose weights (and bias) are
    params or constants, every term that reads it is a :class:`Neuron` / ``channel`` with a channel
    index (no whole-layer term, no batch term, no product), the indices name fewer channels
    than it has, and no other objective's value lies downstream of it (the forward then
    stops at it, so nothing else needs the other channels)."""
    leaves_of = [o.terms if type(o) is Combination else [(1.0, o)] for o in objectives]
    readers: dict[str, list[Objective]] = {}
    for leaves in leaves_of:
        for _, leaf in leaves:
            for r in leaf.refs:
                readers.setdefault(r, []).append(leaf)
    nodes = {}
    for r in refs:
        try:
            nodes[r] = graph.resolve(r)
        except KeyError:
            return {}, list(objectives)
    picked: dict[str, tuple[str, dict[int, int]]] = {}
    for r, (node, port) in nodes.items():
        if port != 0 or not graph.is_op(node) or graph.op_of(node).type != "conv" \
                or getattr(graph.op_of(node), "group", 1) != 1:     # groups split the rows
            continue
        sources = graph.input_sources(node)
        if not all(s is not None and s[1] == 0 and (graph.is_param(s[0]) or graph.is_const(s[0]))
                   for s in sources[1:] if s is not None) or sources[1] is None:
            continue
        spec = graph.specs(node)[0]
        count = spec.shape[1] if spec is not None and spec.ndim > 1 else None
        leaves = readers.get(r, [])
        if not isinstance(count, int) or not leaves or not all(
                type(leaf) is Neuron and leaf.index and -count <= leaf.index[0] < count
                for leaf in leaves):
            continue
        channels = sorted({leaf.index[0] % count for leaf in leaves})
        if len(channels) == count:
            continue
        others = {n for other, (n, _) in nodes.items() if other != r}
        if node in others or others & nx.descendants(graph.dag, node):
            continue
        picked[r] = (node, {c: i for i, c in enumerate(channels)})
    if not picked:
        return {}, list(objectives)

    def renumber(leaf: Objective) -> Objective:
        if type(leaf) is Neuron and leaf.refs[0] in picked:
            _, position = picked[leaf.refs[0]]
            count = graph.specs(nodes[leaf.refs[0]][0])[0].shape[1]
            return Neuron(leaf.refs[0], position[leaf.index[0] % count], *leaf.index[1:])
        return leaf

    renumbered = [Combination([(w, renumber(leaf)) for w, leaf in leaves])
                  if type(o) is Combination else renumber(o)
                  for o, leaves in zip(objectives, leaves_of)]
    return {node: tuple(position) for node, position in picked.values()}, renumbered


def view_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    """How a sample of the input is seen as an image ``(C, H, W)``: as is for 3 axes, one
    channel for 2, a square for a flat vector whose length is a square (8×8 digits), else a
    1-pixel-tall strip."""
    shape = tuple(input_shape)
    if len(shape) == 3:
        return shape
    if len(shape) == 2:
        return (1,) + shape
    if len(shape) == 1:
        side = math.isqrt(shape[0])
        return (1, side, side) if side * side == shape[0] else (1, 1, shape[0])
    raise FlowgradError(f"cannot view an input of shape {shape} as an image")


def visualize(plan: Plan, objectives: Sequence[Objective | str], input: str | None = None,
              steps: int | None = None, lr: float = 0.05, optimizer: str = "adam",
              param: str | Callable[..., Any] = "fourier", decorrelate: bool | None = None,
              value_range: tuple[float, float] = (0.0, 1.0), range_mode: str = "sigmoid",
              transforms: Transforms | None = None, penalties: dict[str, float] | None = None,
              penalty_center: float = 0.0, diversity: tuple[str, float] | None = None,
              seed: int = 0, ids: Sequence[int] | None = None,
              view: tuple[int, int, int] | None = None, init: np.ndarray | None = None,
              progress: bool = False, snapshot_every: int = 0, thresholds: Sequence[int] = (),
              preprocess: "str | Preprocess | None" = None,
              input_shape: Sequence[int] | None = None,
              callback: Callable[[int, np.ndarray, np.ndarray], Any] | None = None,
              registry: Any = None) -> Visualization:
    """Optimize one image per objective; see the module doc and docs/visualize.md.

    ``objectives`` are :class:`Objective` s or spec strings (``"logits[3]"``); image ``i``
    maximises objective ``i``; batch-level terms in them (``diversity``, ``alignment``…) act
    on the images that name them (:mod:`.batch`).  ``ids`` (default ``0..N-1``) seed each
    image's generator, so image ``i`` of a batch equals a single run with ``ids=[ids[i]]``.
    ``diversity`` ``(node, weight)`` adds the Gram diversity term over the whole batch.
    ``init`` gives the starting parameters (shape ``(N, *parameter shape)``) instead of seeded
    noise.  ``param`` names a parameterization or is a factory ``(shape, *, sd, decay)``.

    ``steps`` defaults to 256, or to the largest of ``thresholds``: the step counts after which
    the images are kept (``result.at(k)``, saved as ``<stem>_step<k>.png``), as are those of
    every ``snapshot_every`` steps.  ``preprocess`` (a :class:`Preprocess` or a preset name such
    as ``"imagenet"``) maps the images to what the model expects; ``input_shape`` sizes an input
    with free dimensions (batch axis excluded).
    """
    from .objectives import Diversity, objective_factories

    factories = None
    objs: list[Objective] = []
    for o in objectives:
        if isinstance(o, str):
            factories = factories or objective_factories(registry)
            o = parse_objective(o, factories)
        objs.append(o)
    if not objs:
        raise FlowgradError("give at least one objective")
    n = len(objs)
    ids = list(range(n)) if ids is None else list(ids)
    if len(ids) != n:
        raise FlowgradError(f"{n} objectives but {len(ids)} ids")
    steps, kept = _steps(steps, thresholds, snapshot_every)
    labels = [o.describe() for o in objs]
    extra = float(diversity[1]) * Diversity(diversity[0]) if diversity is not None else None
    batch = BatchTerms(objs, extra)
    refs = tuple(dict.fromkeys([r for o in objs for r in o.refs] + list(batch.refs)))
    # a conv layer's channels: its convolution computes only those the objectives read
    sliced, renumbered = sliceable(plan.graph, objs + ([extra] if extra is not None else []),
                                   refs)
    if sliced:
        objs = renumbered[:n]
        batch = BatchTerms(objs, extra)
    net = frozen_view(plan, refs, sliced)
    graph = net.graph
    input = _input_node(graph, input) if input else _float_input(graph)
    in_shape = _input_shape(input, graph.spec_of(input).shape[1:], input_shape)
    view = tuple(view) if view is not None else view_shape(in_shape)
    if math.prod(view) != math.prod(in_shape):
        raise FlowgradError(f"view {view} does not have the {math.prod(in_shape)} values of "
                            f"input '{input}' {in_shape}")
    for ref in refs:
        try:
            graph.resolve(ref)
        except KeyError as e:
            raise FlowgradError(f"objective: {e.args[0]}") from None
    pipeline = Pipeline(view, kind=param, registry=registry, decorrelate_colors=decorrelate,
                        value_range=value_range, range_mode=range_mode)
    pre = preprocess_of(preprocess)
    transforms = transforms or Transforms()
    # each image draws from its own generator, seeded by its id, so that it draws in a batch
    # what it draws alone; made only if something draws (a given start and no transforms
    # draw nothing, and making 8 generators costs as much as a small network's step)
    rngs = [np.random.default_rng([seed, i]) for i in ids] \
        if init is None or not transforms.identity else []
    dtype = net.dtype
    if init is None:
        p = np.stack([pipeline.init(r) for r in rngs]).astype(dtype)
    else:
        p = np.array(init, dtype=dtype, copy=True)
    opt = make_optimizer(optimizer, {"image": p}, registry=registry, lr=lr)
    penalties = penalties or {}
    per_image = PerImage(batch.per_image)
    result = Visualization(np.empty(0), np.empty(0), labels)
    moved = np.zeros(n, dtype=bool)        # has image i's objective ever had a gradient?
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=steps, unit="step", desc="visualize", leave=False, dynamic_ncols=True,
                   disable=None)
    try:
        for step in range(steps):
            x, back_param = pipeline.forward(p)
            pen_values, pen_grad = apply_penalties(x, penalties, penalty_center)
            xt, back_t = transforms.apply(x, rngs)
            if pre is not None:
                xt, back_pre = pre.apply(xt)
            acts = net.forward({input: xt.reshape((n,) + in_shape)}, outputs=refs)
            values, seeds = per_image(acts, refs)
            batch(acts, values, seeds)
            grads = net.backward({r: -g for r, g in seeds.items()}, wrt=[input])
            g_in = grads[input].reshape((n,) + view)
            moved |= np.any(g_in.reshape(n, -1) != 0, axis=1)
            gx = back_t(back_pre(g_in) if pre is not None else g_in)
            if pen_grad is not None:
                gx = gx + pen_grad
            opt.step({"image": back_param(gx)})
            total = values - pen_values
            result.values.append(values)
            result.penalties.append(pen_values)
            if not np.all(np.isfinite(total)):
                raise FlowgradError(f"the objective became non-finite at step {step + 1}; "
                                    "lower the learning rate (or keep a quotient's "
                                    "denominator away from 0)")
            if step + 1 in kept:
                result.snapshots.append((step + 1, pipeline.forward(p)[0]))
            if callback is not None:
                callback(step, x, total)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(objective=f"{float(np.mean(values)):.3g}", refresh=False)
    finally:
        if bar is not None:
            bar.close()
    x, _ = pipeline.forward(p)
    result.views = x
    result.images = x.reshape((n,) + in_shape)
    result.inactive = [label for label, m in zip(result.labels, moved) if not m] if steps else []
    if result.inactive:
        one = len(result.inactive) == 1
        warnings.warn(f"{', '.join(result.inactive)}: the gradient of "
                      f"{'this objective' if one else 'these objectives'} was zero at every "
                      f"one of the {steps} steps, so {'its image' if one else 'their images'} "
                      "only followed the penalties (a unit that never activates, e.g. a ReLU "
                      "output that is 0 for the starting image: optimize its pre-activation "
                      "instead)", InactiveObjectiveWarning, stacklevel=2)
    return result


def _steps(steps: int | None, thresholds: Sequence[int], snapshot_every: int
           ) -> tuple[int, set[int]]:
    """The number of steps and the step counts after which to keep the images."""
    thresholds = sorted({int(t) for t in thresholds})
    if thresholds and thresholds[0] < 1:
        raise FlowgradError(f"thresholds count steps from 1, got {thresholds[0]}")
    if steps is None:
        steps = thresholds[-1] if thresholds else 256
    if thresholds and thresholds[-1] > steps:
        raise FlowgradError(f"threshold {thresholds[-1]} is beyond the {steps} steps")
    kept = set(thresholds)
    if snapshot_every:
        kept.update(range(snapshot_every, steps + 1, snapshot_every))
    return steps, kept


def _input_shape(input: str, declared: Sequence[int | None],
                 given: Sequence[int] | None) -> tuple[int, ...]:
    """The shape of one sample of ``input``: the declared one, its free dims sized by
    ``given`` (which must agree with every fixed dim)."""
    declared = tuple(declared)
    if given is None:
        if None in declared:
            raise FlowgradError(f"input '{input}' has free dimensions {declared}: pass "
                                f"input_shape=(...) (--input-shape) with a size for each, "
                                f"batch axis excluded")
        return declared
    shape = tuple(int(d) for d in given)
    if len(shape) != len(declared) or any(d is not None and d != s
                                          for d, s in zip(declared, shape)):
        raise FlowgradError(f"input_shape {shape} does not fit input '{input}' {declared} "
                            "(batch axis excluded)")
    if min(shape, default=1) < 1:
        raise FlowgradError(f"input_shape {shape} has an empty dimension")
    return shape


def _input_node(graph, name: str) -> str:
    """The input node ``name`` is, or is an alias of (a model's own name, e.g. ``input.1`` in
    a graph converted to YAML as ``input_1``); a FlowgradError naming the float inputs else."""
    floats = [n for n in graph.inputs if graph.spec_of(n).dtype.kind == "f"]
    try:
        node = graph.leaf(name)
    except KeyError:
        node = None
    if node not in floats:
        raise FlowgradError(f"cannot optimize '{name}': it is not a float input of the graph "
                            f"(float inputs: {', '.join(floats) or 'none'})")
    return node


def _float_input(graph) -> str:
    floats = [n for n in graph.inputs if graph.spec_of(n).dtype.kind == "f"]
    if len(floats) != 1:
        raise FlowgradError(f"say which input to optimize with input=... / --input (float "
                            f"inputs: {', '.join(floats) or 'none'})")
    return floats[0]
