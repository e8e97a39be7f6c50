"""The op registry and the plugin manager that fills it.

Nothing is loaded at import time: a :class:`Registry` is built on first use (or explicitly with
:func:`make_registry`), from the built-in ops plugin and any other plugins named.
"""
from __future__ import annotations

import importlib.util
import inspect
import os
import pathlib
import sys
from typing import Any, Iterable

import pluggy

from . import hookspecs
from .errors import PluginError, did_you_mean
from .op import Op

PROJECT = "flowgrad"
ENTRY_POINT_GROUP = "flowgrad"
PATHS_ENV = "FLOWGRAD_PLUGINS"
NO_AUTOLOAD_ENV = "FLOWGRAD_DISABLE_PLUGIN_AUTOLOAD"


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


def make_plugin_manager(plugins: Iterable[Any] = (), paths: Iterable[str] = (),
                        autoload: bool = True) -> pluggy.PluginManager:
    """A plugin manager holding, in order: the hook specs, the built-in ops, installed plugins
    (entry-point group ``flowgrad``, unless ``autoload`` is False or ``FLOWGRAD_DISABLE_PLUGIN_
    AUTOLOAD`` is set), the plugin files and folders in ``paths`` and in ``FLOWGRAD_PLUGINS``,
    and the given plugin objects."""
    from . import ops as builtin_ops

    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(builtin_ops, name="flowgrad.ops")
    if autoload and not os.environ.get(NO_AUTOLOAD_ENV):
        try:
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        except Exception as e:  # an installed plugin failed to import
            raise PluginError(f"an installed flowgrad plugin failed to load: "
                              f"{type(e).__name__}: {e} (set {NO_AUTOLOAD_ENV}=1 to skip "
                              "installed plugins)") from e
    env_paths = [p for p in os.environ.get(PATHS_ENV, "").split(os.pathsep) if p]
    for path in [*env_paths, *paths]:
        for module in load_plugin_path(path):
            if not pm.is_registered(module):
                pm.register(module, name=module.__name__)
    for plugin in plugins:
        pm.register(plugin)
    return pm


def load_plugin_path(path: str) -> list[Any]:
    """Import a plugin file, or every ``*.py`` file of a folder (sorted), as modules."""
    target = pathlib.Path(path)
    if target.is_dir():
        files = sorted(f for f in target.glob("*.py") if not f.name.startswith("_"))
    elif target.is_file():
        files = [target]
    else:
        raise PluginError(f"plugin path '{path}' does not exist")
    return [_import_file(f) for f in files]


def _import_file(file: pathlib.Path) -> Any:
    name = f"flowgrad_plugin_{file.stem}"
    resolved = str(file.resolve())
    existing = sys.modules.get(name)
    if existing is not None and getattr(existing, "__file__", None) == resolved:
        return existing
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise PluginError(f"plugin file '{file}' cannot be imported (is it a .py file?)")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise PluginError(f"plugin file '{file}' failed to import: {type(e).__name__}: {e}") from e
    sys.modules[name] = module
    return module


def make_registry(plugins: Iterable[Any] = (), paths: Iterable[str] = (),
                  autoload: bool = True) -> Registry:
    """Build a fresh registry (see :func:`make_plugin_manager` for what is loaded)."""
    return Registry(make_plugin_manager(plugins, paths, autoload))


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
