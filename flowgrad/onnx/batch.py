"""Static or dynamic batch: does an imported model really take any batch size?

The importer makes the leading axis of every input a free batch axis (``dynamic_batch=True``),
even where the model declares a fixed one (most exporters write ``1``), so that one compiled
plan serves any batch.  That is only right when the model's own shape arithmetic carries the
batch through.  Many models hard-code it instead: ``Reshape(x, [1, 9216])`` (seven of the onnx
package's nine light ImageNet models), or a detection head reshaping to ``[1, 3, 85, 6400]``.
Fed a batch of 2, the first fails at a later MatMul; the second silently folds the batch into
another axis and returns ``(1, 7098, 6)`` instead of two ``(3549, 6)`` results.

:func:`fixed_batch_reason` finds out by shape inference alone, before anything runs: it infers
every node's output shapes with the declared batch ``b`` and with ``b + 1``.  In a model that
carries its batch, an output's leading axis follows the batch.  The batch is *lost* when, at
``b + 1``, inference fails (an op refuses its shapes), or an output keeps its leading size while
its number of elements changes (the batch went into another axis).  The node to blame is the
first one whose output does just that while an input of it followed the batch; for a
``reshape`` to a constant shape the message quotes the shape.  The loader then keeps the
model's declared batch (the graph's inputs are static), says why in ``graph.meta["onnx"]``, and
a batch the model cannot take is refused when fed, with that reason — never answered wrongly.
"""
from __future__ import annotations

import math

from ..graph import Graph
from ..op import Spec


def _infer(graph: Graph, order: list[str], batch: dict[str, int]
           ) -> tuple[dict[str, tuple[Spec, ...]], tuple[str, str] | None]:
    """Every node's output specs with input ``n``'s leading axis set to ``batch[n]``; and the
    first node (with the error) whose op refuses its input shapes, or None."""
    specs: dict[str, tuple[Spec, ...]] = {}
    for name in order:
        if graph.is_input(name):
            spec = graph.spec_of(name)
            if name in batch and spec.ndim:
                spec = Spec((batch[name],) + spec.shape[1:], spec.dtype)
            specs[name] = (spec,)
            continue
        if graph.is_leaf(name):
            specs[name] = (graph.spec_of(name),)
            continue
        sources = graph.input_sources(name)
        if any(s is not None and s[0] not in specs for s in sources):
            continue                                  # downstream of a failure
        ins = [None if s is None else specs[s[0]][s[1]] for s in sources]
        try:
            specs[name] = tuple(graph.op_of(name).infer(*ins))
        except Exception as e:     # any refusal, a plugin's too: the batch is not verified
            return specs, (name, str(e))
    return specs, None


def _size(spec: Spec) -> int | None:
    if any(d is None for d in spec.shape):
        return None
    return math.prod(spec.shape)


def _moves_batch(a: Spec, b: Spec) -> bool:
    """``a`` and ``b`` (the same value at two batch sizes) keep their leading size while their
    number of elements differs: the batch went into another axis."""
    if a.ndim == 0 or a.ndim != b.ndim or a.shape[0] is None or a.shape[0] != b.shape[0]:
        return False
    sa, sb = _size(a), _size(b)
    return sa is not None and sb is not None and sa != sb


def _follows(a: Spec, b: Spec) -> bool:
    return a.ndim > 0 and a.ndim == b.ndim and a.shape[0] != b.shape[0]


def _where(graph: Graph, node: str) -> str:
    onnx_name = graph.extra(node, "onnx_name")
    return f"node '{onnx_name}'" if onnx_name else f"node '{node}'"


def _constant_shape(graph: Graph, node: str) -> list[int] | None:
    """The target shape of a ``reshape`` node fixed at load time (its ``shape`` attribute or
    a constant shape input), else None."""
    op = graph.op_of(node)
    if op.type != "reshape":
        return None
    sources = graph.input_sources(node)
    if len(sources) > 1 and sources[1] is not None:
        if not graph.is_const(sources[1][0]):
            return None
        return [int(v) for v in graph.value_of(sources[1][0]).reshape(-1)]
    shape = getattr(op, "shape", None)
    return None if shape is None else [int(v) for v in shape]


def _describe(graph: Graph, node: str, one: Spec, two: Spec, b: int) -> str:
    op = graph.op_of(node)
    shape = _constant_shape(graph, node)
    if shape is not None:
        return f"{_where(graph, node)} reshapes to a constant shape {shape}"
    return (f"{_where(graph, node)} ({op.type}) gives shape {list(one.shape)} at batch {b} and "
            f"{list(two.shape)} at batch {b + 1}")


def fixed_batch_reason(graph: Graph, declared: dict[str, int]) -> str | None:
    """Why ``graph`` (imported with dynamic inputs ``declared``: ``{input: declared batch}``)
    cannot take another batch than the declared one, or None if it can (see the module
    docstring)."""
    if not declared:
        return None
    order = graph.topological_order()
    one, failed_one = _infer(graph, order, dict(declared))
    if failed_one is not None:
        return None               # the declared batch itself does not infer: nothing to judge
    b = next(iter(declared.values()))
    two, failed = _infer(graph, order, {n: d + 1 for n, d in declared.items()})
    culprit = None
    for name in order:
        if graph.is_leaf(name) or name not in two:
            continue
        sources = graph.input_sources(name)
        fed_batch = any(s is not None and s[0] in two and
                        _follows(one[s[0]][s[1]], two[s[0]][s[1]]) for s in sources)
        if not fed_batch:
            continue
        for a, c in zip(one[name], two[name]):
            if _moves_batch(a, c):
                culprit = _describe(graph, name, a, c, b)
                break
        if culprit:
            break
    if failed is not None:
        node, message = failed
        if culprit is None and _constant_shape(graph, node) is not None:
            culprit = (f"{_where(graph, node)} reshapes to a constant shape "
                       f"{_constant_shape(graph, node)}")
        return culprit or (f"at batch {b + 1}, {_where(graph, node)} "
                           f"({graph.op_of(node).type}) refuses its input shapes: {message}")
    for ref in graph.outputs:
        node, port = graph.resolve(ref)
        if node in one and node in two and _moves_batch(one[node][port], two[node][port]):
            return culprit or (f"output '{ref}' has shape {list(one[node][port].shape)} at "
                               f"batch {b} and {list(two[node][port].shape)} at batch {b + 1}")
    return None
