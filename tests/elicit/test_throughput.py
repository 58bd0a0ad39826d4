"""Concurrency really overlaps requests: marginal rows/s close to concurrency / latency."""

from __future__ import annotations

import time

from axolotl_ual.elicit.fake_server import FakeOpenAIServer

from .support import chat_rows, read_jsonl, run_cli_subprocess, write_jsonl

LATENCY = 0.25
CONCURRENCY = 16


def timed_run(tmp_path, server, rows: int) -> float:
    folder = tmp_path / f"run{rows}"
    folder.mkdir()
    write_jsonl(folder / "data.jsonl", chat_rows(rows))
    started = time.perf_counter()
    result = run_cli_subprocess(
        f"elicit data.jsonl -o out.jsonl --base-url {server.base_url} --model judge --concurrency {CONCURRENCY} --no-progress",
        cwd=folder,
    )
    elapsed = time.perf_counter() - started
    assert result.returncode == 0, result.stderr
    assert len(read_jsonl(folder / "out.jsonl")) == rows
    return elapsed


def test_marginal_throughput_is_close_to_ideal(tmp_path):
    ideal = CONCURRENCY / LATENCY  # 64 rows/s
    n = 6 * CONCURRENCY
    with FakeOpenAIServer(latency=LATENCY, lifetime=60) as server:
        short = timed_run(tmp_path, server, n)
        long = timed_run(tmp_path, server, 2 * n)
    marginal = n / (long - short)  # start-up cost cancels out
    assert marginal >= 0.75 * ideal, f"{marginal:.1f} rows/s, ideal {ideal:.0f}"
