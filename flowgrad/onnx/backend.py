"""flowgrad as an ``onnx.backend.base.Backend``: what onnx's conformance suite plugs into.

``FlowgradBackend.prepare(model)`` imports the model (static shapes, as the model says) and
compiles it with the precision of its float inputs (float32 unless the model feeds float64 or
float16); ``rep.run(inputs)`` returns the outputs in the model's order.  A model flowgrad cannot
import raises its load-time error, so an unsupported test fails honestly instead of being
counted as "not supposed to implement".
"""
from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep

from ..loaders.onnx_loader import load_onnx
from ..plan import compile as compile_graph
from .importer import OPAQUE


def plan_dtype(model: onnx.ModelProto) -> np.dtype:
    """The float precision to compute in: that of the first float graph input or initializer."""
    inits = {i.name for i in model.graph.initializer}
    candidates = [vi.type.tensor_type.elem_type for vi in model.graph.input
                  if vi.name not in inits and vi.type.HasField("tensor_type")]
    candidates += [i.data_type for i in model.graph.initializer]
    for elem in candidates:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem))
        if dtype.kind == "f":
            return dtype
    return np.dtype(np.float32)


def configuring_inputs(model: onnx.ModelProto, registry=None) -> set[str]:
    """Graph inputs read only where an op needs a load-time value (axes, pads, k, scales...).

    flowgrad builds such ops with those values fixed, so a model that feeds them as graph
    inputs is specialised to the values of each run (and re-imported when they change).
    """
    from ..plugins import default_registry
    from .importer import Importer
    importer = Importer(model, registry or default_registry(), "")
    inits = {i.name for i in model.graph.initializer}
    uses: dict[str, list[bool]] = {}
    for node in model.graph.node:
        static = importer.static(node)
        for i, name in enumerate(node.input):
            uses.setdefault(name, []).append(i in static)
    outputs = {vi.name for vi in model.graph.output}
    return {vi.name for vi in model.graph.input if vi.name not in inits and vi.name not in outputs
            and uses.get(vi.name) and all(uses[vi.name])}


def bind_inputs(model: onnx.ModelProto, values: dict[str, np.ndarray]) -> onnx.ModelProto:
    """A copy of ``model`` where the graph inputs in ``values`` are initializers."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    kept = [vi for vi in out.graph.input if vi.name not in values]
    del out.graph.input[:]
    out.graph.input.extend(kept)
    for name, value in values.items():
        out.graph.initializer.append(onnx.numpy_helper.from_array(np.asarray(value), name))
    return out


class FlowgradRep(BackendRep):
    """A prepared model: its flowgrad Plan and the mapping from ONNX names."""

    def __init__(self, model: onnx.ModelProto, registry=None, dynamic_batch: bool = False):
        self.model = model
        self.registry = registry
        self.dynamic_batch = dynamic_batch
        inits = {i.name for i in model.graph.initializer}
        self.onnx_inputs = [vi.name for vi in model.graph.input if vi.name not in inits]
        self.bound = configuring_inputs(model, registry)
        self._plans: dict[tuple, tuple] = {}
        if not self.bound:
            self._plan_for({})

    def _plan_for(self, values: dict[str, np.ndarray]):
        key = tuple((k, np.asarray(v).dtype.str, np.asarray(v).tobytes())
                    for k, v in sorted(values.items()))
        hit = self._plans.get(key)
        if hit is None:
            model = bind_inputs(self.model, values) if values else self.model
            graph = load_onnx(model, registry=self.registry, dynamic_batch=self.dynamic_batch)
            plan = compile_graph(graph, dtype=plan_dtype(self.model))
            meta = graph.meta["onnx"]
            by_onnx = {v: k for k, v in meta["inputs"].items()}
            refs = [meta["outputs"][vi.name] for vi in model.graph.output]
            hit = self._plans[key] = (graph, plan, by_onnx, refs)
        return hit

    @property
    def graph(self):
        return next(iter(self._plans.values()))[0]

    @property
    def plan(self):
        return next(iter(self._plans.values()))[1]

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        if isinstance(inputs, dict):
            named = dict(inputs)
        else:
            if not isinstance(inputs, (list, tuple)):
                inputs = [inputs]
            named = dict(zip(self.onnx_inputs, inputs))
        bound = {k: v for k, v in named.items() if k in self.bound}
        graph, plan, by_onnx, refs = self._plan_for(bound)
        feeds = {by_onnx[k]: _box(v) if graph.spec_of(by_onnx[k]) == OPAQUE else v
                 for k, v in named.items() if k not in self.bound}
        out = plan.forward(feeds, outputs=refs, grad=False)
        return tuple(_unbox(out[ref]) for ref in refs)


def _box(value: Any) -> np.ndarray:
    """A sequence / optional value as the 0-d object array a graph slot carries."""
    box = np.empty((), dtype=object)
    box[()] = value
    return box


def _unbox(value: Any) -> Any:
    value = np.asarray(value)
    return value[()] if value.dtype == object and value.ndim == 0 else value


class FlowgradBackend(Backend):
    @classmethod
    def is_compatible(cls, model, device: str = "CPU", **kwargs: Any) -> bool:
        return True

    @classmethod
    def prepare(cls, model, device: str = "CPU", **kwargs: Any) -> FlowgradRep:
        super().prepare(model, device, **kwargs)
        return FlowgradRep(model, registry=kwargs.get("registry"))

    @classmethod
    def run_model(cls, model, inputs, device: str = "CPU", **kwargs: Any):
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device.upper().startswith("CPU")


prepare = FlowgradBackend.prepare
run_model = FlowgradBackend.run_model
supports_device = FlowgradBackend.supports_device

