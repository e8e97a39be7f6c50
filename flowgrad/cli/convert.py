"""``flowgrad convert``: turn an ONNX model into an editable YAML graph plus a weights file."""
from __future__ import annotations

import os

from .. import load
from ..errors import FlowgradError

HELP = "convert an ONNX model to a YAML graph and an .npz of its weights"


def add_arguments(parser):
    parser.add_argument("model", metavar="MODEL.onnx", help="the ONNX model to convert")
    parser.add_argument("out", metavar="OUT.yaml", help="the YAML graph to write")
    parser.add_argument("--weights", metavar="FILE.npz",
                        help="where to write params and constants (default: OUT with .npz)")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip loading the YAML back and comparing outputs on random inputs")


def run(args, registry):
    from ..onnx.to_yaml import write_yaml
    if not args.model.lower().endswith(".onnx"):
        raise FlowgradError(f"'{args.model}': convert reads .onnx models")
    if not args.out.lower().endswith((".yaml", ".yml")):
        raise FlowgradError(f"'{args.out}': the output must be a .yaml or .yml file")
    graph = load(args.model, registry=registry)
    weights = write_yaml(graph, args.out, args.weights)
    print(f"wrote {args.out} ({len(graph.ops)} nodes) and {weights} "
          f"({len(graph.params)} params, {len(graph.consts)} constants)")
    if not args.no_verify:
        from ..onnx.verify import compare_graphs
        worst = compare_graphs(graph, load(args.out, registry=registry))
        print(f"loaded {os.path.basename(args.out)} back: largest output difference {worst:.3g}")
    return 0
