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
    flowgrad.save_onnx(net.export_graph(), "model.onnx")
"""
from .errors import (AttrError, Diagnostic, FlowgradError, GraphError, NumericsError, OpError,
                     PluginError, ShapeError, SourceLocation)
from .graph import Graph
from .hookspecs import hookimpl
from .loaders import load
from .op import Attr, Context, Op, Spec, unbroadcast
from .passes import prepare
from .plugins import Registry, default_registry, make_registry
from .plan import Plan, compile
from .data import Dataset, load_data, split
from .train import Trainer, train
from .visualize import visualize
from .loaders.train_section import TrainConfig
from .loaders.visualize_section import VisualizeConfig
from .workflows import (evaluate_checkpoint, optimize_images, run_demo, train_and_report,
                        visualize_checkpoint)
from .workflows import render_layer_checkpoint


def __getattr__(name: str):
    # the ONNX exporter imports onnx's protobuf machinery: load it only when asked for
    if name == "save_onnx":
        from .onnx.export import save_onnx
        return save_onnx
    raise AttributeError(f"module 'flowgrad' has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "Attr", "AttrError", "Context", "Dataset", "Diagnostic", "FlowgradError", "Graph", "GraphError",
    "NumericsError", "Op", "OpError", "Plan", "PluginError", "Registry", "ShapeError",
    "SourceLocation", "Spec", "Trainer", "compile", "default_registry", "hookimpl", "load",
    "load_data", "make_registry", "prepare", "save_onnx", "split", "train", "unbroadcast",
    "visualize", "__version__",
    "TrainConfig", "VisualizeConfig", "evaluate_checkpoint", "optimize_images", "run_demo",
    "train_and_report", "visualize_checkpoint",
    "render_layer_checkpoint",
]
