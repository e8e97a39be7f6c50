"""The command as installed: from a wheel in an empty folder, and how fast it starts.  These
are the real-subprocess tests; the rest of the CLI suite calls :func:`flowgrad.cli.main`
in-process."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

from .conftest import ROOT

HEAVY = ("networkx", "numba", "onnx", "matplotlib")


def python(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env=env)


def test_import_flowgrad_loads_no_heavy_library():
    code = ("import sys, flowgrad; print(sorted(m for m in sys.modules "
            f"if m.split('.')[0] in {HEAVY!r})); print(len(dir(flowgrad)))")
    result = python("-c", code)
    assert result.returncode == 0, result.stderr
    loaded, names = result.stdout.splitlines()
    assert loaded == "[]"
    import flowgrad
    assert int(names) >= len(flowgrad.__all__)
    assert set(flowgrad.__all__) <= set(dir(flowgrad))
    assert all(getattr(flowgrad, name) is not None for name in flowgrad.__all__)
    assert callable(flowgrad.train) and callable(flowgrad.visualize)   # not the modules


def test_version_answers_before_any_command_is_imported():
    code = ("import sys; from flowgrad import cli\ntry: cli.main(['--version'])\n"
            "except SystemExit: pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('flowgrad.cli.') "
            "or m.split('.')[0] in ('numpy',) + " + repr(HEAVY) + "))")
    result = python("-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["flowgrad 0.1.0", "[]"]


def test_ops_loads_only_the_registry():
    code = ("import sys, contextlib, io; from flowgrad import cli\n"
            "with contextlib.redirect_stdout(io.StringIO()): cli.main(['ops'])\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))")
    result = python("-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_demo_runs_from_a_wheel_in_an_empty_folder(tmp_path):
    source = tmp_path / "src"
    shutil.copytree(ROOT / "flowgrad", source / "flowgrad",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.nbi", "*.nbc"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    built = python("-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                   str(tmp_path / "dist"), str(source))
    assert built.returncode == 0, built.stderr
    wheel, = (tmp_path / "dist").glob("flowgrad-*.whl")
    target = tmp_path / "site"
    installed = python("-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                       str(wheel))
    assert installed.returncode == 0, installed.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target), "MPLBACKEND": "Agg"}
    result = python("-m", "flowgrad", "demo", "--out", "D", "--epochs", "1", "--steps", "2",
                    "--no-progress", cwd=empty, env=env)
    assert result.returncode == 0, result.stderr
    assert str(target) in python("-c", "import flowgrad; print(flowgrad.__file__)",
                                 cwd=empty, env=env).stdout
    assert (empty / "D" / "checkpoint.npz").is_file() and (empty / "D" / "logits.png").is_file()
    assert "predictions agree: True" in result.stdout
