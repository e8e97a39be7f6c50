"""Checks used by ``flowgrad export --verify`` and ``flowgrad convert``: run two forms of a
model on the same random batch and report the largest output difference."""
from __future__ import annotations

import numpy as np

from ..errors import FlowgradError
from ..gradcheck import random_feeds
from ..graph import Graph
from ..plan import compile as compile_graph


def compare_graphs(a: Graph, b: Graph, shapes: dict[str, tuple[int, ...]] | None = None
                   ) -> float:
    """Largest absolute difference between the outputs of two graphs with the same interface,
    on a random batch (inputs' whole shapes from ``shapes`` where given)."""
    feeds = random_feeds(a, dtype=np.float32, shapes=shapes)
    out_a = compile_graph(a).forward(feeds, grad=False)
    out_b = compile_graph(b).forward({k: v for k, v in feeds.items() if _feeds(b, k)},
                                     grad=False)
    if len(a.outputs) != len(b.outputs):
        raise FlowgradError(f"the graphs have {len(a.outputs)} and {len(b.outputs)} outputs")
    return max((float(np.max(np.abs(out_a[x] - out_b[y]), initial=0.0))
                for x, y in zip(a.outputs, b.outputs)), default=0.0)


def _feeds(graph: Graph, name: str) -> bool:
    """Whether ``name`` feeds an input of ``graph``, by name or alias (a converted model's
    YAML declares ``input_1`` for the model's ``input.1`` and lists the original as an
    alias)."""
    try:
        return graph.is_input(graph.leaf(name))
    except KeyError:
        return False


def compare_with_onnxruntime(graph: Graph, proto, outputs=None,
                             shapes: dict[str, tuple[int, ...]] | None = None) -> float:
    """Largest absolute difference between flowgrad and onnxruntime on a random batch (inputs'
    whole shapes from ``shapes`` where given)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise FlowgradError("--verify needs onnxruntime (pip install onnxruntime)") from None
    feeds = random_feeds(graph, dtype=np.float32, shapes=shapes)
    refs = list(graph.outputs if outputs is None else outputs)
    ours = compile_graph(graph).forward(feeds, outputs=refs, grad=False)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    theirs = session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})
    return max((float(np.max(np.abs(ours[r] - t), initial=0.0)) for r, t in zip(refs, theirs)),
               default=0.0)
