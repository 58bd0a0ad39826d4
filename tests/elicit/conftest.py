"""Fixtures: loopback judge servers and an in-process CLI runner (the tiny local model is the
session fixture `tiny_model` of tests/conftest.py)."""

from __future__ import annotations

import os
import shlex

import pytest

from axolotl_ual.elicit.cli import main as elicit_main
from axolotl_ual.elicit.fake_server import FakeOpenAIServer

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def judge_server():
    """Start a loopback server with a policy: `server = judge_server(ScriptedJudge(...))`."""
    servers = []

    def start(policy=None, **kwargs) -> FakeOpenAIServer:
        server = FakeOpenAIServer(policy, lifetime=kwargs.pop("lifetime", 120.0), **kwargs).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def run_elicit(capsys):
    """Run a command line (`"elicit data.jsonl -o out.jsonl ..."`) in this process; returns
    (exit code, stdout, stderr)."""

    def run(command: str) -> tuple[int, str, str]:
        code = elicit_main(shlex.split(command))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run
