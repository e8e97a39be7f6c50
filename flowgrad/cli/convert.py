"""``flowgrad convert``: turn an ONNX model into an editable YAML graph plus a weights file,
optionally with the params of a ``flowgrad train`` checkpoint of that model.

The YAML is loaded back and run against the model on a random batch; if writing or that check
fails, both files are removed (the error says why), so a file left behind is one that loads.
Inputs with free dims other than the batch (an OCR model's text-line width) are written with
``null`` there; ``--shape NAME=D,...`` gives the comparison real sizes for them.
A model whose own shape arithmetic fixes its batch is written with that batch (``batch: 1`` on
its inputs) and the line saying so."""
from __future__ import annotations

import os

from ..errors import FlowgradError
from ._common import (add_checkpoint_argument, add_force_argument, add_shape_argument,
                      input_shapes, output_file, with_shape_hint)

HELP = "convert an ONNX model to a YAML graph and an .npz of its weights"


def add_arguments(parser):
    parser.add_argument("model", metavar="MODEL.onnx", help="the ONNX model to convert")
    parser.add_argument("out", metavar="OUT.yaml", help="the YAML graph to write")
    parser.add_argument("--weights", metavar="FILE.npz",
                        help="where to write params and constants (default: OUT with .npz)")
    add_checkpoint_argument(parser)
    parser.add_argument("--no-verify", action="store_true",
                        help="skip loading the YAML back and comparing outputs on random inputs")
    add_shape_argument(parser, "that comparison")
    add_force_argument(parser)


def run(args, registry):
    from ..loaders import load
    from ..onnx.to_yaml import write_yaml
    from ..workflows.deploy import trained_graph
    if not args.model.lower().endswith(".onnx"):
        raise FlowgradError(f"'{args.model}': convert reads .onnx models")
    if not args.out.lower().endswith((".yaml", ".yml")):
        raise FlowgradError(f"'{args.out}': the output must be a .yaml or .yml file")
    weights = args.weights or os.path.splitext(args.out)[0] + ".npz"
    if os.path.abspath(weights) == os.path.abspath(args.model):
        raise FlowgradError(f"--weights {weights}: that is the model being converted")
    graph = trained_graph(args.model, args.checkpoint, registry=registry)
    shapes = input_shapes(graph, args.shape)
    output_file(args.out, "", args.force)
    output_file(weights, "--weights" if args.weights else "", args.force)
    fixed = graph.meta.get("onnx", {}).get("fixed_batch")
    if fixed:
        print(f"batch fixed at {fixed['batch']}: {fixed['reason']} (written as the input's "
              "'batch:')")
    written = [args.out, weights]
    try:
        write_yaml(graph, args.out, weights)
        print(f"wrote {args.out} ({len(graph.ops)} nodes) and {weights} "
              f"({len(graph.params)} params, {len(graph.consts)} constants)"
              + (f"; params from {args.checkpoint}" if args.checkpoint else ""))
        if not args.no_verify:
            from ..errors import OpError
            from ..onnx.verify import compare_graphs
            try:
                worst = compare_graphs(graph, load(args.out, registry=registry), shapes)
            except OpError as e:
                raise with_shape_hint(e, graph, shapes, "the comparison") from None
            print(f"loaded {os.path.basename(args.out)} back: largest output difference "
                  f"{worst:.3g}")
    except BaseException:
        # a conversion that fails (or is interrupted) leaves no half-checked files behind
        for path in written:
            if os.path.isfile(path):
                os.remove(path)
        raise
    return 0
