"""Meta-test: every hook in flowgrad/hookspecs.py is documented twice and tested.

Generic on purpose: hooks are discovered from the module, so a hook added later is held to the
same rules without editing this file.  For each hookspec:

* it is ``flowgrad_``-prefixed and has a docstring saying what it receives and returns;
* docs/plugins.md has a heading naming it (the reference section);
* some test module under tests/ (other than this one) exercises it: defines an implementation
  (a function or method with the hook's name), calls it (``pm.hook.<name>``), or passes its name
  as a string to a call, e.g. ``getattr(pm.hook, "<name>")``.

And the converse: docs/plugins.md documents no hook that does not exist, and every hook
implementation shipped with flowgrad refers to a declared hook.
"""
from __future__ import annotations

import ast
import inspect
import pathlib
import re
import warnings

import pytest

from flowgrad import hookspecs
from flowgrad.plugins import PROJECT, make_plugin_manager

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "plugins.md"
TESTS = ROOT / "tests"


def declared_hooks() -> dict[str, object]:
    return {name: fn for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
            if hasattr(fn, f"{PROJECT}_spec")}


HOOKS = declared_hooks()


def documented_hooks() -> set[str]:
    """Hook names appearing in a markdown heading of docs/plugins.md."""
    headings = [line for line in DOCS.read_text(encoding="utf-8").splitlines()
                if line.startswith("#")]
    return {name for line in headings for name in re.findall(r"\bflowgrad_\w+", line)}


def _exercises(tree: ast.Module, hook: str) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == hook:
            return True                                   # a plugin implementing the hook
        if isinstance(node, ast.Attribute) and node.attr == hook:
            return True                                   # pm.hook.<hook>(...)
        if isinstance(node, ast.Call) and any(
                isinstance(a, ast.Constant) and a.value == hook for a in node.args):
            return True                                   # getattr(pm.hook, "<hook>")
    return False


def exercising_modules(hook: str) -> list[str]:
    found = []
    for path in sorted(TESTS.rglob("test_*.py")):
        if path.name == pathlib.Path(__file__).name:
            continue
        with warnings.catch_warnings():  # another module's invalid escapes are not our concern
            warnings.simplefilter("ignore", SyntaxWarning)
            warnings.simplefilter("ignore", DeprecationWarning)  # Python < 3.12's name for it
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        has_tests = any(isinstance(n, ast.FunctionDef) and n.name.startswith("test_")
                        for n in ast.walk(tree))
        if has_tests and _exercises(tree, hook):
            found.append(path.name)
    return found


def test_hooks_are_declared():
    assert "flowgrad_register_ops" in HOOKS, "hook discovery found nothing: markers changed?"


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_hook_is_prefixed_and_has_a_docstring(name):
    assert name.startswith("flowgrad_"), f"hook {name} must be flowgrad_-prefixed"
    doc = inspect.getdoc(HOOKS[name]) or ""
    assert len(doc.split()) >= 12, (f"hook {name} needs a docstring saying what it receives, "
                                    f"what it returns and whether results are collected")
    assert re.search(r"\breturn", doc, re.IGNORECASE), f"{name}'s docstring says not what it returns"


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_hook_has_a_reference_entry_in_the_docs(name):
    assert name in documented_hooks(), (
        f"docs/plugins.md has no heading for {name}: add a '### `{name}`' entry to its hook "
        "reference (what it receives, returns, and an example)")


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_hook_is_exercised_by_a_test(name):
    assert exercising_modules(name), (
        f"no test module under tests/ implements or calls {name}: add a test that registers "
        "a plugin implementing it and checks the effect")


def test_docs_describe_no_stale_hooks():
    stale = sorted(documented_hooks() - set(HOOKS))
    assert not stale, f"docs/plugins.md documents hooks that do not exist: {stale}"


def test_every_shipped_hook_implementation_has_a_spec():
    pm = make_plugin_manager(autoload=False)
    pm.check_pending()  # raises PluginValidationError for an implementation of an unknown hook


def test_the_meta_checks_can_fail(tmp_path):
    """The detectors themselves: a module without the hook is not counted, one with it is."""
    absent = ast.parse("def test_x():\n    assert 'flowgrad_register_ops_x'\n")
    assert not _exercises(absent, "flowgrad_register_ops")
    implemented = ast.parse("class P:\n    def flowgrad_register_ops(self):\n        return []\n")
    called = ast.parse("getattr(pm.hook, 'flowgrad_register_ops')\n")
    assert _exercises(implemented, "flowgrad_register_ops")
    assert _exercises(called, "flowgrad_register_ops")
