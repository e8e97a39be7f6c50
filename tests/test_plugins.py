"""Plugins end to end: discovery, errors, the example plugins, the authoring kit, the CLI.

CLI tests call the command in-process (:func:`flowgrad.cli.main`), except those that need a
pip-installed package on ``PYTHONPATH`` and the broken-pipe test, which run a real subprocess;
the example package is pip-installed into a temporary folder (no network, no build isolation)
and found through its entry point.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import flowgrad
from flowgrad.errors import FlowgradError, GraphError, PluginError
from flowgrad.plugins import NO_AUTOLOAD_ENV, PATHS_ENV, make_registry
from flowgrad.testing import (Case, check_config, check_dtypes, check_infer, check_op,
                              gradcheck, positive)

ROOT = pathlib.Path(__file__).resolve().parent.parent
PLUGINS = ROOT / "plugins"
PACKAGE = PLUGINS / "flowgrad-example-package"
DEMO = ROOT / "graphs" / "plugins_demo.yaml"
EXAMPLE_OPS = {"beta_swish", "moments", "rms_norm"}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    monkeypatch.delenv(PATHS_ENV, raising=False)
    monkeypatch.delenv(NO_AUTOLOAD_ENV, raising=False)


def op_plugin(type_name: str, cls: str = "Doubler", extra: str = "") -> str:
    """The source of a minimal one-op plugin file (``extra``: more code before the hook)."""
    return textwrap.dedent(f'''\
        import flowgrad

        class {cls}(flowgrad.Op):
            type = "{type_name}"
            def forward(self, ctx, x):
                return (x * 2,)
            def backward(self, ctx, gy):
                return (gy * 2,)
        ''') + textwrap.dedent(extra) + textwrap.dedent(f'''
        @flowgrad.hookimpl
        def flowgrad_register_ops(ops):
            ops.add({cls})
        ''')


def write(folder: pathlib.Path, name: str, text: str) -> pathlib.Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def cli(*args: str, env: dict | None = None, cwd: pathlib.Path = ROOT, check_rc: int | None = 0):
    """``flowgrad ARGS`` in ``cwd`` with ``env`` added: in-process, or as ``python -m flowgrad``
    when ``env`` sets ``PYTHONPATH`` (an installed package must be importable at start-up).
    Returns ``returncode``, ``stdout`` and ``stderr`` as a CompletedProcess does."""
    full_env = {k: v for k, v in os.environ.items() if k not in (PATHS_ENV, NO_AUTOLOAD_ENV)}
    full_env.update(env or {})
    if "PYTHONPATH" in (env or {}):
        proc = subprocess.run([sys.executable, "-m", "flowgrad", *args], cwd=cwd, env=full_env,
                              capture_output=True, text=True, timeout=120)
    else:
        proc = _in_process(list(args), full_env, cwd)
    if check_rc is not None:
        assert proc.returncode == check_rc, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def _in_process(args: list[str], env: dict, cwd: pathlib.Path) -> subprocess.CompletedProcess:
    from flowgrad.cli import main
    out, err = io.StringIO(), io.StringIO()
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(args)
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


# -- discovery ------------------------------------------------------------------------------

def test_builtins_come_first_and_register_through_the_same_hook():
    registry = make_registry(autoload=False)
    first = registry.plugins[0]
    assert (first.name, first.kind) == ("flowgrad", "builtin")
    assert "flowgrad_register_ops" in first.hooks and "flowgrad_register_optimizers" in first.hooks
    assert registry.provider("op", "relu") is first and "relu" in first.ops
    assert not EXAMPLE_OPS & set(registry.ops)


def test_a_plugin_folder_loads_each_file_as_a_plugin(tmp_path):
    registry = make_registry(paths=[str(PLUGINS)], autoload=False)
    files = {p.name: p for p in registry.plugins if p.kind == "file"}
    assert set(files) == EXAMPLE_OPS
    for name in EXAMPLE_OPS:
        assert registry.provider("op", name).origin == str(PLUGINS / f"{name}.py")
        assert files[name].ops == [name]
    assert registry.provider("op", "rms_norm").describe() == f"'rms_norm' ({PLUGINS / 'rms_norm.py'})"


def test_folder_skips_underscore_files_and_subfolders(tmp_path):
    write(tmp_path, "twice.py", op_plugin("twice"))
    write(tmp_path, "_helper.py", "raise RuntimeError('a private helper must not be imported')")
    write(tmp_path / "sub", "inner.py", "raise RuntimeError('subfolders are not searched')")
    registry = make_registry(paths=[str(tmp_path)], autoload=False)
    assert "twice" in registry and [p.name for p in registry.plugins] == ["flowgrad", "twice"]


def test_a_folder_with_init_is_one_package_plugin_with_relative_imports(tmp_path):
    pkg = tmp_path / "mypkg"
    write(pkg, "ops_impl.py", op_plugin("pkg_double").replace("@flowgrad.hookimpl", "")
          .split("def flowgrad_register_ops")[0])
    write(pkg, "__init__.py", "import flowgrad\nfrom .ops_impl import Doubler\n\n"
          "@flowgrad.hookimpl\ndef flowgrad_register_ops(ops):\n    ops.add(Doubler)\n")
    registry = make_registry(paths=[str(pkg)], autoload=False)
    info = registry.provider("op", "pkg_double")
    assert (info.name, info.kind, info.origin) == ("mypkg", "package", str(pkg))


def test_env_variable_lists_paths_and_a_path_named_twice_loads_once(tmp_path, monkeypatch):
    a = write(tmp_path / "a", "one.py", op_plugin("op_one"))
    b = write(tmp_path / "b", "two.py", op_plugin("op_two"))
    monkeypatch.setenv(PATHS_ENV, os.pathsep.join([str(a), str(b)]))
    registry = make_registry(paths=[str(a)], autoload=False)
    assert {"op_one", "op_two"} <= set(registry.ops)
    assert [p.name for p in registry.plugins] == ["flowgrad", "one", "two"]


def test_plugin_objects_can_be_passed_directly():
    class Triple(flowgrad.Op):
        type = "triple_obj"

        def forward(self, ctx, x):
            return (3 * x,)

    class MyPlugin:
        @flowgrad.hookimpl
        def flowgrad_register_ops(self, ops):
            ops.add(Triple)

    registry = make_registry(plugins=[MyPlugin()], autoload=False)
    assert registry.get("triple_obj") is Triple
    assert registry.provider("op", "triple_obj").kind == "object"


def test_an_edited_plugin_file_is_reimported(tmp_path):
    path = write(tmp_path, "editable.py", op_plugin("first_name"))
    assert "first_name" in make_registry(paths=[str(path)], autoload=False)
    path.write_text(op_plugin("second_name"))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10_000_000))
    registry = make_registry(paths=[str(path)], autoload=False)
    assert "second_name" in registry and "first_name" not in registry


def test_unknown_op_suggests_the_plugin_op_and_says_how_to_load_plugins():
    registry = make_registry(paths=[str(PLUGINS)], autoload=False)
    with pytest.raises(PluginError, match="unknown op 'rms_nrom'; did you mean 'rms_norm'"):
        registry.get("rms_nrom")
    with pytest.raises(PluginError, match="--plugins PATH"):
        make_registry(autoload=False).get("beta_swish")


# -- broken plugins -------------------------------------------------------------------------

@pytest.mark.parametrize("body,cause,line", [
    ("import numpy\n\nraise RuntimeError('boom')\n", "RuntimeError: boom", 3),
    ("def f(:\n    pass\n", "SyntaxError", 1),
    ("import numpy\nimport not_a_module_xyz\n", "No module named 'not_a_module_xyz'", 2),
    ("import flowgrad\nclass A(flowgrad.Op):\n    type = 'a'\n    inputs = ('x', 'y')\n"
     "    variadic = True\n", "a variadic op declares exactly one input name", 2),
])
def test_a_plugin_that_fails_to_import_names_the_file_line_and_cause(tmp_path, body, cause, line):
    path = write(tmp_path, "broken.py", body)
    with pytest.raises(PluginError) as info:
        make_registry(paths=[str(path)], autoload=False)
    message = str(info.value)
    assert f"plugin file '{path}' failed to import" in message
    assert cause in message
    assert f"{path}:{line}" in message
    assert "flowgrad_plugin_broken" not in sys.modules


def test_missing_path_and_non_python_file_are_errors(tmp_path):
    with pytest.raises(PluginError, match="plugin path '.*nope.py' does not exist"):
        make_registry(paths=[str(tmp_path / "nope.py")], autoload=False)
    text = write(tmp_path, "notes.txt", "hello")
    with pytest.raises(PluginError, match="is not a .py file or a folder"):
        make_registry(paths=[str(text)], autoload=False)


def test_conflicting_op_names_name_both_plugins(tmp_path):
    a = write(tmp_path, "first.py", op_plugin("twin"))
    b = write(tmp_path, "second.py", op_plugin("twin"))
    with pytest.raises(PluginError) as info:
        make_registry(paths=[str(tmp_path)], autoload=False)
    message = str(info.value)
    assert "op 'twin' is registered by more than one plugin" in message
    assert f"'first' ({a})" in message and f"'second' ({b})" in message


def test_a_plugin_op_may_not_shadow_a_builtin(tmp_path):
    path = write(tmp_path, "myrelu.py", op_plugin("relu"))
    with pytest.raises(PluginError, match=r"op 'relu' is registered by more than one plugin: "
                                          r"'flowgrad' \(flowgrad\) and 'myrelu' \("):
        make_registry(paths=[str(path)], autoload=False)


def test_two_plugin_files_with_one_name_are_an_error(tmp_path):
    a = write(tmp_path / "a", "same.py", op_plugin("same_a"))
    b = write(tmp_path / "b", "same.py", op_plugin("same_b"))
    with pytest.raises(PluginError, match="two plugins are named 'same'") as info:
        make_registry(paths=[str(a), str(b)], autoload=False)
    assert str(a) in str(info.value) and str(b) in str(info.value)


@pytest.mark.parametrize("source,expected", [
    ("import flowgrad\nX = 1\n", "implements no flowgrad hook; add e.g."),
    (op_plugin("typo").replace("def flowgrad_register_ops", "def flowgrad_register_op"),
     "'flowgrad_register_op', which is not a flowgrad hook; did you mean "
     "'flowgrad_register_ops'?"),
    (op_plugin("unmarked").replace("@flowgrad.hookimpl\n", ""),
     "defines 'flowgrad_register_ops' without marking it: put @flowgrad.hookimpl"),
    (op_plugin("x").replace("def flowgrad_register_ops(ops):", "def flowgrad_register_ops(cfg):"),
     "is invalid"),
    (op_plugin("old").replace("def flowgrad_register_ops(ops):\n    ops.add(Doubler)",
                              "def flowgrad_register_ops():\n    return [Doubler]"),
     "returned a value; register with its argument instead"),
])
def test_malformed_plugins_are_explained(tmp_path, source, expected):
    path = write(tmp_path, "malformed.py", source)
    with pytest.raises(PluginError, match="malformed") as info:
        make_registry(paths=[str(path)], autoload=False)
    assert expected in str(info.value)


@pytest.mark.parametrize("registered,expected", [
    ("int", "registered <class 'int'>, which is not a flowgrad.Op subclass"),
    ("Nameless", "needs a 'type': the name used in YAML"),
    ("BadNoGrad", "lists no_grad_inputs ['labels'] that are not input ports"),
    ("BadAttr", "declares attribute 'alpha' without flowgrad.Attr"),
    ("Shadowing", "declares attribute 'outputs', which is a member of the op contract"),
    ("Doubler, Doubler", "registers op 'bad_ops' twice"),
])
def test_registered_op_classes_are_validated(tmp_path, registered, expected):
    extra = textwrap.dedent('''
        class Nameless(flowgrad.Op):
            pass
        class BadNoGrad(Doubler):
            type = "bad_no_grad"
            no_grad_inputs = frozenset({"labels"})
        class BadAttr(Doubler):
            type = "bad_attr"
            attrs = {"alpha": 0.5}
        class Shadowing(Doubler):
            type = "shadowing"
            attrs = {"outputs": flowgrad.Attr("int", 1)}
        ''')
    source = op_plugin("bad_ops", extra=extra).replace("ops.add(Doubler)", f"ops.add({registered})")
    path = write(tmp_path, "badops.py", source)
    with pytest.raises(PluginError, match=expected.replace("[", r"\[").replace("(", r"\(")) as e:
        make_registry(paths=[str(path)], autoload=False)
    assert "'badops'" in str(e.value)


def test_a_hook_that_raises_names_the_plugin_and_line(tmp_path):
    source = op_plugin("raiser").replace("    ops.add(Doubler)", "    ops.add([Doubler][5])")
    path = write(tmp_path, "raiser.py", source)
    with pytest.raises(PluginError) as info:
        make_registry(paths=[str(path)], autoload=False)
    message = str(info.value)
    assert f"flowgrad_register_ops of plugin 'raiser' ({path}) failed: IndexError" in message
    assert f"(at {path}:" in message


def test_named_registrations_are_collected_and_a_clash_names_both_plugins():
    def plugin(name, entries):
        class P:
            @flowgrad.hookimpl
            def flowgrad_register_objectives(self, objectives):
                for key, factory in entries.items():
                    objectives.add(key, factory)
        P.__name__ = name
        return P()

    from flowgrad.visualize.objectives import objective_factories
    registry = make_registry(plugins=[plugin("alpha", {"mine": len}), plugin("beta", {})],
                             autoload=False)
    assert objective_factories(registry)["mine"] is len
    assert registry.provider("objective", "mine").name == "alpha"
    assert registry.provider("objective", "channel").name == "flowgrad"
    clash = make_registry(plugins=[plugin("alpha", {"mine": len}),
                                   plugin("beta", {"mine": abs})], autoload=False)
    with pytest.raises(PluginError, match="objective 'mine' is registered by more than one "
                                          "plugin: 'alpha' and 'beta'"):
        objective_factories(clash)
    wrong = make_registry(plugins=[plugin("gamma", {"x": 3})], autoload=False)
    with pytest.raises(PluginError, match="objectives.add takes a name and a callable"):
        objective_factories(wrong)
    built_in = make_registry(plugins=[plugin("delta", {"channel": len})], autoload=False)
    with pytest.raises(PluginError, match=r"objective 'channel' is registered by more than one "
                                          r"plugin: 'flowgrad' \(flowgrad\) and 'delta'"):
        objective_factories(built_in)


# -- opening YAML never runs code -------------------------------------------------------------

def test_opening_yaml_never_imports_code(tmp_path):
    marker = tmp_path / "imported"
    write(tmp_path, "sidefx.py", f"open({str(marker)!r}, 'w').close()\n"
          + op_plugin("sidefx"))
    graph = write(tmp_path, "g.yaml", textwrap.dedent("""\
        flowgrad: 1
        inputs: {x: {shape: [2]}}
        nodes:
          y: {op: sidefx, in: x}
        outputs: [y]
        """))
    with pytest.raises(GraphError, match="unknown op 'sidefx'"):
        flowgrad.load(str(graph), registry=make_registry(autoload=False))
    tagged = write(tmp_path, "tagged.yaml",
                   f"flowgrad: 1\nname: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(FlowgradError):
        flowgrad.load(str(tagged), registry=make_registry(autoload=False))
    asking = write(tmp_path, "asking.yaml", f"flowgrad: 1\nplugins: [{tmp_path / 'sidefx.py'}]\n")
    with pytest.raises(GraphError, match="unknown key 'plugins'"):
        flowgrad.load(str(asking), registry=make_registry(autoload=False))
    assert not marker.exists()


# -- the example plugins, with the authoring kit ----------------------------------------------

EXAMPLE_CASES = {
    "beta_swish": [Case([(4, 5), (5,)], id="beta-per-feature"),
                   Case([(2, 3, 4), (1,)], id="shared-beta"),
                   Case([(3, 4), positive((4,), 0.1, 3.0)], id="positive-beta")],
    "moments": [Case([(3, 4)], id="last-axis"),
                Case([(2, 3, 4)], {"axes": [1, 2]}, id="two-axes"),
                Case([(2, 3, 4)], {"axes": [1], "keepdims": True}, id="keepdims"),
                Case([(5, 3)], {"axes": [0]}, id="over-the-batch")],
    "rms_norm": [Case([(4, 6), (6,)], id="2d"),
                 Case([(2, 3, 5), (5,)], {"eps": 0.01}, id="3d-eps"),
                 Case([(3, 1), (1,)], id="one-feature")],
}


@pytest.fixture(scope="module")
def examples():
    return make_registry(paths=[str(PLUGINS)], autoload=False)


@pytest.mark.parametrize("op_type,case", [pytest.param(t, c, id=f"{t}-{c.id}")
                                          for t, cs in EXAMPLE_CASES.items() for c in cs])
def test_example_plugins_pass_the_authoring_kit(examples, op_type, case, fd_errors):
    worst = case.run(examples.get(op_type))
    fd_errors.append((worst, f"plugins/{op_type}-{case.id}"))


def test_moments_backward_copes_with_one_unused_output(examples):
    op = examples.get("moments")(axes=[1])
    x = np.random.default_rng(1).standard_normal((3, 4))
    ctx = flowgrad.Context()
    mean, var = op.forward(ctx, x)
    ctx.needs_input_grad = (True,)
    (gx,) = op.backward(ctx, None, np.ones_like(var))
    np.testing.assert_allclose(gx, 2 * (x - x.mean(axis=1, keepdims=True)) / 4)


def test_rms_norm_rejects_a_gain_of_the_wrong_length(examples):
    spec = flowgrad.Spec
    with pytest.raises(flowgrad.ShapeError, match="gain must have shape"):
        examples.get("rms_norm")().infer(spec((None, 6), np.float32), spec((5,), np.float32))
    with pytest.raises(Exception, match="eps must be >= 0"):
        examples.get("rms_norm")(eps=-1.0)
    with pytest.raises(flowgrad.ShapeError, match="x must have at least one axis"):
        examples.get("rms_norm")().infer(spec((), np.float32), spec((1,), np.float32))


# -- the kit itself catches each kind of mistake ----------------------------------------------

class _Scale(flowgrad.Op):
    """y = x * w; correct, so that the subclasses below can each break one thing."""

    type = "kit_scale"
    inputs = ("x", "w")
    attrs = {"k": flowgrad.Attr("float", 1.0)}

    def forward(self, ctx, x, w):
        ctx.save(x, w)
        return (x * w * self.k,)

    def backward(self, ctx, gy):
        x, w = ctx.saved
        return gy * w * self.k, gy * x * self.k


class _WrongSecondGrad(_Scale):
    def backward(self, ctx, gy):
        x, w = ctx.saved
        return gy * w * self.k, gy * x


class _InPlace(_Scale):
    def backward(self, ctx, gy):
        x, w = ctx.saved
        gx = gy * w
        gy *= self.k              # modifies the incoming gradient
        return gx * self.k, gy * x


class _Upcast(_Scale):
    def forward(self, ctx, x, w):
        ctx.save(x, w)
        return (x * w * np.float64(self.k),)


class _WrongInfer(_Scale):
    def infer(self, x, w):
        return (flowgrad.Spec(x.shape[:-1], x.dtype),)


class _LossyConfig(_Scale):
    def config(self):
        return {}


class _TwoOutputs(flowgrad.Op):
    type = "kit_two"
    outputs = ("a", "b")

    def forward(self, ctx, x):
        ctx.save(x)
        return x * 2, x * x

    def backward(self, ctx, ga, gb):
        (x,) = ctx.saved
        return (ga * 2 + gb * 2 * x,)   # breaks when either gradient is None


@pytest.mark.parametrize("op,check,message", [
    (_Scale(k=2.0), gradcheck, None),
    (_WrongSecondGrad(k=2.0), gradcheck, r"gradient of input 1 \(w\) is wrong"),
    (_InPlace(k=2.0), gradcheck, "modified an incoming gradient"),
    (_Upcast(k=2.0), check_dtypes, "output 0 is float64 for float32 inputs"),
    (_WrongInfer(), check_infer, r"infer says float64\[N\], forward gives shape \(3, 4\)"),
    (_LossyConfig(k=2.0), lambda op, inputs: check_config(op), "rebuilt from its config"),
    (_TwoOutputs(), gradcheck, "backward raised TypeError: .* \\(only output 0 'a' has a "
                               "gradient, the others get None\\)"),
])
def test_the_kit_catches_each_mistake(op, check, message):
    x = np.random.default_rng(0).standard_normal((3, 4))
    inputs = [x] if isinstance(op, _TwoOutputs) else [x, x + 2]
    if message is None:
        check(op, inputs)
    else:
        with pytest.raises(AssertionError, match=message):
            check(op, inputs)


def test_check_op_skips_gradients_of_forward_only_ops_but_checks_the_rest():
    class Sign(flowgrad.Op):
        type = "kit_sign"
        differentiable = False

        def forward(self, ctx, x):
            return (np.sign(x),)

    assert check_op(Sign(), [np.random.default_rng(0).standard_normal((2, 3))]) == 0.0


# -- forward-only plugin ops in a graph -------------------------------------------------------

QUANTIZE = textwrap.dedent('''\
    """A forward-only op: rounding has no useful gradient."""
    import numpy as np
    import flowgrad

    class Quantize(flowgrad.Op):
        type = "quantize"
        differentiable = False

        def forward(self, ctx, x):
            return (np.round(x * 2) / 2,)

    @flowgrad.hookimpl
    def flowgrad_register_ops(ops):
        ops.add(Quantize)
    ''')

FORWARD_ONLY_GRAPH = textwrap.dedent("""\
    flowgrad: 1
    seed: 3
    inputs: {{x: {{shape: [3]}}, t: {{shape: [2]}}}}
    params:
      W1: {{shape: [3, 4], init: {{kind: glorot_uniform}}, trainable: {w1_trainable}}}
      W2: {{shape: [4, 2], init: {{kind: glorot_uniform}}}}
    nodes:
      h:    {{op: dense, in: {{x: x, W: W1}}}}
      q:    {{op: quantize, in: h}}
      y:    {{op: dense, in: {{x: q, W: W2}}}}
      loss: {{op: mse, in: {{y: y, target: t}}}}
    outputs: [q, loss]
    """)


@pytest.mark.parametrize("w1_trainable", ["true", "false"])
def test_gradients_through_a_forward_only_plugin_op(tmp_path, w1_trainable):
    registry = make_registry(paths=[str(write(tmp_path, "quantize.py", QUANTIZE))],
                             autoload=False)
    path = write(tmp_path, "g.yaml", FORWARD_ONLY_GRAPH.format(w1_trainable=w1_trainable))
    net = flowgrad.compile(flowgrad.load(str(path), registry=registry))
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((5, 3)), "t": rng.standard_normal((5, 2))}
    out = net.forward(feeds)
    np.testing.assert_array_equal(out["q"] * 2, np.round(out["q"] * 2))
    if w1_trainable == "true":   # W1's gradient would have to cross q
        with pytest.raises(GraphError) as info:
            net.backward({"loss": 1.0})
        message = str(info.value)
        assert "'q' (quantize) is forward-only" in message
        assert f"{path}:9:" in message
    else:                        # nothing upstream of q needs a gradient: backward runs
        grads = net.backward({"loss": 1.0})
        assert set(grads) == {"W2"} and np.abs(grads["W2"]).sum() > 0


# -- the demo graph from Python and from the command line ---------------------------------------

def demo_feeds(n: int = 24, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 64)).astype(np.float32)
    return {"x": x, "label": x[:, :10].argmax(axis=1).astype(np.int64)}


def test_demo_graph_needs_the_plugins(examples):
    with pytest.raises(GraphError) as info:
        flowgrad.load(str(DEMO), registry=make_registry(autoload=False))
    message = str(info.value)
    for op in EXAMPLE_OPS:
        assert f"unknown op '{op}'" in message
    assert "3 errors" in message


def test_demo_graph_trains_through_every_plugin_op(examples):
    net = flowgrad.compile(flowgrad.load(str(DEMO), registry=examples))
    feeds = demo_feeds()
    out = net.forward(feeds)
    act = net.forward(feeds, outputs=["act"])["act"]
    np.testing.assert_allclose(out["stats.mean"], act.mean(axis=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["stats.var"], act.var(axis=1), rtol=1e-4, atol=1e-6)
    losses = []
    for _ in range(40):
        out, grads = net.forward_backward(feeds, {"loss": 1.0})
        losses.append(float(out["loss"]))
        assert set(grads) == {"W1", "b1", "gain", "beta", "W2", "b2"}
        for name, g in grads.items():
            assert g.dtype == np.float32 and np.abs(g).sum() > 0, name
            net.params[name] -= 0.2 * g
    assert losses[-1] < 0.7 * losses[0]


def test_cli_runs_the_demo_graph_with_plugins(tmp_path, examples):
    feeds = demo_feeds(6)
    args = []
    for name, value in feeds.items():
        np.save(tmp_path / f"{name}.npy", value)
        args += ["-i", f"{name}={tmp_path / f'{name}.npy'}"]
    out_file = tmp_path / "out.npz"
    proc = cli("--plugins", "plugins", "run", str(DEMO), *args, "-o", str(out_file))
    assert "stats.mean: float32[6]" in proc.stdout
    expected = flowgrad.compile(flowgrad.load(str(DEMO), registry=examples)).forward(feeds)
    with np.load(out_file) as saved:
        for key in ("logits", "stats.mean", "stats.var", "loss"):
            np.testing.assert_allclose(saved[key], expected[key], rtol=1e-5, atol=1e-6)
    via_env = cli("run", str(DEMO), *args, env={PATHS_ENV: str(PLUGINS)})
    assert via_env.stdout.splitlines()[:4] == proc.stdout.splitlines()[:4]


def test_cli_trains_the_demo_graph_on_digits(tmp_path):
    out = tmp_path / "run"
    proc = cli("--plugins", "plugins", "train", str(DEMO), "--epochs", "5", "--out", str(out),
               "--no-progress")
    assert "training plugins_demo on digits" in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.85, metrics


def test_cli_without_plugins_explains_the_unknown_ops():
    proc = cli("run", str(DEMO), check_rc=1)
    assert "plugins_demo.yaml:23:16: error: unknown op 'rms_norm'" in proc.stderr
    assert "--plugins PATH" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_ops_lists_each_op_with_its_plugin_and_file():
    proc = cli("--plugins", "plugins", "ops")
    lines = proc.stdout.splitlines()
    row = next(line for line in lines if line.startswith("moments "))
    assert row.split()[:5] == ["moments", "x", "mean,", "var", "moments"]
    assert "axes=[-1], keepdims=False" in row
    assert f"plugin 'rms_norm' [file: {PLUGINS / 'rms_norm.py'}] — 1 op" in lines
    assert any(line.startswith("built-in (flowgrad)") for line in lines)
    dense = next(line for line in lines if line.startswith("dense "))
    assert dense.split()[:5] == ["dense", "x,", "W,", "b?", "y"]
    assert any(line.startswith("argmax (forward-only)") for line in lines)


def test_cli_ops_details_filters_and_json():
    card = cli("--plugins", "plugins", "ops", "rms_norm").stdout
    assert "Scales each row (last axis) of x to unit root-mean-square" in card
    assert "eps        float  1e-06    added to the mean square" in card
    assert "class:    flowgrad_plugin_rms_norm.RMSNorm at plugins/rms_norm.py:" in card
    only = cli("--plugins", "plugins", "ops", "--plugin", "moments").stdout
    assert "moments" in only and "dense" not in only
    data = json.loads(cli("--plugins", "plugins", "ops", "--json", "beta_swish").stdout)
    assert data[0]["inputs"] == ["x", "beta"] and data[0]["plugin"] == "beta_swish"
    assert data[0]["plugin_origin"] == str(PLUGINS / "beta_swish.py")
    missing = cli("--plugins", "plugins", "ops", "rms_nrom", check_rc=1)
    assert "did you mean 'rms_norm'" in missing.stderr
    bad = cli("ops", "--plugin", "nope", check_rc=1)
    assert "no plugin named 'nope'" in bad.stderr


def test_cli_ops_piped_into_a_reader_that_stops_early_exits_quietly():
    env = {k: v for k, v in os.environ.items() if k not in (PATHS_ENV, NO_AUTOLOAD_ENV)}
    read_end, write_end = os.pipe()
    os.close(read_end)    # like `flowgrad ops | head -1` once head has exited: writes fail
    try:
        proc = subprocess.run([sys.executable, "-m", "flowgrad", "ops"], cwd=ROOT, env=env,
                              stdout=write_end, stderr=subprocess.PIPE, timeout=120)
    finally:
        os.close(write_end)
    assert proc.returncode == 0, proc.stderr
    assert b"Traceback" not in proc.stderr and b"BrokenPipe" not in proc.stderr, proc.stderr


def test_cli_plugins_lists_where_each_came_from():
    proc = cli("--plugins", "plugins", "plugins")
    assert "installed packages: on" in proc.stdout
    assert "--plugins: plugins" in proc.stdout
    row = next(line for line in proc.stdout.splitlines() if line.startswith("beta_swish "))
    assert row.split() == ["beta_swish", "file", str(PLUGINS / "beta_swish.py")]
    assert "  beta_swish: op beta_swish" in proc.stdout.splitlines()
    builtin = next(line for line in proc.stdout.splitlines() if line.startswith("  flowgrad: "))
    assert "optimizers sgd, adam, adamw, rmsprop" in builtin and "data loaders digits" in builtin
    off = cli("--no-autoload", "plugins").stdout
    assert "installed packages: off (--no-autoload)" in off
    env_off = cli("plugins", env={NO_AUTOLOAD_ENV: "1"}).stdout
    assert f"installed packages: off ({NO_AUTOLOAD_ENV} is set)" in env_off


def test_cli_reports_broken_and_conflicting_plugins_without_traceback(tmp_path):
    broken = write(tmp_path / "b", "broken.py", "import numpy\nraise ValueError('bad value')\n")
    proc = cli("--plugins", str(broken), "ops", check_rc=1)
    assert f"plugin file '{broken}' failed to import: ValueError: bad value (at {broken}:2)" \
        in proc.stderr
    assert "Traceback" not in proc.stderr
    write(tmp_path / "c", "rmsnorm_copy.py", (PLUGINS / "rms_norm.py").read_text())
    clash = cli("--plugins", "plugins", "--plugins", str(tmp_path / "c"), "ops", check_rc=1)
    assert "op 'rms_norm' is registered by more than one plugin: 'rms_norm' (" in clash.stderr
    assert "'rmsnorm_copy' (" in clash.stderr and "Traceback" not in clash.stderr


# -- the installable example package, through its entry point -----------------------------------

@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The example package pip-installed into a temporary folder (no network, no isolation)."""
    work = tmp_path_factory.mktemp("pkg")
    source = work / "src"
    shutil.copytree(PACKAGE, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    target = work / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--no-index", "--target", str(target), str(source)],
                   check=True, capture_output=True, timeout=300)
    return target


def test_installed_package_is_found_through_the_entry_point(installed):
    env = {"PYTHONPATH": str(installed)}
    plugins = json.loads(cli("--plugins", "plugins", "plugins", "--json", env=env).stdout)
    by_name = {p["name"]: p for p in plugins}
    snake = by_name["snake"]
    assert snake["kind"] == "entry point"
    assert snake["contributes"] == {
        "op": ["snake"], "onnx_import": ["org.example.snake::Snake-1"], "onnx_export": ["snake"],
        "optimizer": ["sign_sgd"], "objective": ["energy"], "data_loader": ["sine_waves"]}
    assert snake["origin"] == ("flowgrad-example-package 0.1.0, entry point snake = "
                               "flowgrad_example")
    assert EXAMPLE_OPS <= {op for p in plugins for op in p["contributes"].get("op", ())}
    card = cli("ops", "snake", env=env).stdout
    assert "plugin 'snake' [entry point: flowgrad-example-package 0.1.0" in card


SNAKE_NET = textwrap.dedent("""\
    flowgrad: 1
    seed: 0
    inputs: {x: {shape: [16]}, label: {shape: [], dtype: int64}}
    params:
      W: {shape: [16, 4], init: {kind: glorot_uniform}}
      alpha: {shape: [16], init: {kind: constant, value: 1.0}}
    nodes:
      h: {op: snake, in: {x: x, alpha: alpha}}
      logits: {op: dense, in: {x: h, W: W}}
      loss: {op: softmax_cross_entropy, in: {logits: logits, labels: label}}
    outputs: [logits]
    train: {minimize: {loss: 1.0}, optimizer: {kind: sign_sgd, lr: 0.01}, epochs: 2,
            batch_size: 32}
    """)


def test_every_kind_the_installed_package_adds_is_used_where_builtins_are(installed, tmp_path,
                                                                          monkeypatch):
    """Op, ONNX import and export, optimizer, objective and data loader of one package, each
    found through its entry point and each working where a built-in of its kind would."""
    monkeypatch.syspath_prepend(str(installed))
    registry = make_registry(autoload=True)
    assert {registry.provider(table, key).name for table, key in [
        ("op", "snake"), ("onnx_export", "snake"), ("optimizer", "sign_sgd"),
        ("objective", "energy"), ("data_loader", "sine_waves"),
        ("onnx_import", ("org.example.snake", "Snake", 1))]} == {"snake"}
    (tmp_path / "snake.yaml").write_text(SNAKE_NET)
    graph = flowgrad.load(str(tmp_path / "snake.yaml"), registry=registry)
    data = flowgrad.load_data("sine_waves", registry=registry)
    trainer = flowgrad.Trainer(flowgrad.compile(graph), registry=registry)
    history = trainer.fit(data)
    assert history.rows[-1]["loss"] < history.rows[0]["loss"]
    model = flowgrad.save_onnx(trainer.plan.export_graph(), str(tmp_path / "snake.onnx"),
                               registry=registry)
    assert {(o.domain, o.version) for o in model.opset_import} >= {("org.example.snake", 1)}
    assert [n.op_type for n in model.graph.node][:1] == ["Snake"]
    back = flowgrad.compile(flowgrad.load(str(tmp_path / "snake.onnx"), registry=registry))
    x = data.x[:5]
    np.testing.assert_allclose(back.forward({"x": x})["logits"],
                               trainer.plan.forward({"x": x}, outputs=["logits"])["logits"],
                               rtol=1e-6)
    from flowgrad.visualize import visualize
    shown = visualize(trainer.plan, ["energy(h)"], steps=3, registry=registry)
    assert shown.images.shape[0] == 1


CLASHES = {
    "op": ("flowgrad_register_ops(ops)", "ops.add(type('R', (flowgrad.Op,), {'type': 'relu'}))",
           "op 'relu'"),
    "onnx_import": ("flowgrad_register_onnx(onnx)",
                    "T = Translations('mine')\n    T.imports('Relu')(lambda b, a, ins: None)\n"
                    "    onnx.add(T)", "ONNX import of ai.onnx::Relu (since opset 1)"),
    "optimizer": ("flowgrad_register_optimizers(optimizers)",
                  "optimizers.add(type('S', (Optimizer,), {'kind': 'sgd'}))", "optimizer 'sgd'"),
    "objective": ("flowgrad_register_objectives(objectives)", "objectives.add('channel', len)",
                  "objective 'channel'"),
    "data_loader": ("flowgrad_register_data_loaders(data_loaders)",
                    "data_loaders.add('digits', len)", "data loader 'digits'"),
}


@pytest.mark.parametrize("table", sorted(CLASHES))
def test_an_installed_package_clashing_with_a_builtin_names_both(table, tmp_path, monkeypatch):
    hook, body, what = CLASHES[table]
    site = tmp_path / "site"
    dist = site / "clashing_thing-2.0.dist-info"
    write(dist, "METADATA", "Metadata-Version: 2.1\nName: clashing-thing\nVersion: 2.0\n")
    write(dist, "entry_points.txt", f"[flowgrad]\nclash_{table} = clash_{table}\n")
    write(site, f"clash_{table}.py", "import flowgrad\nfrom flowgrad.onnx import Translations\n"
          "from flowgrad.optim import Optimizer\n\n"
          f"@flowgrad.hookimpl\ndef {hook}:\n    {body}\n")
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(PluginError) as info:
        make_registry(autoload=True).table(table)
    assert (f"{what} is registered by more than one plugin: 'flowgrad' (flowgrad) and "
            f"'clash_{table}' (clashing-thing 2.0, entry point clash_{table} = clash_{table})"
            ) in str(info.value)


def test_autoload_switches_hide_the_installed_package(installed):
    env = {"PYTHONPATH": str(installed)}
    for args, extra in [(["--no-autoload"], {}), ([], {NO_AUTOLOAD_ENV: "1"})]:
        names = [p["name"] for p in json.loads(
            cli(*args, "plugins", "--json", env={**env, **extra}).stdout)]
        assert names == ["flowgrad"]
    missing = cli("--no-autoload", "ops", "snake", env=env, check_rc=1)
    assert "unknown op 'snake'" in missing.stderr


def test_the_package_authors_own_tests_pass_with_the_kit(installed):
    # -n 0: the package's tests sit under this repository, whose addopts ask for two workers
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-n", "0", str(PACKAGE / "tests")], cwd=installed,
                          env={**os.environ, "PYTHONPATH": str(installed)},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "4 passed" in proc.stdout


def test_an_installed_plugin_that_fails_to_import_is_named(tmp_path):
    site = tmp_path / "site"
    dist = site / "broken_flowgrad_thing-1.2.dist-info"
    write(dist, "METADATA", "Metadata-Version: 2.1\nName: broken-flowgrad-thing\nVersion: 1.2\n")
    write(dist, "entry_points.txt", "[flowgrad]\nthing = broken_thing_module\n")
    write(site, "broken_thing_module.py", "raise ImportError('needs libfoo')\n")
    env = {"PYTHONPATH": str(site)}
    proc = cli("ops", env=env, check_rc=1)
    assert ("installed plugin 'thing' (package broken-flowgrad-thing 1.2, entry point "
            "broken_thing_module) failed to import: ImportError: needs libfoo") in proc.stderr
    assert "--no-autoload" in proc.stderr and "Traceback" not in proc.stderr
    cli("--no-autoload", "ops", env=env)


# -- the "write your first plugin" page works as written ----------------------------------------

def docs_files() -> dict[str, str]:
    """The code blocks of docs/plugins.md preceded by ``<!-- file: PATH -->``."""
    text = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    return {m.group(1): m.group(2) for m in re.finditer(
        r"<!-- file: (\S+) -->\n```\w*\n(.*?)```", text, re.DOTALL)}


def test_the_first_plugin_page_works_as_written(tmp_path):
    files = docs_files()
    assert set(files) == {"my_plugins/soft_clip.py", "test_soft_clip.py", "clipped.yaml"}
    assert len(files["my_plugins/soft_clip.py"].strip().splitlines()) <= 32
    for name, text in files.items():
        write(tmp_path / pathlib.Path(name).parent, pathlib.Path(name).name, text)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "test_soft_clip.py"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout + proc.stderr
    shown = cli("--plugins", "my_plugins", "show", "clipped.yaml", cwd=tmp_path).stdout
    assert "soft_clip" in shown
    unknown = cli("show", "clipped.yaml", cwd=tmp_path, check_rc=1).stderr
    assert "clipped.yaml:9:11: error: unknown op 'soft_clip'" in unknown
    registry = make_registry(paths=[str(tmp_path / "my_plugins")], autoload=False)
    net = flowgrad.compile(flowgrad.load(str(tmp_path / "clipped.yaml"), registry=registry))
    y = net.forward({"x": np.random.default_rng(0).standard_normal((5, 3)) * 10})["y"]
    assert y.shape == (5, 2) and np.all(np.abs(y) <= 0.5)
