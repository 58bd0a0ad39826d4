"""Concurrency really overlaps requests: marginal rows/s close to concurrency / latency."""

from __future__ import annotations

import re

from axolotl_ual.elicit.fake_server import FakeOpenAIServer

from .support import chat_rows, read_jsonl, run_cli_subprocess, write_jsonl

LATENCY = 0.25
CONCURRENCY = 16


def run_phase_seconds(tmp_path, server, rows: int) -> float:
    """The command's own timer, first request to last answer: interpreter start-up and imports,
    which vary a lot on a busy machine, are not in it."""
    folder = tmp_path / f"run{rows}"
    folder.mkdir()
    write_jsonl(folder / "data.jsonl", chat_rows(rows))
    result = run_cli_subprocess(
        f"elicit data.jsonl -o out.jsonl --base-url {server.base_url} --model judge "
        f"--concurrency {CONCURRENCY} --no-progress",
        cwd=folder,
    )
    assert result.returncode == 0, result.stderr
    assert len(read_jsonl(folder / "out.jsonl")) == rows
    return float(re.search(r"time +([\d.]+) s", result.stdout).group(1))


def test_marginal_throughput_is_close_to_ideal(tmp_path):
    ideal = CONCURRENCY / LATENCY  # 64 rows/s
    n = 8 * CONCURRENCY
    with FakeOpenAIServer(latency=LATENCY, lifetime=60) as server:
        short = run_phase_seconds(tmp_path, server, n)
        long = run_phase_seconds(tmp_path, server, 2 * n)
    marginal = n / (long - short)  # connection set-up and the last wave's tail cancel out
    assert marginal >= 0.75 * ideal, f"{marginal:.1f} rows/s, ideal {ideal:.0f}"
