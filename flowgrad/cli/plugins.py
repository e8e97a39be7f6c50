"""``flowgrad plugins``: the loaded plugins, where each came from, and what each contributes.

Answers "why is (or isn't) my plugin loaded, and what did it add?": it prints whether installed
packages are autoloaded (and what turned that off), the paths named by ``FLOWGRAD_PLUGINS`` and
``--plugins``, one row per plugin with its kind and origin, then what each plugin registered,
kind by kind (ops, ONNX translations, optimizers, schedules, objectives...).
"""
from __future__ import annotations

import json

from ..plugins import KINDS, NO_AUTOLOAD_ENV, PATHS_ENV, autoload_enabled, env_paths
from .ops import format_table

HELP = "list the loaded plugins, where they came from and what each contributes"

#: how many names of one kind are listed before a plugin's contribution becomes a count
LISTED = 6


def add_arguments(parser):
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def _key(table: str, key) -> str:
    """An entry's name as printed: ONNX imports as ``domain::Op-since``."""
    if table == "onnx_import":
        domain, op_type, since = key
        return f"{domain + '::' if domain else ''}{op_type}-{since}"
    return str(key)


def run(args, registry):
    registry.build_all()
    plugins = registry.plugins
    tables = [t for kind in KINDS for t in kind.tables]
    if args.json:
        print(json.dumps([{"name": p.name, "kind": p.kind, "origin": p.origin,
                           "hooks": list(p.hooks),
                           "contributes": {t: [_key(t, k) for k in p.contributes[t]]
                                           for t in tables if p.contributes.get(t)}}
                          for p in plugins], indent=2))
        return 0
    if args.no_autoload:
        autoload = "off (--no-autoload)"
    elif not autoload_enabled():
        autoload = f"off ({NO_AUTOLOAD_ENV} is set)"
    else:
        autoload = "on (entry-point group 'flowgrad')"
    print(f"installed packages: {autoload}")
    print(f"{PATHS_ENV}: {', '.join(env_paths()) or '(not set)'}")
    print(f"--plugins: {', '.join(args.plugins) or '(none)'}")
    print()
    print(format_table(("PLUGIN", "KIND", "FROM"), [(p.name, p.kind, p.origin) for p in plugins]))
    print("\nwhat each plugin contributes:")
    for p in plugins:
        parts = []
        for table in tables:
            keys = [_key(table, k) for k in p.contributes.get(table, ())]
            what = table.replace("_", " ")
            if len(keys) > LISTED:
                parts.append(f"{len(keys)} {what}s")
            elif keys:
                parts.append(f"{what}{'s' if len(keys) > 1 else ''} {', '.join(keys)}")
        print(f"  {p.name}: {'; '.join(parts) or 'nothing'}")
    print(f"\n{len(plugins)} plugin(s); `flowgrad ops --plugin NAME` lists a plugin's ops")
    return 0
