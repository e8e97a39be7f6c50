"""``flowgrad export``: write a graph (YAML or ONNX) as an ONNX model."""
from __future__ import annotations

from .. import load
from ._common import add_graph_argument

HELP = "export a graph to an ONNX model (checked with onnx.checker)"


def add_arguments(parser):
    add_graph_argument(parser)
    parser.add_argument("out", metavar="OUT.onnx", help="where to write the ONNX model")
    parser.add_argument("--outputs", nargs="+", metavar="NAME",
                        help="values to export as outputs (default: the graph's outputs)")
    parser.add_argument("--opset", type=int, default=None,
                        help="ONNX opset to declare (default: %(default)s = flowgrad's export "
                             "opset)")
    parser.add_argument("--verify", action="store_true",
                        help="run the model in onnxruntime and flowgrad on random inputs and "
                             "print the largest difference")


def run(args, registry):
    from ..onnx.export import EXPORT_OPSET, save_onnx
    graph = load(args.graph, registry=registry)
    proto = save_onnx(graph, args.out, outputs=args.outputs, opset=args.opset or EXPORT_OPSET,
                      registry=registry)
    g = proto.graph
    print(f"wrote {args.out}: {len(g.node)} ONNX nodes, {len(g.initializer)} initializers, "
          f"inputs {', '.join(i.name for i in g.input)}, outputs "
          f"{', '.join(o.name for o in g.output)} (opset {proto.opset_import[0].version})")
    if args.verify:
        from ..onnx.verify import compare_with_onnxruntime
        worst = compare_with_onnxruntime(graph, proto, outputs=args.outputs)
        print(f"onnxruntime vs flowgrad: largest absolute difference {worst:.3g}")
    return 0
