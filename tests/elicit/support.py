"""Test helpers: a scripted loopback judge, dataset builders, CLI runners.

Rows are numbered in their text ("Q7: ..."), and the scripted judge finds that number in each
request, so every row's expected score is known exactly and faults can target given rows.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from axolotl_ual.elicit.fake_server import Reply, Request
from axolotl_ual.toolkit import REPO, judge_client_env, read_jsonl, write_jsonl

__all__ = ["REPO", "read_jsonl", "write_jsonl"]

ROW_ID = re.compile(r"\bQ(\d+):")

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def row_id(text: str) -> int:
    match = ROW_ID.search(text)
    assert match, f"no row id in the judge prompt: {text[:200]!r}"
    return int(match.group(1))


def expected_score(i: int) -> int:
    """The 1-10 score the scripted judge gives row i when it answers normally."""
    return 1 + (i * 7) % 10


def expected_u(i: int) -> float:
    return (expected_score(i) - 1) / 9


def chat_rows(n: int, start: int = 0) -> list[dict]:
    return [
        {
            "id": i,
            "messages": [
                {"role": "user", "content": f"Q{i}: what is {i} + {i}?"},
                {"role": "assistant", "content": f"{i} + {i} = {2 * i}."},
            ],
            "source": "synthetic",
        }
        for i in range(start, start + n)
    ]


def alpaca_rows(n: int) -> list[dict]:
    return [
        {
            "instruction": f"Q{i}: name a colour",
            "input": "" if i % 2 else f"context {i}",
            "output": f"colour {i}",
            "id": i,
        }
        for i in range(n)
    ]


class ScriptedJudge:
    """A server policy: the k-th request (from 0) about row i gets `script(i, k, request)`;
    a script returning None gets the normal answer (`expected_score(i)` for every choice)."""

    def __init__(self, script: Callable[[int, int, Request], Reply | None] | None = None):
        self.script = script or (lambda i, k, request: None)
        self.counts: Counter[int] = Counter()
        self.times: dict[int, list[float]] = {}
        self._lock = threading.Lock()

    def __call__(self, request: Request) -> Reply:
        i = row_id(request.prompt)
        with self._lock:
            k = self.counts[i]
            self.counts[i] += 1
            self.times.setdefault(i, []).append(request.time)
        reply = self.script(i, k, request)
        return reply if reply is not None else Reply([str(expected_score(i))] * request.n)


def cli_command(command: str, module: str = "axolotl_ual.elicit") -> list[str]:
    """`python -m axolotl_ual.elicit` (or another `module`) with the arguments of a shell-like
    command string."""
    return [sys.executable, "-m", module, *shlex.split(command)]


def run_cli_subprocess(
    command: str,
    *,
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 60,
    module: str = "axolotl_ual.elicit",
):
    return subprocess.run(
        cli_command(command, module),
        cwd=cwd,
        env=env or judge_client_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def elicit_in_subprocess(tmp_path: Path, server, n_rows: int, options: str = "", *, key=None):
    """Write `n_rows` chat rows to data.jsonl and score them into out.jsonl through `server` with
    the CLI in a subprocess (the API key, if any, in its environment)."""
    write_jsonl(tmp_path / "data.jsonl", chat_rows(n_rows))
    env = judge_client_env(**({"OPENAI_API_KEY": key} if key else {}))
    return run_cli_subprocess(
        f"elicit data.jsonl -o out.jsonl --base-url {server.base_url} --model judge {options}",
        cwd=tmp_path,
        env=env,
        timeout=60,
    )
