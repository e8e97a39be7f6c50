"""``flowgrad show``: draw a graph as text, Graphviz dot or Mermaid."""
from __future__ import annotations

from .. import load
from ..render import FORMATS
from ._common import add_graph_argument

HELP = "print a graph as text, Graphviz dot or Mermaid (branch and merge nodes visible)"


def add_arguments(parser):
    add_graph_argument(parser)
    parser.add_argument("-f", "--format", choices=sorted(FORMATS), default="text")
    parser.add_argument("-o", "--out", metavar="FILE", help="write to a file instead of stdout")
    parser.add_argument("--collapse-blocks", action="store_true",
                        help="draw each block instance of a YAML graph as one node")


def run(args, registry):
    graph = load(args.graph, registry=registry)
    text = FORMATS[args.format](graph, collapse_blocks=args.collapse_blocks)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")
        print(f"wrote {args.out}")
    else:
        print(text)
    return 0
