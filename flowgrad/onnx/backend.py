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
from ..scheduler import compile as compile_graph


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


class FlowgradRep(BackendRep):
    """A prepared model: its flowgrad Plan and the mapping from ONNX names."""

    def __init__(self, model: onnx.ModelProto, registry=None, dynamic_batch: bool = False):
        self.model = model
        self.graph = load_onnx(model, registry=registry, dynamic_batch=dynamic_batch)
        self.plan = compile_graph(self.graph, dtype=plan_dtype(model))
        meta = self.graph.meta["onnx"]
        self.input_names = list(meta["inputs"])           # flowgrad names, in model order
        self.onnx_inputs = [meta["inputs"][n] for n in self.input_names]
        self.output_refs = [meta["outputs"][vi.name] for vi in model.graph.output]

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        if isinstance(inputs, dict):
            by_onnx = dict(zip(self.onnx_inputs, self.input_names))
            feeds = {by_onnx.get(k, k): v for k, v in inputs.items()}
        else:
            if not isinstance(inputs, (list, tuple)):
                inputs = [inputs]
            feeds = dict(zip(self.input_names, inputs))
        out = self.plan.forward(feeds, outputs=self.output_refs, grad=False)
        return tuple(np.asarray(out[ref]) for ref in self.output_refs)


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

