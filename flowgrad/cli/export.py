"""``flowgrad export``: write a graph (YAML or ONNX) as an ONNX model, optionally with the
params of a ``flowgrad train`` checkpoint."""
from __future__ import annotations

from ..errors import FlowgradError
from ._common import (add_checkpoint_argument, add_force_argument, add_graph_argument,
                      add_shape_argument, input_shapes, output_file, with_shape_hint)

HELP = "export a graph to an ONNX model (checked with onnx.checker)"


def add_arguments(parser):
    add_graph_argument(parser)
    parser.add_argument("out", metavar="OUT.onnx", nargs="?",
                        help="where to write the ONNX model (or -o OUT.onnx)")
    parser.add_argument("-o", "--out", dest="out_option", metavar="OUT.onnx",
                        help="where to write the ONNX model")
    add_checkpoint_argument(parser)
    parser.add_argument("--outputs", nargs="+", metavar="NAME",
                        help="values to export as outputs (default: the graph's outputs)")
    parser.add_argument("--opset", type=int, default=None,
                        help="ONNX opset to declare: flowgrad writes nodes in the form of its "
                             "export opset (20, the default), so from 20 to the newest opset "
                             "the installed onnx knows")
    parser.add_argument("--verify", action="store_true",
                        help="run the model in onnxruntime and flowgrad on random inputs and "
                             "print the largest difference")
    add_shape_argument(parser, "--verify")
    add_force_argument(parser)


def run(args, registry):
    from onnx.defs import onnx_opset_version

    from ..onnx.export import EXPORT_OPSET, save_onnx
    from ..workflows.deploy import trained_graph
    out = _out_path(args)
    opset = EXPORT_OPSET if args.opset is None else args.opset
    if not EXPORT_OPSET <= opset <= onnx_opset_version():
        raise FlowgradError(f"--opset: flowgrad exports opsets {EXPORT_OPSET} to "
                            f"{onnx_opset_version()} (the nodes are written in opset "
                            f"{EXPORT_OPSET}'s form), got {opset}")
    graph = trained_graph(args.graph, args.checkpoint, registry=registry)
    shapes = input_shapes(graph, args.shape)
    output_file(out, "-o" if args.out_option else "", args.force)
    proto = save_onnx(graph, out, outputs=args.outputs, opset=opset, registry=registry)
    g = proto.graph
    print(f"wrote {out}: {len(g.node)} ONNX nodes, {len(g.initializer)} initializers, "
          f"inputs {', '.join(i.name for i in g.input)}, outputs "
          f"{', '.join(o.name for o in g.output)} (opset {proto.opset_import[0].version})"
          + (f", params from {args.checkpoint}" if args.checkpoint else ""))
    if args.verify:
        from ..errors import OpError
        from ..onnx.verify import compare_with_onnxruntime
        try:
            worst = compare_with_onnxruntime(graph, proto, outputs=args.outputs, shapes=shapes)
        except OpError as e:
            raise with_shape_hint(e, graph, shapes, "--verify") from None
        print(f"onnxruntime vs flowgrad: largest absolute difference {worst:.3g}")
    return 0


def _out_path(args) -> str:
    if args.out and args.out_option and args.out != args.out_option:
        raise FlowgradError(f"two output files: {args.out} and -o {args.out_option}; give one")
    out = args.out or args.out_option
    if not out:
        raise FlowgradError("say where to write the model: flowgrad export GRAPH -o OUT.onnx")
    return out
