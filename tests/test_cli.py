"""The CLI as a user runs it: real files, exit codes and messages.  The commands are called
in-process through :func:`flowgrad.cli.main` (fast); ``test_the_installed_command_*`` run the
real ``python -m flowgrad`` in a subprocess."""
from __future__ import annotations

import contextlib
import io
import subprocess
import sys

import numpy as np
import pytest

from flowgrad.cli import main

from .conftest import GRAPHS


def flowgrad(*args):
    """``flowgrad ARGS`` in-process; ``returncode``, ``stdout`` and ``stderr`` as from
    subprocess.run."""
    out, err = io.StringIO(), io.StringIO()
    argv = list(map(str, args))
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:           # --help, and argparse's usage errors
            code = e.code
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def subprocess_flowgrad(*args):
    return subprocess.run([sys.executable, "-m", "flowgrad", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_run_writes_outputs(tmp_path):
    x = tmp_path / "x.npy"
    np.save(x, np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32))
    out = tmp_path / "out.npz"
    result = flowgrad("run", GRAPHS / "xor.yaml", "--input", f"x={x}", "--out", out)
    assert result.returncode == 0, result.stderr
    assert "y: float32[4, 1]" in result.stdout
    assert np.load(out)["y"].ravel().tolist() == [0, 1, 1, 0]


def test_run_with_a_bad_input_shape_is_a_clean_error(tmp_path):
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((4, 3)))
    result = flowgrad("run", GRAPHS / "xor.yaml", "--input", f"x={x}")
    assert result.returncode == 1
    assert "input 'x' expects shape (N, 2)" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_names_an_unknown_input_before_a_missing_one(tmp_path):
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((4, 2), np.float32))
    result = flowgrad("run", GRAPHS / "xor.yaml", "--input", f"xx={x}")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "the graph has no input 'xx'; did you mean 'x'?" in result.stderr


def test_run_reports_missing_inputs_and_files(tmp_path):
    result = flowgrad("run", GRAPHS / "xor.yaml")
    assert result.returncode == 1 and "missing --input for x" in result.stderr
    result = flowgrad("run", GRAPHS / "xor.yaml", "--input", f"x={tmp_path / 'nope.npy'}")
    assert result.returncode == 1 and "does not exist" in result.stderr


def test_check_lists_nodes_and_passes_the_gradient_check():
    result = flowgrad("check", GRAPHS / "branch_merge.yaml")
    assert result.returncode == 0, result.stderr
    assert "h#branch" in result.stdout and "branch" in result.stdout
    assert "3 branches, 1 merge (valid)" in result.stdout
    assert "float32[N, 14]" in result.stdout  # the concat's output shape
    assert "gradient check passed" in result.stdout


def test_check_of_a_broken_file_prints_located_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((GRAPHS / "xor.yaml").read_text().replace("in: z1}", "in: z11}"))
    result = flowgrad("check", bad)
    assert result.returncode == 1
    assert f"{bad}:17:22:" in result.stderr and "did you mean 'z1'" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_validates_the_train_section(tmp_path):
    result = flowgrad("check", GRAPHS / "lenet.yaml", "--no-gradients")
    assert result.returncode == 0 and "(valid, train: section too)" in result.stdout
    bad = tmp_path / "lenet.yaml"
    bad.write_text((GRAPHS / "lenet.yaml").read_text().replace("batch_size: 64",
                                                               "batch_sise: 64"))
    result = flowgrad("check", bad, "--no-gradients")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{bad}:" in result.stderr and "did you mean 'batch_size'" in result.stderr


@pytest.mark.parametrize("fmt,marker", [("text", "h#branch"), ("dot", "shape=diamond"),
                                        ("mermaid", "flowchart TD")])
def test_show_draws_branch_and_merge_nodes(fmt, marker):
    result = flowgrad("show", GRAPHS / "branch_merge.yaml", "--format", fmt)
    assert result.returncode == 0, result.stderr
    assert marker in result.stdout
    assert "concat" in result.stdout


def test_unknown_graph_extension():
    result = flowgrad("show", "model.txt")
    assert result.returncode == 1 and "cannot tell the format" in result.stderr


def test_help_lists_commands():
    result = flowgrad("--help")
    assert result.returncode == 0
    for command in ("run", "check", "show"):
        assert command in result.stdout


def test_the_installed_command_runs_a_graph_and_reports_errors(tmp_path):
    x = tmp_path / "x.npy"
    np.save(x, np.array([[0, 1], [1, 1]], dtype=np.float32))
    result = subprocess_flowgrad("run", GRAPHS / "xor.yaml", "--input", f"x={x}")
    assert result.returncode == 0, result.stderr
    assert "y: float32[2, 1]" in result.stdout
    result = subprocess_flowgrad("show", "model.txt")
    assert result.returncode == 1 and "cannot tell the format" in result.stderr
    result = subprocess_flowgrad("--version")
    assert result.returncode == 0 and result.stdout.startswith("flowgrad ")
