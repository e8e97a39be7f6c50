"""``flowgrad show``: draw a graph as text, Graphviz dot or Mermaid, with its model summary
(parameters, FLOPs and activation memory per sample) in the text form."""
from __future__ import annotations

from ._common import add_force_argument, add_graph_argument, output_file

HELP = "print a graph as text, Graphviz dot or Mermaid (branch and merge nodes visible)"
FORMATS = ("dot", "mermaid", "text")


def add_arguments(parser):
    add_graph_argument(parser)
    parser.add_argument("-f", "--format", choices=FORMATS, default="text")
    parser.add_argument("-o", "--out", metavar="FILE", help="write to a file instead of stdout")
    parser.add_argument("--collapse-blocks", action="store_true",
                        help="draw each block instance of a YAML graph as one node")
    add_force_argument(parser)


def run(args, registry):
    from ..loaders import load
    from ..render import FORMATS as DRAW
    from ..summary import summarize
    if args.out:
        output_file(args.out, "-o", args.force)
    graph = load(args.graph, registry=registry)
    text = DRAW[args.format](graph, collapse_blocks=args.collapse_blocks)
    if args.format == "text":
        text += "\n" + summarize(graph).text()
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")
        print(f"wrote {args.out}")
    else:
        print(text)
    return 0
