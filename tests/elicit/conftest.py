"""Fixtures: loopback judge servers, an in-process CLI runner, a tiny local judge model."""

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


@pytest.fixture(scope="session")
def judge_model(tmp_path_factory):
    """A tiny random Llama + tokenizer, built locally in seconds (no fitting: the entropy and
    logprob checks compare against independent forward passes, whatever the weights)."""
    from axolotl_ual.tiny_model import build_tiny_model, corpus_from_jsonl

    from .support import REPO

    corpus = corpus_from_jsonl(REPO / "axolotl_ual" / "data" / "sample_chat.jsonl")
    return build_tiny_model(tmp_path_factory.mktemp("elicit-judge-model"), corpus)
