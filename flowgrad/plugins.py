"""The op registry and the plugin manager that fills it.

Nothing is loaded at import time: a :class:`Registry` is built on first use (or explicitly with
:func:`make_registry`), from the built-in ops plugin and any other plugins named.
"""
from __future__ import annotations

import inspect
from typing import Any, Iterable

import pluggy

from . import hookspecs
from .errors import PluginError, did_you_mean
from .op import Op

PROJECT = "flowgrad"


class Registry:
    """Op types by name, with the plugin each came from."""

    def __init__(self, plugin_manager: pluggy.PluginManager):
        self.plugin_manager = plugin_manager
        self.ops: dict[str, type[Op]] = {}
        self.sources: dict[str, str] = {}
        claims: dict[str, list[str]] = {}
        for impl in reversed(plugin_manager.hook.flowgrad_register_ops.get_hookimpls()):
            where = describe_plugin(plugin_manager, impl.plugin)
            for op_cls in impl.function() or ():
                if not (inspect.isclass(op_cls) and issubclass(op_cls, Op) and op_cls.type):
                    raise PluginError(f"plugin {where} registered {op_cls!r}, which is not an Op "
                                      "subclass with a 'type' name")
                claims.setdefault(op_cls.type, []).append(where)
                self.ops.setdefault(op_cls.type, op_cls)
                self.sources.setdefault(op_cls.type, where)
        clashes = {name: who for name, who in claims.items() if len(who) > 1}
        if clashes:
            raise PluginError("; ".join(
                f"op '{name}' is registered by more than one plugin: {' and '.join(who)}"
                for name, who in sorted(clashes.items())))

    def get(self, name: str) -> type[Op]:
        """The op class registered as ``name``; an unknown name lists the known ones."""
        try:
            return self.ops[name]
        except KeyError:
            raise PluginError(unknown_op_message(name, self.ops)) from None

    def __contains__(self, name: str) -> bool:
        return name in self.ops

    def __iter__(self):
        return iter(sorted(self.ops))


def unknown_op_message(name: str, known: Iterable[str]) -> str:
    known = sorted(known)
    return (f"unknown op '{name}'{did_you_mean(name, known)}"
            f" (known ops: {', '.join(known)})")


def describe_plugin(pm: pluggy.PluginManager, plugin: Any) -> str:
    """A plugin's name and where it comes from (file or package), for messages and listings."""
    name = pm.get_name(plugin) or repr(plugin)
    where = getattr(plugin, "__file__", None)
    return f"'{name}' ({where})" if where and where != name else f"'{name}'"


def make_plugin_manager(plugins: Iterable[Any] = ()) -> pluggy.PluginManager:
    """A plugin manager with the hook specs, the built-in ops and the given plugin objects."""
    from . import ops as builtin_ops

    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(builtin_ops, name="flowgrad.ops")
    for plugin in plugins:
        pm.register(plugin)
    return pm


def make_registry(plugins: Iterable[Any] = ()) -> Registry:
    """Build a fresh registry from the built-ins and ``plugins``."""
    return Registry(make_plugin_manager(plugins))


_default: Registry | None = None


def default_registry() -> Registry:
    """The process-wide registry, built on first use."""
    global _default
    if _default is None:
        _default = make_registry()
    return _default


def set_default_registry(registry: Registry | None) -> None:
    """Make ``registry`` the one :func:`flowgrad.load` uses by default (None: rebuild lazily)."""
    global _default
    _default = registry
