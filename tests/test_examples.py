"""The scripts in examples/ run as a user runs them, from any working directory."""
from __future__ import annotations

import subprocess
import sys

from .conftest import ROOT


def run_example(name, cwd):
    result = subprocess.run([sys.executable, str(ROOT / "examples" / name)], cwd=cwd,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_backprop_by_hand(tmp_path):
    out = run_example("backprop_by_hand.py", tmp_path)
    assert "o = [-4.  8.  4.]" in out and "cross-entropy for label 2 = 4.018" in out
    assert "(W1[2,2], 1-based, is -6)" in out
    assert out.rstrip().endswith("class 2")


def test_onnx_finetune_imports_trains_and_exports(tmp_path):
    out = run_example("onnx_finetune.py", tmp_path)
    assert "onnx.checker passed" in out
    assert "flowgrad on the re-imported export: max |diff| 0.0" in out
