"""The built-in ops: one module per op family.

Every :class:`~flowgrad.op.Op` subclass with a ``type`` defined in a module of this package is
registered (by :mod:`flowgrad.builtins`, through the same hook as any plugin); adding an op
family is adding a module.  Modules are imported when the op table is built, not when flowgrad
is imported.
"""
from __future__ import annotations

import importlib
import pkgutil

from ..op import Op


def builtin_ops() -> list[type[Op]]:
    """Every op class defined in this package, in module then definition order."""
    found: list[type[Op]] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        # a module's namespace keeps definition order (no source parsing: it cost seconds)
        found.extend(c for c in vars(module).values()
                     if isinstance(c, type) and issubclass(c, Op)
                     and c.__module__ == module.__name__ and c.type)
    return found
