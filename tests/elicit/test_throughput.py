"""Concurrency really overlaps requests (the figures live in benchmarks/elicit_throughput.py).

Counted, not timed: the server records how many requests it was answering at the same time.
"""

from __future__ import annotations

import pytest

from axolotl_ual.elicit.fake_server import FakeOpenAIServer

from .support import chat_rows, read_jsonl, run_cli_subprocess, write_jsonl


@pytest.mark.parametrize("concurrency", [1, 16])
def test_requests_overlap_up_to_the_concurrency(tmp_path, concurrency):
    rows = 4 * concurrency
    write_jsonl(tmp_path / "data.jsonl", chat_rows(rows))
    # long enough that every worker has a request out before the first answer comes back
    with FakeOpenAIServer(latency=0.5, lifetime=60) as server:
        result = run_cli_subprocess(
            f"elicit data.jsonl -o out.jsonl --base-url {server.base_url} --model judge "
            f"--concurrency {concurrency} --no-progress",
            cwd=tmp_path,
        )
    assert result.returncode == 0, result.stderr
    assert len(read_jsonl(tmp_path / "out.jsonl")) == rows
    assert len(server.requests) == rows
    assert server.peak_in_flight == concurrency  # never more, and really that many at once
