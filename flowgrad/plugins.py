"""Plugin discovery, and the op registry it fills.

Where plugins come from, in load order (later sources cannot silently override earlier ones: two
plugins registering the same op name is an error naming both):

1. the built-in ops (``flowgrad.ops``), registered through the same hook as everyone else's;
2. installed packages declaring an entry point in the ``flowgrad`` group, unless autoloading is
   off (``autoload=False``, ``--no-autoload`` or ``FLOWGRAD_DISABLE_PLUGIN_AUTOLOAD=1``);
3. plugin files and folders listed in ``FLOWGRAD_PLUGINS`` (an ``os.pathsep`` list), then those
   passed as ``paths`` (``--plugins PATH``, repeatable).  A folder means every ``*.py`` file in it
   not starting with ``_``; a folder holding ``__init__.py`` is imported as one package instead;
4. plugin objects passed directly (``plugins=[...]``, handy in tests and notebooks).

Opening a graph file never imports code: the set of plugins is decided here, by the caller, and
nothing in a YAML or ONNX file can extend it.  Nothing is loaded at ``import flowgrad`` time either:
a :class:`Registry` is built on first use (or explicitly with :func:`make_registry`).
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import inspect
import os
import pathlib
import sys
import traceback
from dataclasses import dataclass, field
from typing import Any, Iterable

import pluggy

from . import hookspecs
from .errors import PluginError, did_you_mean
from .op import Attr, Op

PROJECT = "flowgrad"
ENTRY_POINT_GROUP = "flowgrad"
PATHS_ENV = "FLOWGRAD_PLUGINS"
NO_AUTOLOAD_ENV = "FLOWGRAD_DISABLE_PLUGIN_AUTOLOAD"
BUILTIN_NAME = "flowgrad"


@dataclass
class PluginInfo:
    """One loaded plugin: its name, how it was found and where it lives, what it provides.

    ``contributes`` maps each registry table it added to (``"op"``, ``"optimizer"``…) to the
    names it added, filled as the tables are built.  ``kind`` is ``"builtin"``, ``"entry point"``, ``"file"``, ``"package"`` (a plugin folder
    with ``__init__.py``) or ``"object"``; ``origin`` is the file or folder path, or for an
    entry point ``"<distribution> <version> (<entry point value>)"``.
    """

    name: str
    kind: str
    origin: str
    hooks: tuple[str, ...] = ()
    contributes: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def ops(self) -> list[str]:
        """The op names this plugin registered (once the op table is built)."""
        return self.contributes.get("op", [])

    def describe(self) -> str:
        """``'name' (origin)``, as used in error messages and listings."""
        return f"'{self.name}' ({self.origin})" if self.origin else f"'{self.name}'"


class PluginManager(pluggy.PluginManager):
    """pluggy's manager, remembering where each plugin came from (see :class:`PluginInfo`)."""

    def __init__(self) -> None:
        super().__init__(PROJECT)
        self.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}

    def add(self, plugin: Any, name: str, kind: str, origin: str) -> None:
        """Register ``plugin``, turning every way it can be malformed into a PluginError."""
        info = PluginInfo(name, kind, origin)
        if name in self.infos:
            raise PluginError(f"two plugins are named '{name}': {self.infos[name].describe()} "
                              f"and {info.describe()}; rename one of them")
        _check_hook_names(plugin, info)
        try:
            self.register(plugin, name=name)
        except pluggy.PluginValidationError as e:
            raise PluginError(f"plugin {info.describe()} is invalid: {e}") from None
        except ValueError as e:  # the same object registered twice under another name
            raise PluginError(f"plugin {info.describe()} cannot be registered: {e}") from None
        impls = [c.name for c in self.get_hookcallers(plugin) or ()]
        if not impls:
            raise PluginError(
                f"plugin {info.describe()} implements no flowgrad hook; add e.g.\n"
                "    @flowgrad.hookimpl\n"
                "    def flowgrad_register_ops():\n"
                "        return [MyOp]"
                + ("\n(a helper module in a plugin folder should have a name starting with '_')"
                   if kind == "file" else ""))
        info.hooks = tuple(sorted(impls))
        self.infos[name] = info

    def info(self, plugin: Any) -> PluginInfo:
        name = self.get_name(plugin)
        return self.infos.get(name) or PluginInfo(name or repr(plugin), "object", "")


def _check_hook_names(plugin: Any, info: PluginInfo) -> None:
    """Catch the two silent mistakes: a misspelt hook, and a hook without ``@hookimpl``."""
    specs = [n for n in dir(hookspecs) if n.startswith("flowgrad_")]
    for attr in dir(plugin):
        if not attr.startswith("flowgrad_"):
            continue
        value = getattr(plugin, attr, None)
        if not callable(value):
            continue
        marked = hasattr(value, f"{PROJECT}_impl")
        if attr not in specs:
            if marked or inspect.getmodule(value) is plugin or not inspect.ismodule(plugin):
                raise PluginError(f"plugin {info.describe()} defines '{attr}', which is not a "
                                  f"flowgrad hook{did_you_mean(attr, specs)} "
                                  f"(hooks: {', '.join(specs)})")
        elif not marked and (inspect.getmodule(value) is plugin or not inspect.ismodule(plugin)):
            raise PluginError(f"plugin {info.describe()} defines '{attr}' without marking it: "
                              "put @flowgrad.hookimpl on the line above its def")


@dataclass(frozen=True)
class Kind:
    """One kind of extension: the hook that registers it, the name of the hook's argument
    (what :meth:`Registrar.add` receives), and the tables it fills.

    ``tables`` are the registry tables (``registry.table(name)``) an ``add`` call writes to:
    one for most kinds, two for ONNX (import and export translations declared side by side).
    """

    hook: str
    arg: str
    tables: tuple[str, ...]
    doc: str


#: Every kind of extension, in the order ``flowgrad plugins`` lists them.
KINDS: tuple[Kind, ...] = (
    Kind("flowgrad_register_ops", "ops", ("op",), "ops (flowgrad.Op subclasses)"),
    Kind("flowgrad_register_onnx", "onnx", ("onnx_import", "onnx_export"),
         "ONNX import and export translations (flowgrad.onnx.Translations)"),
    Kind("flowgrad_register_optimizers", "optimizers", ("optimizer",),
         "optimizers (flowgrad.optim.Optimizer subclasses)"),
    Kind("flowgrad_register_schedules", "schedules", ("schedule",),
         "learning-rate schedules (flowgrad.optim.Schedule subclasses)"),
    Kind("flowgrad_register_objectives", "objectives", ("objective",),
         "input-optimization objectives (name -> factory)"),
    Kind("flowgrad_register_parameterizations", "parameterizations", ("parameterization",),
         "image parameterizations for visualize (name -> factory)"),
    Kind("flowgrad_register_transforms", "transforms", ("transform",),
         "robustness transforms for visualize (name -> factory)"),
    Kind("flowgrad_register_data_loaders", "data_loaders", ("data_loader",),
         "training-data loaders (a name like 'digits', or a file suffix like '.npz')"),
)
_KIND_OF_TABLE = {table: kind for kind in KINDS for table in kind.tables}


class Registrar:
    """What a registration hook receives: the plugin calls :meth:`add` with what it provides.

    One registrar is made per plugin and hook, so every entry knows which plugin added it;
    that is what lets a clash name both plugins.
    """

    def __init__(self, registry: "Registry", kind: Kind, info: PluginInfo):
        self._registry, self._kind, self._info = registry, kind, info

    def add(self, *items: Any) -> None:
        """Register ``items``; what they are depends on the kind (see each hook's docs):

        * ops, optimizers, schedules: classes, named by their ``type`` or ``kind``:
          ``ops.add(MyOp, OtherOp)``;
        * objectives, parameterizations, transforms, data loaders: ``add(name, factory)``;
        * ONNX: ``Translations`` tables: ``onnx.add(T)``.
        """
        table = self._kind.tables[0]
        if table in _NAMED:
            if len(items) != 2 or not isinstance(items[0], str) or not callable(items[1]):
                raise PluginError(f"{self._where()}: {self._kind.arg}.add takes a name and a "
                                  f"callable, e.g. {self._kind.arg}.add('my_name', factory); "
                                  f"got {items!r}")
            self._put(table, items[0], items[1])
        elif table == "onnx_import":
            for t in items:
                if not (hasattr(t, "importers") and hasattr(t, "exporters")):
                    raise PluginError(f"{self._where()}: onnx.add takes flowgrad.onnx."
                                      f"Translations tables, got {t!r}")
                for rule in t.importers:
                    self._put("onnx_import", (rule.domain, rule.op_type, int(rule.since)), rule)
                for op_type, exporter in t.exporters:
                    self._put("onnx_export", op_type, exporter)
        else:
            for cls in items:
                key = _CLASS_CHECKS[table](cls, self._info)
                self._put(table, key, cls)

    def _put(self, table: str, key: Any, value: Any) -> None:
        self._registry._put(table, key, value, self._info)

    def _where(self) -> str:
        return f"{self._kind.hook} of plugin {self._info.describe()}"


class Registry:
    """Everything the loaded plugins registered, kind by kind, and who registered what.

    ``plugins`` lists every loaded plugin in load order; ``ops`` maps op names to classes.
    Every other kind is a table: :meth:`table` (``"optimizer"``, ``"objective"``,
    ``"onnx_import"``…, see :data:`KINDS`) maps each name to what was registered, and
    :meth:`provider` says which plugin registered it.  A table is built on first use by calling
    its hook on every plugin in load order (so listing ops never imports the ONNX
    translations), then cached.  The same name registered twice, by two plugins or a plugin and
    a built-in, is an error naming both.
    """

    def __init__(self, plugin_manager: pluggy.PluginManager):
        self.plugin_manager = plugin_manager
        infos = getattr(plugin_manager, "infos", None)
        self.plugins: list[PluginInfo] = (
            [dataclasses.replace(i, contributes={}) for i in infos.values()]
            if infos is not None else
            [PluginInfo(plugin_manager.get_name(p) or repr(p), "object", "",
                        tuple(sorted(c.name for c in plugin_manager.get_hookcallers(p) or ())))
             for p in plugin_manager.get_plugins()])
        self._by_name = {i.name: i for i in self.plugins}
        self._tables: dict[str, dict[Any, Any]] = {}
        self._providers: dict[str, dict[Any, PluginInfo]] = {}

    # -- tables -----------------------------------------------------------------------------
    def table(self, name: str) -> dict[Any, Any]:
        """The registered entries of one table (see :data:`KINDS`), built once."""
        if name not in self._tables:
            kind = _KIND_OF_TABLE.get(name)
            if kind is None:
                raise KeyError(f"no registry table '{name}'{did_you_mean(name, _KIND_OF_TABLE)}")
            self._build(kind)
        return self._tables[name]

    def provider(self, table: str, key: Any) -> PluginInfo:
        """The plugin that registered ``key`` in ``table``."""
        self.table(table)
        return self._providers[table][key]

    @property
    def ops(self) -> dict[str, type[Op]]:
        return self.table("op")

    def _build(self, kind: Kind) -> None:
        for table in kind.tables:
            self._tables[table], self._providers[table] = {}, {}
        for plugin, info, function in self._implementers(kind.hook):
            registrar = Registrar(self, kind, info)
            caller = self.plugin_manager.subset_hook_caller(
                kind.hook, [p for p in self.plugin_manager.get_plugins() if p is not plugin])
            try:
                returned = caller(**{kind.arg: registrar})
            except PluginError:
                raise
            except Exception as e:
                raise PluginError(f"{kind.hook} of plugin {info.describe()} failed: "
                                  f"{type(e).__name__}: {e}{_where(e, function)}") from e
            if any(r is not None for r in returned):
                raise PluginError(
                    f"{kind.hook} of plugin {info.describe()} returned a value; register "
                    f"with its argument instead:\n    @flowgrad.hookimpl\n    def "
                    f"{kind.hook}({kind.arg}):\n        {kind.arg}.add(...)")

    def _implementers(self, hook: str) -> list[tuple[Any, PluginInfo, Any]]:
        """``(plugin, info, function)`` of every plugin implementing ``hook``, in load order."""
        impls = getattr(self.plugin_manager.hook, hook).get_hookimpls()
        return [(impl.plugin, self._info(impl.plugin), impl.function) for impl in impls]

    def _put(self, table: str, key: Any, value: Any, info: PluginInfo) -> None:
        providers = self._providers[table]
        if key in providers:
            what = _describe_key(table, key)
            first = providers[key]
            if first is info:
                raise PluginError(f"plugin {info.describe()} registers {what} twice")
            raise PluginError(f"{what} is registered by more than one plugin: "
                              f"{first.describe()} and {info.describe()} (rename it in one of "
                              "them, or do not load both)")
        providers[key] = info
        self._tables[table][key] = value
        info.contributes.setdefault(table, []).append(key)

    def _info(self, plugin: Any) -> PluginInfo:
        name = self.plugin_manager.get_name(plugin) or repr(plugin)
        return self._by_name.get(name) or PluginInfo(name, "object", "")

    def build_all(self) -> "Registry":
        """Build every table now (``flowgrad plugins`` lists them all)."""
        for kind in KINDS:
            self.table(kind.tables[0])
        return self

    # -- ops ----------------------------------------------------------------------------------
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

    def __len__(self) -> int:
        return len(self.ops)


#: tables whose entries are ``add(name, callable)``
_NAMED = frozenset({"objective", "parameterization", "transform", "data_loader"})


def _describe_key(table: str, key: Any) -> str:
    if table == "onnx_import":
        domain, op_type, since = key
        return f"ONNX import of {domain or 'ai.onnx'}::{op_type} (since opset {since})"
    if table == "onnx_export":
        return f"ONNX export of op '{key}'"
    return f"{table.replace('_', ' ')} '{key}'"


def _check_op_class(op_cls: Any, info: PluginInfo) -> str:
    """Reject what would otherwise fail far from its cause, e.g. at a user's first run."""
    if not (inspect.isclass(op_cls) and issubclass(op_cls, Op)):
        raise PluginError(f"plugin {info.describe()} registered {op_cls!r}, which is not a "
                          "flowgrad.Op subclass")
    where = f"op class {op_cls.__name__} of plugin {info.describe()}"
    name = op_cls.type
    if not isinstance(name, str) or not name or "#" in name or name.split() != [name]:
        raise PluginError(f"{where} needs a 'type': the name used in YAML (no spaces, no '#'), "
                          f"got {name!r}")
    ports = op_cls.input_names
    if len(set(ports)) != len(ports) or len(set(op_cls.outputs)) != len(op_cls.outputs):
        raise PluginError(f"{where} ('{name}') has duplicate port names: inputs {ports}, "
                          f"outputs {tuple(op_cls.outputs)}")
    if not op_cls.outputs:
        raise PluginError(f"{where} ('{name}') declares no outputs")
    unknown = sorted(set(op_cls.no_grad_inputs) - set(ports))
    if unknown:
        raise PluginError(f"{where} ('{name}') lists no_grad_inputs {unknown} that are not input "
                          f"ports (inputs: {', '.join(ports)})")
    bad = [k for k, v in op_cls.attrs.items() if not isinstance(v, Attr)]
    if bad:
        raise PluginError(f"{where} ('{name}') declares attribute '{bad[0]}' without "
                          "flowgrad.Attr(kind, default)")
    taken = sorted(set(op_cls.attrs) & CONTRACT_NAMES)
    if taken:
        raise PluginError(f"{where} ('{name}') declares attribute '{taken[0]}', which is a "
                          "member of the op contract (an attribute would overwrite it); "
                          "rename the attribute")
    return name


#: what an attribute name may not be: every member of the op contract
CONTRACT_NAMES = frozenset(n for n in dir(Op) if not n.startswith("__")) | {"_attr_values"}


def _check_class_kind(base_path: str, name_attr: str):
    """A check for kinds registered as classes named by ``name_attr`` (optimizers,
    schedules): the base class is imported on first use, keeping start-up light."""
    def check(cls: Any, info: PluginInfo) -> str:
        module, _, base_name = base_path.rpartition(".")
        base = getattr(importlib.import_module(module), base_name)
        name = getattr(cls, name_attr, None) if inspect.isclass(cls) else None
        if not (inspect.isclass(cls) and issubclass(cls, base) and isinstance(name, str)
                and name):
            raise PluginError(f"plugin {info.describe()} registered {cls!r}, which is not a "
                              f"{base_path} subclass with a '{name_attr}' name")
        return name
    return check


_CLASS_CHECKS = {
    "op": _check_op_class,
    "optimizer": _check_class_kind("flowgrad.optim.Optimizer", "kind"),
    "schedule": _check_class_kind("flowgrad.optim.Schedule", "kind"),
}


def unknown_op_message(name: str, known: Iterable[str]) -> str:
    """``unknown op 'x'; did you mean 'y'?`` and how to see or extend the known ops."""
    known = sorted(known)
    listing = (f"known ops: {', '.join(known)}" if len(known) <= 20 else
               f"{len(known)} ops are known; `flowgrad ops` lists them")
    return (f"unknown op '{name}'{did_you_mean(name, known)} ({listing}; an op from a plugin "
            f"file needs --plugins PATH or FLOWGRAD_PLUGINS, or registry=make_registry(paths=...))")


def autoload_enabled(autoload: bool = True) -> bool:
    """Whether installed plugins are loaded: ``autoload`` and the environment both allow it."""
    return autoload and os.environ.get(NO_AUTOLOAD_ENV, "").strip().lower() in ("", "0", "false",
                                                                                 "no")


def env_paths() -> list[str]:
    """The plugin paths listed in ``FLOWGRAD_PLUGINS``."""
    return [p for p in os.environ.get(PATHS_ENV, "").split(os.pathsep) if p.strip()]


def make_plugin_manager(plugins: Iterable[Any] = (), paths: Iterable[str] = (),
                        autoload: bool = True) -> PluginManager:
    """A plugin manager holding, in order: the built-in ops, installed plugins (unless autoload
    is off), the plugin files and folders in ``FLOWGRAD_PLUGINS`` and ``paths``, and the given
    plugin objects.  See the module docstring for the rules."""
    from . import builtins

    pm = PluginManager()
    pm.add(builtins, BUILTIN_NAME, "builtin", "flowgrad")
    if autoload_enabled(autoload):
        _load_entry_points(pm)
    seen: set[pathlib.Path] = set()
    for path in [*env_paths(), *paths]:
        for module, kind, file in load_plugin_path(os.fspath(path), with_origin=True):
            if file in seen:  # named twice (e.g. in FLOWGRAD_PLUGINS and --plugins): load once
                continue
            seen.add(file)
            pm.add(module, module.__name__.removeprefix("flowgrad_plugin_"), kind, str(file))
    for plugin in plugins:
        name = getattr(plugin, "__name__", None) or type(plugin).__name__
        where = getattr(plugin, "__file__", None) or ""
        pm.add(plugin, name, "object", where)
    return pm


def _load_entry_points(pm: PluginManager) -> None:
    """Import every ``flowgrad`` entry point of the installed distributions (path order)."""
    seen: set[tuple[str, str]] = set()
    for dist in importlib.metadata.distributions():
        dist_name = dist.metadata["Name"] or "?"
        for ep in dist.entry_points:
            if ep.group != ENTRY_POINT_GROUP:
                continue
            key = (dist_name.lower().replace("_", "-"), ep.name)
            if key in seen:  # the same distribution found twice on sys.path
                continue
            seen.add(key)
            origin = f"{dist_name} {dist.version}, entry point {ep.name} = {ep.value}"
            try:
                plugin = ep.load()
            except Exception as e:
                raise PluginError(
                    f"installed plugin '{ep.name}' (package {dist_name} {dist.version}, "
                    f"entry point {ep.value}) failed to import: {type(e).__name__}: {e}"
                    f"{_where(e)} (uninstall it, or pass --no-autoload / set "
                    f"{NO_AUTOLOAD_ENV}=1 to skip installed plugins)") from e
            pm.add(plugin, ep.name, "entry point", origin)


def load_plugin_path(path: str, with_origin: bool = False) -> list[Any]:
    """Import a plugin file, a package folder, or every ``*.py`` file of a folder (sorted).

    Returns the modules, or with ``with_origin`` ``(module, kind, resolved path)`` triples.
    """
    target = pathlib.Path(path).expanduser()
    if target.is_dir() and (target / "__init__.py").is_file():
        found = [(_import_file(target / "__init__.py", target.name, package=True), "package",
                  target.resolve())]
    elif target.is_dir():
        files = sorted(f for f in target.glob("*.py") if not f.name.startswith("_"))
        found = [(_import_file(f, f.stem), "file", f.resolve()) for f in files]
    elif target.is_file():
        if target.suffix != ".py":
            raise PluginError(f"plugin path '{path}' is not a .py file or a folder")
        found = [(_import_file(target, target.stem), "file", target.resolve())]
    else:
        raise PluginError(f"plugin path '{path}' does not exist")
    return found if with_origin else [m for m, _, _ in found]


def _import_file(file: pathlib.Path, stem: str, package: bool = False) -> Any:
    """Import ``file`` as module ``flowgrad_plugin_<stem>``, once per file per process."""
    name = f"flowgrad_plugin_{stem}"
    resolved = file.resolve()
    existing = sys.modules.get(name)
    if existing is not None and getattr(existing, "__file__", None) == str(resolved) \
            and getattr(existing, "__flowgrad_mtime__", None) == resolved.stat().st_mtime_ns:
        return existing
    spec = importlib.util.spec_from_file_location(
        name, resolved, submodule_search_locations=[str(resolved.parent)] if package else None)
    if spec is None or spec.loader is None:
        raise PluginError(f"plugin file '{file}' cannot be imported (is it a .py file?)")
    module = importlib.util.module_from_spec(spec)
    module.__flowgrad_mtime__ = resolved.stat().st_mtime_ns
    sys.modules[name] = module  # before running it, as dataclasses and pickling need
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(name, None)
        for sub in [m for m in sys.modules if m.startswith(name + ".")]:
            sys.modules.pop(sub, None)
        raise PluginError(f"plugin file '{file}' failed to import: {type(e).__name__}: {e}"
                          f"{_where(e, resolved.parent if package else resolved)}") from e
    return module


def _where(error: BaseException, near: Any = None) -> str:
    """`` (at file:line)`` locating ``error`` in the plugin's own code.

    ``near`` is the plugin's file or folder, or a function of it; without a frame there, the
    innermost frame outside flowgrad and the standard library is used.
    """
    if isinstance(error, SyntaxError) and error.filename and error.lineno:
        return f" (at {error.filename}:{error.lineno})"
    if callable(near):
        near = getattr(inspect.getmodule(near), "__file__", None)
    near = pathlib.Path(near).resolve() if near else None
    frames = list(reversed(traceback.extract_tb(error.__traceback__)))
    if near is not None:
        for frame in frames:
            path = pathlib.Path(frame.filename)
            if path == near or near in path.parents:
                return f" (at {frame.filename}:{frame.lineno})"
    skip = [pathlib.Path(m.__file__).resolve().parent for m in (sys.modules[__package__], os,
                                                                 pluggy)]
    for frame in frames:
        path = pathlib.Path(frame.filename).resolve()
        if any(s in path.parents for s in skip) or frame.filename.startswith("<"):
            continue
        return f" (at {frame.filename}:{frame.lineno})"
    return ""


def make_registry(plugins: Iterable[Any] = (), paths: Iterable[str] = (),
                  autoload: bool = True) -> Registry:
    """Build a fresh registry (see :func:`make_plugin_manager` for what is loaded).

    The op table is built at once, so a broken or clashing op plugin is reported here; the
    other tables are built when first used."""
    registry = Registry(make_plugin_manager(plugins, paths, autoload))
    registry.table("op")
    return registry


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
