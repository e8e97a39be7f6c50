"""The demo (``flowgrad demo``): the README's main job, offline, in a few seconds.

1. trains ``flowgrad/graphs/digits_mlp.yaml`` (package data: found from a wheel install
   in any folder) on the embedded 8×8 digits (fixed 80/20 split, seed 0)
   and writes its loss/accuracy curves;
2. visualizes what each of the ten class logits responds to (one optimized image per class,
   in one batch, as the graph's ``visualize:`` section says: starting from the mean digit, so
   the images look like digits rather than scattered discriminative pixels) and checks that
   the network classifies image k as k;
3. round-trips through ONNX: exports the trained graph with flowgrad's exporter, loads the
   file back with flowgrad's ONNX importer and compares the outputs (with onnxruntime too,
   when installed).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import compile, load
from ..data import load_data, split
from ..errors import FlowgradError
from ..visualize import Visualization, save_outputs
from ..visualize.settings import from_graph as visualize_settings
from .training import Log, TrainingRun, quiet, train_and_report
from .visualizing import optimize_images

GRAPH = "digits_mlp.yaml"


@dataclass
class OnnxRoundTrip:
    """The exported file and how far its outputs (flowgrad's importer, and onnxruntime when
    installed) are from the trained plan's on test images."""

    path: str
    max_diff: float
    predictions_agree: bool
    onnxruntime_max_diff: float | None = None


@dataclass
class DemoReport:
    """What :func:`run_demo` did: the training run, the visualization, the class each image
    is given (image k should be classified k) with its probabilities, how many images are
    classified as their class (``hits``), the ONNX round trip and every file written."""

    training: TrainingRun
    visualization: Visualization
    predicted: list[int]
    probabilities: np.ndarray
    hits: int
    onnx: OnnxRoundTrip
    files: list[str] = field(default_factory=list)


def find_graph(name: str = GRAPH) -> str:
    """The path of the example graph ``name`` shipped in the package (``flowgrad/graphs``)."""
    from importlib.resources import as_file, files
    resource = files("flowgrad") / "graphs" / name
    if not resource.is_file():
        raise FlowgradError(f"flowgrad's example graph '{name}' is missing from the installed "
                            "package; reinstall flowgrad, or pass a graph's path")
    with as_file(resource) as path:     # a real file already, except from a zip
        return str(path)


def run_demo(out_dir: str = "out/demo", graph: str | None = None, *, epochs: int | None = None,
             steps: int | None = None, registry: Any = None, progress: bool = False,
             log: Log = quiet) -> DemoReport:
    """Train, visualize the class logits and round-trip through ONNX, writing everything to
    ``out_dir``; ``epochs`` and ``steps`` override the graph's ``train:`` and ``visualize:``
    sections; ``log`` receives the lines the command prints."""
    os.makedirs(out_dir, exist_ok=True)
    loaded = load(graph or find_graph(), registry=registry)

    log("== 1. training")
    run = train_and_report(loaded, out_dir, "digits", registry=registry, progress=progress,
                           log=log, epochs=epochs)

    log("== 2. visualizing the class logits")
    config = visualize_settings(loaded).replace(steps=steps)
    result = optimize_images(run.plan, config, progress=progress, registry=registry)
    probs = _softmax(run.trainer.predict(result.images))
    predicted = [int(p) for p in probs.argmax(axis=1)]
    captions = [f"{label}\nclassified {p} ({probs[i, p]:.2f})"
                for i, (label, p) in enumerate(zip(result.labels, predicted))]
    written = save_outputs(result, os.path.join(out_dir, "logits.png"),
                           value_range=config.range, captions=captions,
                           title=f"{loaded.name}: inputs maximising each class logit")
    hits = sum(int(p == i) for i, p in enumerate(predicted))
    log(f"image k classified as k: {hits}/{len(predicted)}; probability of the target "
              "class: " + " ".join(f"{probs[i, i]:.2f}"
                                   for i in range(min(len(probs), probs.shape[1]))))
    log("wrote " + ", ".join(written))

    log("== 3. ONNX round trip")
    onnx = onnx_round_trip(run, out_dir, registry, log)
    log(f"done: everything is in {out_dir}/")
    return DemoReport(run, result, predicted, probs, hits, onnx,
                      run.files + written + [onnx.path])


def onnx_round_trip(run: TrainingRun, out_dir: str, registry: Any = None,
                    log: Log = quiet) -> OnnxRoundTrip:
    """Export the trained plan's logits to ``<out_dir>/<graph>.onnx``, import the file again
    and compare both on the first 64 test images (and with onnxruntime, when installed)."""
    from ..onnx.export import save_onnx
    plan, trainer, config = run.plan, run.trainer, run.config
    _, test = split(load_data("digits", registry), config.test_split, seed=config.seed)
    x = test.x[:64]
    path = os.path.join(out_dir, f"{plan.graph.name}.onnx")
    save_onnx(plan.export_graph(), path, outputs=[config.logits or plan.graph.outputs[0]])
    expected = trainer.predict(x)
    log(f"exported the trained graph to {path}")
    imported = load(path, registry=registry)
    name = imported.inputs[0]
    feed = x.reshape((len(x),) + tuple(imported.spec_of(name).shape[1:]))
    got = compile(imported).forward({name: feed}, grad=False)[imported.outputs[0]]
    diff = float(np.max(np.abs(got - expected)))
    agree = bool(np.all(got.argmax(1) == expected.argmax(1)))
    log(f"imported {path} ({len(imported.ops)} ops): max |flowgrad(onnx) - expected| = "
              f"{diff:.2e} on {len(x)} test images; predictions agree: {agree}")
    report = OnnxRoundTrip(path, diff, agree)
    try:
        import onnxruntime as ort
    except ImportError:
        return report
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    ref = session.run(None, {session.get_inputs()[0].name: feed.astype(np.float32)})[0]
    report.onnxruntime_max_diff = float(np.max(np.abs(ref - got)))
    log(f"onnxruntime agrees to {report.onnxruntime_max_diff:.2e}")
    return report


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)
