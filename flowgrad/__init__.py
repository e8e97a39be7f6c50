"""flowgrad: a modular dataflow-graph runtime for neural networks, built on numpy.

A network is a DAG of ops, written in YAML or imported from ONNX, loaded into a networkx graph
with explicit branch and merge nodes, and run by a plan that does batched forward and
backward passes.  Every op is a pluggy plugin supplying its own forward and backward.

    import flowgrad
    g = flowgrad.load("graphs/xor.yaml")            # a Graph; g.dag is the networkx DAG
    net = flowgrad.compile(g)                         # the compiled plan
    out = net.forward({"x": X})                       # {output name: ndarray}
    grads = net.backward({"loss": 1.0}, wrt=["x"])    # {leaf name: ndarray}, params included

    history = flowgrad.train(net, flowgrad.load_data("digits"), epochs=10)
    result = flowgrad.visualize(net, ["logits[3]"])   # optimize an input image
    print(flowgrad.profile(net, {"x": X}).table())    # where the time goes, step by step
    flowgrad.save_onnx(net.export_graph(), "model.onnx")

The public names are imported on first use (PEP 562): ``import flowgrad`` loads neither
networkx, numba, onnx nor matplotlib, so the ``flowgrad`` command starts in a fraction of a
second and a script pays only for what it touches.
"""
from __future__ import annotations

import importlib
import sys
import types

__version__ = "0.1.0"

#: each public name -> the module (relative to this package) that defines it
_EXPORTS = {
    **dict.fromkeys(("AttrError", "Diagnostic", "FlowgradError", "GraphError", "NumericsError",
                     "OpError", "PluginError", "ShapeError", "SourceLocation"), ".errors"),
    "Graph": ".graph",
    "hookimpl": ".hookspecs",
    "load": ".loaders",
    **dict.fromkeys(("Attr", "Context", "Op", "Spec", "unbroadcast"), ".op"),
    "prepare": ".passes",
    **dict.fromkeys(("Registry", "default_registry", "make_registry"), ".plugins"),
    **dict.fromkeys(("Plan", "compile"), ".plan"),
    "profile": ".plan.profile",
    "get_num_threads": ".parallel",
    "set_num_threads": ".parallel",
    **dict.fromkeys(("Dataset", "load_data", "split"), ".data"),
    **dict.fromkeys(("Trainer", "train"), ".train"),
    "visualize": ".visualize",
    "TrainConfig": ".loaders.train_section",
    "VisualizeConfig": ".loaders.visualize_section",
    **dict.fromkeys(("evaluate_checkpoint", "optimize_images", "run_demo", "train_and_report",
                     "visualize_checkpoint", "render_layer_checkpoint"), ".workflows"),
    "save_onnx": ".onnx.export",
}

__all__ = [*sorted(_EXPORTS, key=str.lower), "__version__"]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'flowgrad' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value         # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


class _Package(types.ModuleType):
    """``flowgrad.train`` and ``flowgrad.visualize`` are functions named like their modules:
    importing a submodule sets the package attribute of that name to the module, which would
    hide the function, so the package keeps its public names (the modules stay importable)."""

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, types.ModuleType) and name in _EXPORTS:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
