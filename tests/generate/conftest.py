"""Fixtures: a loopback teacher server (elicit's `judge_server`), the CLI run in this process."""

from __future__ import annotations

import shlex

import pytest

from axolotl_ual.cli import main
from tests.elicit.conftest import judge_server as teacher_server

__all__ = ["run_cli", "teacher_server"]


@pytest.fixture
def run_cli(capsys, monkeypatch):
    """Run an `axolotl-ual` command line in this process (in the folder `cwd`, if given);
    returns (exit code, stdout, stderr)."""

    def run(text: str, cwd=None) -> tuple[int, str, str]:
        if cwd is not None:
            monkeypatch.chdir(cwd)
        code = main(shlex.split(text))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run
