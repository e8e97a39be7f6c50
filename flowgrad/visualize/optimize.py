"""Input optimization: the training loop turned around — params frozen, the input a leaf.

Every step: parameterization -> image; penalties on the image; random transforms; forward to
the objectives' values; seed them (negated: the optimizer minimises); backward to the input;
back through the transforms and the parameterization; one optimizer update.  The optimizer is
the same :mod:`flowgrad.optim` code that trains weights.

N images chase N objectives in one forward/backward.  Every stage is computed image by image
(objectives sum over images, each image has its own seeded generator, the optimizers are
element-wise), so the batch gives the same images as N separate runs from the same start —
to float64 rounding, as the tests check.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import FlowgradError
from ..optim import make_optimizer
from ..scheduler import Plan
from .objectives import Objective, parse_objective
from .param import Pipeline
from .penalties import apply_penalties
from .transforms import Transforms


@dataclass
class Visualization:
    """The result: ``images`` in the input's shape ``(N, *input shape)``, the same as ``views``
    ``(N, C, H, W)``, the objectives' ``labels``, per-step objective values and snapshots."""

    images: np.ndarray
    views: np.ndarray
    labels: list[str]
    values: list[np.ndarray] = field(default_factory=list)
    snapshots: list[tuple[int, np.ndarray]] = field(default_factory=list)


def frozen(plan: Plan) -> Plan:
    """A plan over a copy of the graph with every param frozen, in eval mode: backward then
    computes only the gradient of the input, not of the weights."""
    graph = plan.export_graph()
    for name in graph.params:
        graph.node(name)["trainable"] = False
    out = Plan(graph, dtype=plan.dtype, seed=plan.seed)
    return out.eval()


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
              steps: int = 256, lr: float = 0.05, optimizer: str = "adam",
              param: str = "fourier", decorrelate: bool | None = None,
              value_range: tuple[float, float] = (0.0, 1.0), range_mode: str = "sigmoid",
              transforms: Transforms | None = None, penalties: dict[str, float] | None = None,
              penalty_center: float = 0.0, diversity: tuple[str, float] | None = None,
              seed: int = 0, ids: Sequence[int] | None = None,
              view: tuple[int, int, int] | None = None, init: np.ndarray | None = None,
              progress: bool = False, snapshot_every: int = 0,
              callback: Callable[[int, np.ndarray, np.ndarray], Any] | None = None,
              registry: Any = None) -> Visualization:
    """Optimize one image per objective; see the module doc and docs/visualize.md.

    ``objectives`` are :class:`Objective` s or spec strings (``"logits[3]"``); image ``i``
    maximises objective ``i``.  ``ids`` (default ``0..N-1``) seed each image's generator,
    so image ``i`` of a batch equals a single run with ``ids=[ids[i]]``.  ``diversity``
    ``(node, weight)`` adds the batch-level Gram diversity term.  ``init`` gives the starting
    parameters (shape ``(N, *parameter shape)``) instead of seeded noise.
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
    net = frozen(plan)
    graph = net.graph
    input = input or _float_input(graph)
    spec = graph.node(input)["spec"]
    in_shape = tuple(spec.shape[1:])
    if None in in_shape:
        raise FlowgradError(f"input '{input}' has unknown dims {in_shape}; give its shape")
    view = tuple(view) if view is not None else view_shape(in_shape)
    if math.prod(view) != math.prod(in_shape):
        raise FlowgradError(f"view {view} does not have the {math.prod(in_shape)} values of "
                            f"input '{input}' {in_shape}")
    batch_obj: Objective | None = None
    if diversity is not None:
        batch_obj = float(diversity[1]) * Diversity(diversity[0])
    refs = tuple(dict.fromkeys([r for o in objs for r in o.refs]
                               + list(batch_obj.refs if batch_obj else ())))
    for ref in refs:
        try:
            graph.resolve(ref)
        except KeyError as e:
            raise FlowgradError(f"objective: {e.args[0]}") from None
    pipeline = Pipeline(view, kind=param, decorrelate_colors=decorrelate,
                        value_range=value_range, range_mode=range_mode)
    rngs = [np.random.default_rng([seed, i]) for i in ids]
    dtype = net.dtype
    if init is None:
        p = np.stack([pipeline.init(r) for r in rngs]).astype(dtype)
    else:
        p = np.array(init, dtype=dtype, copy=True)
    opt = make_optimizer(optimizer, {"image": p}, registry=registry, lr=lr)
    transforms = transforms or Transforms()
    penalties = penalties or {}
    result = Visualization(np.empty(0), np.empty(0), [o.describe() for o in objs])
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
            acts = net.forward({input: xt.reshape((n,) + in_shape)}, outputs=refs)
            values, seeds = _evaluate(objs, batch_obj, acts, refs)
            total = values - pen_values
            grads = net.backward({r: -g for r, g in seeds.items()}, wrt=[input])
            gx = back_t(grads[input].reshape((n,) + view))
            if pen_grad is not None:
                gx = gx + pen_grad
            opt.step({"image": back_param(gx)})
            result.values.append(total)
            if not np.all(np.isfinite(total)):
                raise FlowgradError(f"the objective became non-finite at step {step + 1}; "
                                    "lower the learning rate")
            if snapshot_every and (step + 1) % snapshot_every == 0:
                result.snapshots.append((step + 1, x.copy()))
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
    return result


def _evaluate(objs, batch_obj, acts, refs):
    """Per-image objectives (objective i sees image i only) plus the batch term."""
    n = len(objs)
    values = np.zeros(n, dtype=next(iter(acts.values())).dtype)
    seeds = {r: np.zeros_like(acts[r]) for r in refs}
    for i, obj in enumerate(objs):
        sliced = {r: acts[r][i:i + 1] for r in obj.refs}
        v, g = obj(sliced)
        values[i] = v[0]
        for r, grad in g.items():
            seeds[r][i:i + 1] += grad
    if batch_obj is not None:
        v, g = batch_obj(acts)
        values = values + v
        for r, grad in g.items():
            seeds[r] = seeds[r] + grad
    return values, seeds


def _float_input(graph) -> str:
    floats = [n for n in graph.inputs if graph.node(n)["spec"].dtype.kind == "f"]
    if len(floats) != 1:
        raise FlowgradError(f"say which input to optimize with input=... / --input (float "
                            f"inputs: {', '.join(floats) or 'none'})")
    return floats[0]
