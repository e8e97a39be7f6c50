"""The ``flowgrad`` command.

Each subcommand is a module of this package defining ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args, registry) -> int``; adding a command is adding a
module.  ``run`` only turns the arguments into a call of the library (the longer jobs live in
:mod:`flowgrad.workflows`, so a script can do what a command does) and prints the result.
Exit status: 0 success; 1 a user's mistake (the error report, without a traceback); 2 a misused
command line (argparse's usage message); 3 an internal error — a bug in flowgrad or a plugin —
reported as one short paragraph (what was being done, the exception's one line, how to get the
traceback with ``--debug`` or ``FLOWGRAD_DEBUG=1``), as pytest does for its own errors; 130
interrupted.
"""
from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import os
import pkgutil
import sys
from typing import Sequence

from ..errors import FlowgradError

#: set to 1 for the traceback of an internal error (like --debug)
DEBUG_ENV = "FLOWGRAD_DEBUG"

#: commands listed first in --help, in this order; any other module follows alphabetically
ORDER = ("demo", "run", "profile", "check", "show", "train", "eval", "visualize", "export",
         "convert", "ops", "plugins")

#: options whose value may start with '-' (a minimised objective, ``-logits[3]``)
DASHED_VALUES = ("--objective",)


def _commands() -> list[str]:
    found = [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
    return sorted(found, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


def command_help(name: str) -> str:
    """A command's one-line ``HELP``, read from its source without importing it: only the
    command being run is imported (with the libraries it needs), so ``flowgrad ops`` does not
    pay for the ONNX or plotting stack that other commands load."""
    spec = importlib.util.find_spec(f"{__name__}.{name}")
    try:
        with open(spec.origin, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        for node in tree.body:
            if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] \
                    == ["HELP"]:
                return ast.literal_eval(node.value)
    except (OSError, TypeError, ValueError, SyntaxError):
        pass
    return importlib.import_module(f"{__name__}.{name}").HELP   # a computed HELP


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser, with the arguments of ``command`` only: the other commands are listed (for
    ``--help`` and argparse's choices) but their modules are not imported."""
    from .. import __version__
    parser = argparse.ArgumentParser(
        prog="flowgrad", description="A modular dataflow-graph runtime for neural networks.")
    parser.add_argument("--version", action="version", version=f"flowgrad {__version__}")
    parser.add_argument("-p", "--plugins", action="append", default=[], metavar="PATH",
                        help="load op plugins from a .py file or a folder (repeatable; also "
                             "FLOWGRAD_PLUGINS, a path list; also accepted after COMMAND)")
    parser.add_argument("--debug", action="store_true",
                        help="let an internal error end in its full Python traceback (also "
                             f"{DEBUG_ENV}=1)")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="threads for flowgrad's own work sharing (also "
                             "FLOWGRAD_NUM_THREADS; default: every core)")
    parser.add_argument("--no-autoload", action="store_true",
                        help="do not load plugins installed as packages (also "
                             "FLOWGRAD_DISABLE_PLUGIN_AUTOLOAD=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _commands():
        text = command_help(name)
        if name != command:
            sub.add_parser(name, help=text, add_help=False)
            continue
        module = importlib.import_module(f"{__name__}.{name}")
        parser_ = sub.add_parser(name, help=text, description=text)
        module.add_arguments(parser_)
        parser_.add_argument("-p", "--plugins", action="append", default=[], metavar="PATH",
                             dest="command_plugins", help="load op plugins (as before COMMAND)")
        parser_.set_defaults(_run=module.run)
    return parser


def command_of(argv: Sequence[str]) -> str | None:
    """The command named in ``argv`` (the first word that is not a global option's)."""
    takes_value = {"-p", "--plugins", "--threads"}
    skip = False
    for item in argv:
        if skip:
            skip = False
        elif item in takes_value:
            skip = True
        elif not item.startswith("-"):
            return item
    return None


def join_dashed_values(argv: Sequence[str]) -> list[str]:
    """``--objective -logits[3]`` as ``--objective=-logits[3]``: argparse takes a value that
    starts with '-' for an option, but a minimised objective is written that way."""
    out: list[str] = []
    for item in argv:
        if out and out[-1] in DASHED_VALUES and item.startswith("-") and len(item) > 1 \
                and not item.startswith("--"):
            out[-1] = f"{out[-1]}={item}"
        else:
            out.append(item)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    argv = join_dashed_values(sys.argv[1:] if argv is None else argv)
    parser = build_parser(command_of(argv))
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    args.plugins = [*args.plugins, *args.command_plugins]
    from .. import parallel, plugins
    previous = plugins._default     # restored at the end: main may run inside a test or script
    threads = parallel._threads
    try:
        if args.threads is not None:
            if args.threads < 1:
                raise FlowgradError(f"--threads must be at least 1, got {args.threads}")
            parallel.set_num_threads(args.threads)
        parallel.get_num_threads()      # a bad FLOWGRAD_NUM_THREADS is reported now, not mid-run
        import numpy as np
        registry = plugins.make_registry(paths=args.plugins, autoload=not args.no_autoload)
        plugins.set_default_registry(registry)
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
    except Exception as e:  # a bug, not the user's mistake: a net, never the fix
        if args.debug or os.environ.get(DEBUG_ENV, "").strip() not in ("", "0"):
            raise
        print(internal_error(argv, e), file=sys.stderr)
        return 3
    finally:
        plugins.set_default_registry(previous)
        parallel.set_num_threads(threads)


def internal_error(argv: Sequence[str] | None, error: BaseException) -> str:
    """The paragraph an internal error prints instead of a traceback."""
    import traceback
    frames = traceback.extract_tb(error.__traceback__)
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    command = " ".join(["flowgrad", *(sys.argv[1:] if argv is None else argv)])
    one_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return (f"flowgrad: internal error while running `{command}`:\n"
            f"    {type(error).__name__}: {one_line}{where}\n"
            "This is a bug in flowgrad or in a plugin, not a mistake in your input. Run the "
            f"command again with --debug (or {DEBUG_ENV}=1) to see the full traceback, and "
            "report it on flowgrad's issue tracker with the command and that traceback.")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
