"""``flowgrad plugins``: the loaded plugins, how each was found and where it lives.

Answers "why is (or isn't) my plugin loaded?": it prints whether installed packages are
autoloaded (and what turned that off), the paths named by ``FLOWGRAD_PLUGINS`` and ``--plugins``,
then one row per plugin with the hooks it implements and how many ops it registered.
"""
from __future__ import annotations

import json

from ..plugins import NO_AUTOLOAD_ENV, PATHS_ENV, autoload_enabled, env_paths
from .ops import format_table

HELP = "list the loaded plugins and where they came from (built in, file, package)"


def add_arguments(parser):
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args, registry):
    plugins = registry.plugins
    if args.json:
        print(json.dumps([{"name": p.name, "kind": p.kind, "origin": p.origin,
                           "hooks": list(p.hooks), "ops": list(p.ops)} for p in plugins],
                         indent=2))
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
    rows = [(p.name, p.kind, str(len(p.ops)), ", ".join(h.removeprefix("flowgrad_")
                                                        for h in p.hooks), p.origin)
            for p in plugins]
    print(format_table(("PLUGIN", "KIND", "OPS", "HOOKS", "FROM"), rows))
    print(f"\n{len(plugins)} plugin(s); `flowgrad ops --plugin NAME` lists a plugin's ops")
    return 0
