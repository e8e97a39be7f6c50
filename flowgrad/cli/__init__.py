"""The ``flowgrad`` command.

Each subcommand is a module of this package defining ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args, registry) -> int``; adding a command is adding a
module.  ``run`` only turns the arguments into a call of the library (the longer jobs live in
:mod:`flowgrad.workflows`, so a script can do what a command does) and prints the result.
A user's mistake prints the error report and exits 1, without a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from typing import Sequence

import numpy as np

from ..errors import FlowgradError

#: commands listed first in --help, in this order; any other module follows alphabetically
ORDER = ("demo", "run", "check", "show", "train", "eval", "visualize", "export", "convert",
         "ops", "plugins")


def _commands() -> list[str]:
    found = [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
    return sorted(found, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__
    parser = argparse.ArgumentParser(
        prog="flowgrad", description="A modular dataflow-graph runtime for neural networks.")
    parser.add_argument("--version", action="version", version=f"flowgrad {__version__}")
    parser.add_argument("-p", "--plugins", action="append", default=[], metavar="PATH",
                        help="load op plugins from a .py file or a folder (repeatable; also "
                             "FLOWGRAD_PLUGINS, a path list)")
    parser.add_argument("--no-autoload", action="store_true",
                        help="do not load plugins installed as packages (also "
                             "FLOWGRAD_DISABLE_PLUGIN_AUTOLOAD=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _commands():
        module = importlib.import_module(f"{__name__}.{name}")
        command = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        from ..plugins import make_registry, set_default_registry
        registry = make_registry(paths=args.plugins, autoload=not args.no_autoload)
        set_default_registry(registry)
        # flowgrad checks for non-finite values itself and names the node at fault; numpy's
        # own overflow warnings would only print source lines ahead of that message
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return int(args._run(args, registry) or 0)
    except FlowgradError as e:
        print(e.report(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
