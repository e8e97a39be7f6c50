"""``flowgrad demo``: the README's main job, offline, in a few seconds.

1. trains ``graphs/digits_mlp.yaml`` on the embedded 8×8 digits (fixed 80/20 split, seed 0)
   and writes its loss/accuracy curves;
2. visualizes what each of the ten class logits responds to (one optimized image per class,
   in one batch) and checks that the network classifies image k as k;
3. round-trips through ONNX: exports the trained graph with flowgrad's exporter, loads the
   file back with flowgrad's ONNX importer and compares the outputs (with onnxruntime too,
   when installed).
"""
from __future__ import annotations

import argparse
import os
import pathlib

import numpy as np

from .. import compile, load
from ..data import load_data, split
from ..errors import FlowgradError
from ..onnx.export import save_onnx
from ..visualize import save_outputs
from .train import train_and_report
from .visualize import run_visualization

HELP = "train the digits MLP, plot its curves, visualize its logits, round-trip it via ONNX"
GRAPH = "digits_mlp.yaml"


def add_arguments(parser):
    parser.add_argument("--graph", metavar="GRAPH", help=f"the graph (default graphs/{GRAPH})")
    parser.add_argument("--out", default="out/demo", metavar="DIR",
                        help="output directory (default out/demo)")
    parser.add_argument("--epochs", type=int, help="training epochs (default: the graph's)")
    parser.add_argument("--steps", type=int, help="visualization steps (default: the graph's)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def find_graph(name: str = GRAPH) -> str:
    """``graphs/<name>`` in the working directory or beside the flowgrad source tree."""
    here = pathlib.Path(__file__).resolve().parents[2] / "graphs" / name
    for candidate in (pathlib.Path("graphs") / name, here):
        if candidate.is_file():
            return str(candidate)
    raise FlowgradError(f"cannot find graphs/{name}; run the demo from the flowgrad checkout "
                        "or pass --graph PATH")


def run(args, registry):
    out = args.out
    os.makedirs(out, exist_ok=True)
    path = args.graph or find_graph()
    graph = load(path, registry=registry)
    progress = not args.no_progress

    print("== 1. training")
    train_args = argparse.Namespace(data="digits", epochs=args.epochs, batch_size=None, lr=None,
                                    seed=None, resume=None, dtype="float32")
    report = train_and_report(graph, train_args, registry, out, progress)
    plan, trainer = report["plan"], report["trainer"]

    print("== 2. visualizing the class logits")
    vis_args = argparse.Namespace(objective=[], each=None, input=None, steps=args.steps,
                                  lr=None, optimizer=None, param=None, transforms=None,
                                  penalty=None, diversity=None, range=None, clip=False, seed=0,
                                  snapshot_every=0, no_progress=not progress)
    result, value_range = run_visualization(graph, plan, vis_args, registry)
    logits = trainer.predict(result.images)
    probs = _softmax(logits)
    predicted = probs.argmax(axis=1)
    captions = [f"{label}\nclassified {p} ({probs[i, p]:.2f})"
                for i, (label, p) in enumerate(zip(result.labels, predicted))]
    written = save_outputs(result, os.path.join(out, "logits.png"), value_range=value_range,
                           title=f"{graph.name}: inputs maximising each class logit",
                           captions=captions)
    hits = sum(int(p == i) for i, p in enumerate(predicted[:10]))
    print(f"image k classified as k: {hits}/{len(predicted)}; probability of the target class: "
          + " ".join(f"{probs[i, i]:.2f}" for i in range(min(len(probs), probs.shape[1]))))
    print("wrote " + ", ".join(written))

    print("== 3. ONNX round trip")
    _onnx_round_trip(plan, graph, out, registry, trainer)
    print(f"done: everything is in {out}/")
    return 0


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _onnx_round_trip(plan, graph, out: str, registry, trainer) -> None:
    _, test = split(load_data("digits"), trainer.config.test_split, seed=trainer.config.seed)
    x = test.x[:64]
    path = os.path.join(out, f"{graph.name}.onnx")
    logits_name = trainer.config.logits or graph.outputs[0]
    save_onnx(plan.export_graph(), path, outputs=[logits_name])
    expected = trainer.predict(x)
    print(f"exported the trained graph to {path}")
    imported = load(path, registry=registry)
    net = compile(imported)
    name = imported.inputs[0]
    got = net.forward({name: x.reshape((len(x),) + tuple(imported.node(name)["spec"].shape[1:]))},
                      grad=False)
    got = got[imported.outputs[0]]
    diff = float(np.max(np.abs(got - expected)))
    print(f"imported {path} ({len(imported.ops)} ops): max |flowgrad(onnx) - expected| = "
          f"{diff:.2e} on {len(x)} test images; predictions agree: "
          f"{bool(np.all(got.argmax(1) == expected.argmax(1)))}")
    try:
        import onnxruntime as ort
    except ImportError:
        return
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x.astype(np.float32)}
    ref = session.run(None, feed)[0]
    print(f"onnxruntime agrees to {float(np.max(np.abs(ref - got))):.2e}")

