"""``flowgrad ops``: every registered op, its ports and attributes, and which plugin provides it.

Without arguments, one table row per op, grouped by plugin (each group headed by where the plugin
came from: built in, a file, or an installed package).  With op names, a detailed card per op:
its documentation, every attribute with kind, default and choices, and the source file.
"""
from __future__ import annotations

import inspect
import json
import os
import textwrap
from typing import Any, Sequence

from ..errors import PluginError, did_you_mean
from ..op import Op

HELP = "list the registered ops: ports, attributes, and the plugin providing each"


def add_arguments(parser):
    parser.add_argument("names", nargs="*", metavar="OP", help="show these ops in detail")
    parser.add_argument("--plugin", metavar="NAME",
                        help="only the ops of this plugin (see `flowgrad plugins`)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args, registry):
    names = list(args.names) or sorted(registry.ops)
    for name in names:
        registry.get(name)  # an unknown name: PluginError with a did-you-mean
    if args.plugin:
        plugins = [p.name for p in registry.plugins]
        if args.plugin not in plugins:
            raise PluginError(f"no plugin named '{args.plugin}'{did_you_mean(args.plugin, plugins)}"
                              f" (loaded: {', '.join(plugins)})")
        names = [n for n in names if registry.provider("op", n).name == args.plugin]
    if args.json:
        print(json.dumps([describe_op(registry, n) for n in names], indent=2))
    elif args.names:
        print("\n\n".join(op_card(registry, n) for n in names))
    else:
        print(op_table(registry, names))
    return 0


LEGEND = "b?: optional input · xs...: any number of inputs · [labels]: takes no gradient"


def ports(op_cls: type[Op]) -> str:
    """``x, W, b?`` — ``?`` optional, ``...`` variadic, ``[labels]`` for no_grad inputs."""
    out = []
    for port in op_cls.inputs:
        text = port + ("..." if op_cls.variadic else "")
        out.append(f"[{text}]" if port.rstrip("?") in op_cls.no_grad_inputs else text)
    return ", ".join(out)


def attr_summary(op_cls: type[Op]) -> str:
    """``axis=-1, keepdims=False, perm:ints`` — required attributes show their kind."""
    return ", ".join(f"{k}:{a.kind}" if a.required else f"{k}={_value(a.default)}"
                     for k, a in op_cls.attrs.items())


def _value(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(map(str, value)) + "]"
    return repr(value) if isinstance(value, str) else str(value)


def op_table(registry, names: Sequence[str]) -> str:
    """Rows grouped by plugin, each group headed by the plugin's origin."""
    blocks = []
    for plugin in registry.plugins:
        mine = [n for n in names if registry.provider("op", n).name == plugin.name]
        if not mine:
            continue
        rows = [(n + ("" if registry.ops[n].differentiable else " (forward-only)"),
                 ports(registry.ops[n]), ", ".join(registry.ops[n].outputs),
                 plugin.name, attr_summary(registry.ops[n]) or "-") for n in mine]
        blocks.append(f"{plugin_heading(plugin)} — {len(mine)} op{'s' * (len(mine) != 1)}\n"
                      + format_table(("OP", "INPUTS", "OUTPUTS", "PLUGIN", "ATTRIBUTES"), rows,
                                     wrap=(None, 32, 24, None, 60)))
    blocks.append(f"{LEGEND}\n{len(names)} op(s); `flowgrad ops NAME` for details, "
                  "`flowgrad plugins` for where plugins come from")
    return "\n\n".join(blocks)


def plugin_heading(plugin) -> str:
    if plugin.kind == "builtin":
        return f"built-in ({plugin.name})"
    return f"plugin '{plugin.name}' [{plugin.kind}: {plugin.origin}]"


def op_card(registry, name: str) -> str:
    info = describe_op(registry, name)
    lines = [f"{name}" + ("" if info["differentiable"] else "  (forward-only: no backward)")]
    if info["doc"]:
        lines += ["", *("  " + line for line in info["doc"].splitlines())]
    lines += ["", f"  inputs:   {ports(registry.ops[name])}",
              f"  outputs:  {', '.join(info['outputs'])}"]
    if info["attrs"]:
        rows = [(a["name"], a["kind"], "(required)" if a["required"] else _value(a["default"]),
                 a["doc"] + (f" (one of {', '.join(map(_value, a['choices']))})"
                             if a["choices"] else "")) for a in info["attrs"]]
        table = format_table(("ATTRIBUTE", "KIND", "DEFAULT", "MEANING"), rows)
        lines += ["  attributes:", *("    " + line for line in table.splitlines())]
    else:
        lines.append("  attributes: none")
    lines.append(f"  plugin:   {plugin_heading(registry.provider('op', name))}")
    if info["defined_at"]:
        lines.append(f"  class:    {info['class']} at {info['defined_at']}")
    return "\n".join(lines)


def describe_op(registry, name: str) -> dict[str, Any]:
    """Everything ``flowgrad ops`` shows about one op, as plain data."""
    from ..loaders.yaml_source import plain   # imports networkx: only for cards and --json
    op_cls = registry.ops[name]
    plugin = registry.provider("op", name)
    return {
        "type": name,
        "doc": inspect.cleandoc(op_cls.__doc__ or "") if op_cls.__doc__ != Op.__doc__ else "",
        "inputs": list(op_cls.input_names),
        "optional_inputs": sorted(op_cls.optional_inputs),
        "no_grad_inputs": sorted(op_cls.no_grad_inputs),
        "variadic": op_cls.variadic,
        "outputs": list(op_cls.outputs),
        "attrs": [{"name": k, "kind": a.kind, "required": a.required,
                   "default": None if a.required else plain(a.default),
                   "choices": list(a.choices) if a.choices else None, "doc": a.doc}
                  for k, a in op_cls.attrs.items()],
        "differentiable": op_cls.differentiable,
        "plugin": plugin.name, "plugin_kind": plugin.kind, "plugin_origin": plugin.origin,
        "class": f"{op_cls.__module__}.{op_cls.__qualname__}",
        "defined_at": _defined_at(op_cls),
    }


def _defined_at(op_cls: type) -> str:
    try:
        path = inspect.getsourcefile(op_cls)
        line = inspect.getsourcelines(op_cls)[1]
    except (OSError, TypeError):
        return ""
    if path is None:
        return ""
    try:
        shown = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        shown = path
    return f"{path if shown.startswith('..') else shown}:{line}"


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]],
                 wrap: Sequence[int | None] | None = None) -> str:
    """Left-aligned columns separated by two spaces; the last column is not padded.

    ``wrap`` gives a maximum width per column (None: no limit); longer cells continue on the
    next lines, broken at spaces, so one long attribute list does not widen the whole table.
    """
    limits = list(wrap or [None] * len(header))
    split_rows = []
    for row in rows:
        parts = [textwrap.wrap(str(c), limit, break_on_hyphens=False) or [""]
                 if limit and len(str(c)) > limit else [str(c)] for c, limit in zip(row, limits)]
        height = max(len(p) for p in parts)
        split_rows += [[p[k] if k < len(p) else "" for p in parts] for k in range(height)]
    all_rows = [list(header), *split_rows]
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(header))]
    lines = []
    for row in all_rows:
        cells = [c.ljust(w) for c, w in zip(row[:-1], widths)] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
