"""The CLI's error contract: 0 success, 1 a user's mistake, 2 a misused command line, 3 an
internal error (a short paragraph, the traceback only with --debug or FLOWGRAD_DEBUG=1)."""
from __future__ import annotations

import pathlib

import pytest

from flowgrad import cli
from flowgrad.cli import check as check_command

ROOT = pathlib.Path(__file__).resolve().parent.parent
XOR = str(ROOT / "graphs" / "xor.yaml")


@pytest.fixture
def broken_check(monkeypatch):
    """``flowgrad check`` with a bug planted in it."""
    def run(args, registry):
        return {}["no such key"]
    monkeypatch.setattr(check_command, "run", run)
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)


def test_a_bug_is_one_paragraph_and_exit_3(broken_check, capsys):
    assert cli.main(["check", XOR]) == 3
    err = capsys.readouterr().err
    assert err.startswith(f"flowgrad: internal error while running `flowgrad check {XOR}`:\n"
                          "    KeyError: 'no such key' (at ")
    assert "--debug" in err and "FLOWGRAD_DEBUG=1" in err and "Traceback" not in err
    assert "not a mistake in your input" in err


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback(broken_check, monkeypatch, how):
    if how == "env":
        monkeypatch.setenv(cli.DEBUG_ENV, "1")
    with pytest.raises(KeyError, match="no such key"):
        cli.main((["--debug"] if how == "flag" else []) + ["check", XOR])


def test_a_users_mistake_is_exit_1_and_usage_is_exit_2(tmp_path, capsys):
    assert cli.main(["check", str(tmp_path / "missing.yaml")]) == 1
    assert "Traceback" not in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        cli.main(["check", "--no-such-flag", XOR])
    assert usage.value.code == 2
    assert cli.main(["check", XOR]) == 0
