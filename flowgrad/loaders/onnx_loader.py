"""The ONNX front end: an ONNX model (file, bytes or ModelProto) becomes a flowgrad Graph.

Steps: read the model (external data checked to stay beside it, see
:mod:`flowgrad.onnx.model_io`), check its structure (tensors, inputs, each node against its
ONNX schema: :mod:`flowgrad.onnx.checks`, every problem at once, before anything is allocated
or translated), normalise very old opsets, check that every node has a
translation for its opset version (reporting *all* missing ones at once), classify the stored
values (the weights of parametric ops become trainable params, running statistics state, the
rest constants: :mod:`flowgrad.onnx.trainable`), translate node by node with constant folding
(:mod:`flowgrad.onnx.builder`), check that the batch really is free (:mod:`flowgrad.onnx.batch`:
otherwise the model's declared batch is kept), then run the usual passes.
"""
from __future__ import annotations

from typing import Any, Sequence

from ..graph import Graph
from ..op import Spec
from ..passes import prepare
from ..plugins import Registry, default_registry


def load_onnx(source: Any, registry: Registry | None = None, *, dynamic_batch: bool = True,
              base_dir: str | None = None, name: str | None = None,
              freeze: Sequence[str] = (), unfreeze: Sequence[str] = (),
              straight_through: bool = False) -> Graph:
    """Load an ONNX model as a prepared :class:`~flowgrad.Graph`.

    ``source`` is a path, ``bytes`` or an ``onnx.ModelProto``.  With ``dynamic_batch`` (the
    default) the leading axis of every graph input is the batch axis and may change from batch
    to batch, even if the model declares a fixed one — unless the model's own shape arithmetic
    depends on that batch (a Reshape to a constant ``[1, ...]``): then the declared batch is
    kept and ``graph.meta["onnx"]["fixed_batch"]`` says why (a batch the model cannot take is
    refused when fed, never answered wrongly).  Pass False to keep every static dim.
    ``freeze``/``unfreeze`` are glob patterns of value names overriding which stored tensors
    train (:mod:`flowgrad.onnx.trainable`); a pattern that matches nothing is an error.
    ``base_dir`` locates external tensor files for in-memory models.
    ``straight_through`` makes every QuantizeLinear differentiable with the straight-through
    estimator, to fine-tune a quantized model (:mod:`flowgrad.ops.quant`).
    """
    from ..errors import FlowgradError, GraphError
    from ..onnx.batch import fixed_batch_reason
    from ..onnx.checks import check_model
    from ..onnx.importer import Importer
    from ..onnx.model_io import normalise, opset_versions, read_model

    model, where = read_model(source, base_dir)
    original = opset_versions(model)
    problems = check_model(model, original)
    if problems:
        raise GraphError(problems)
    model = normalise(model)
    importer = Importer(model, registry or default_registry(), where,
                        dynamic_batch=dynamic_batch, freeze=freeze, unfreeze=unfreeze,
                        straight_through=straight_through)
    try:
        graph = importer.build(name)
        declared = graph.meta["onnx"]["declared_batch"]
        reason = fixed_batch_reason(graph, declared)
    except GraphError as error:
        if not (dynamic_batch and _declares_batch(model)):
            raise
        # A translation refused the free batch (e.g. it reaches an If's condition): the
        # model as declared is the model; if that fails too, its own error stands.
        importer.dynamic_batch = False
        graph = importer.build(name)
        declared = {n: graph.spec_of(n).shape[0] for n in graph.inputs
                    if graph.spec_of(n).ndim and graph.spec_of(n).shape[0]}
        first = str(error).strip().splitlines()[0]
        reason = f"with a free batch the import fails ({first})"
    if reason is not None:       # keep the declared batch; prepare() infers the shapes again
        batch = next(iter(declared.values()))
        graph.meta["onnx"]["fixed_batch"] = {"batch": batch, "reason": reason}
        for node, size in declared.items():
            spec = graph.spec_of(node)
            graph.set_input_spec(node, Spec((size,) + spec.shape[1:], spec.dtype),
                                 fixed_batch=f"the model fixes its batch at {size}: {reason}")
    unmatched = graph.meta["onnx"].pop("unmatched")
    if unmatched:
        raise FlowgradError(f"{where}: freeze/unfreeze pattern(s) {', '.join(map(repr, unmatched))} "
                            "match no value of the model (patterns are globs of the model's "
                            "value names, e.g. 'conv1.*' or '*bias')")
    graph.meta["onnx"]["source_opset"] = original
    return prepare(graph)


def _declares_batch(model) -> bool:
    """Whether a graph input declares a static leading dim (the batch the importer frees)."""
    initializers = {t.name for t in model.graph.initializer}
    for vi in model.graph.input:
        if vi.name in initializers or not vi.type.HasField("tensor_type"):
            continue
        dims = vi.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0:
            return True
    return False


__all__ = ["load_onnx"]
