"""The CLI as a subprocess: SIGKILL mid-run then resume; the API key never reaches the disk."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import threading
import time

import pytest

from axolotl_ual import rows as rowlib
from axolotl_ual.elicit.fake_server import Reply

from .support import (
    ScriptedJudge,
    chat_rows,
    cli_command,
    elicit_in_subprocess,
    expected_u,
    judge_client_env,
    read_jsonl,
    run_cli_subprocess,
    write_jsonl,
)

ROWS = 80


def gated(fast_rows: int, policy):
    """`policy`, but rows from `fast_rows` on take 5 s until `.open()` is called: a run cannot
    finish before the test has interrupted it, however slowly this machine runs the test."""
    gate = threading.Event()

    def script(i: int, k: int, request) -> Reply | None:
        reply = policy(i, k, request)
        if i >= fast_rows and not gate.is_set():
            reply.delay = 5.0
        return reply

    script.open = gate.set
    return script


def slow_and_flaky(i: int, k: int, request) -> Reply | None:
    if k == 0 and i % 9 == 4:
        return Reply(status=500, delay=0.05)
    return Reply([f"{(i * 7) % 10 + 1}"], delay=0.15)


def cache_keys(path) -> set[str]:
    """Sample keys of the complete records in a cache file (a torn last line is skipped)."""
    keys = set()
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.endswith("}"):
                keys.add(line.split('"sample_key": "', 1)[1].split('"', 1)[0])
    return keys


def test_sigkill_then_resume_sends_no_scored_row_again(tmp_path, judge_server):
    script = gated(30, slow_and_flaky)
    judge = ScriptedJudge(script)
    server = judge_server(judge)
    rows = chat_rows(ROWS)
    write_jsonl(tmp_path / "data.jsonl", rows)
    key_of = {rowlib.sample_key(row, ("messages",)): row["id"] for row in rows}
    cache = tmp_path / "scored.jsonl.cache.jsonl"
    command = (
        f"elicit data.jsonl --output scored.jsonl --backend openai --base-url {server.base_url} "
        "--model judge --method verbalized --samples 1 --concurrency 4 --backoff-base 0.05"
    )

    process = subprocess.Popen(
        cli_command(command),
        cwd=tmp_path,
        env=judge_client_env(OPENAI_API_KEY="sk-x"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while len(cache_keys(cache)) < 20 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL
    time.sleep(0.3)  # let the server finish reading requests sent just before the kill
    scored_before_kill = {key_of[key] for key in cache_keys(cache)}
    assert 20 <= len(scored_before_kill) < ROWS  # killed mid-run, with work done
    assert not (tmp_path / "scored.jsonl").exists()  # the output is only ever written whole
    counts_at_kill = dict(judge.counts)
    # at most the requests in flight (--concurrency 4) were answered but not recorded
    answered = {i for i, n in counts_at_kill.items() if n >= (2 if i % 9 == 4 else 1)}
    assert len(answered - scored_before_kill) <= 4

    script.open()
    result = run_cli_subprocess(command, cwd=tmp_path, env=judge_client_env(OPENAI_API_KEY="sk-x"))
    assert result.returncode == 0, result.stderr
    assert f"{len(scored_before_kill)} already in" in result.stderr
    # no row scored before the kill was requested again
    for i in scored_before_kill:
        assert judge.counts[i] == counts_at_kill[i], f"row {i} was requested again"
    # every other row was requested in the second run, and only as often as its faults need
    for i in set(range(ROWS)) - scored_before_kill:
        new_requests = judge.counts[i] - counts_at_kill.get(i, 0)
        first_try_in_run_2 = counts_at_kill.get(i, 0) == 0
        assert new_requests == (2 if first_try_in_run_2 and i % 9 == 4 else 1)
    # the final output is complete and correct
    scored = read_jsonl(tmp_path / "scored.jsonl")
    assert [row["id"] for row in scored] == list(range(ROWS))
    assert [row["uncertainty"] for row in scored] == pytest.approx(
        [expected_u(i) for i in range(ROWS)]
    )
    assert len(cache_keys(cache)) == ROWS


def test_the_api_key_is_never_written(tmp_path, judge_server, run_elicit, monkeypatch):
    secret = "sk-test-" + os.urandom(12).hex()

    def script(i, k, request):
        assert request.authorization == f"Bearer {secret}"  # the key is really used...
        if i == 1:  # ...and a server that echoes it back in an error does not get it logged
            return Reply(status=400, error=f"bad request from {request.authorization}")
        if i == 2 and k == 0:
            return Reply(
                status=429, headers={"Retry-After": "0"}, error=f"slow down {request.authorization}"
            )
        if i == 3:
            return Reply(status=503, error=f"overloaded, key {request.authorization}")
        return None

    judge = ScriptedJudge(script)
    server = judge_server(judge)
    write_jsonl(tmp_path / "data.jsonl", chat_rows(8))
    command = (
        f"elicit data.jsonl -o scored.jsonl --sidecar side.jsonl --shard 0/1 --base-url {server.base_url} "
        "--model judge --max-retries 1 --backoff-base 0.01"
    )
    result = run_cli_subprocess(command, cwd=tmp_path, env=judge_client_env(OPENAI_API_KEY=secret))
    assert result.returncode == 1
    (tmp_path / "stdout.log").write_text(result.stdout)
    (tmp_path / "stderr.log").write_text(result.stderr)
    assert "bad request from Bearer ***" in result.stderr  # masked, not just absent
    monkeypatch.setenv("OPENAI_API_KEY", secret)  # in this process: torch is already imported
    code, stdout, stderr = run_elicit(f"inspect {tmp_path / 'scored.jsonl'}")
    assert code == 0, stderr
    (tmp_path / "inspect.log").write_text(stdout + stderr)

    written = sorted(path for path in tmp_path.rglob("*") if path.is_file())
    names = {path.name for path in written}
    assert {
        "scored.jsonl",
        "scored.jsonl.cache.jsonl",
        "side.jsonl",
        "scored.jsonl.shard.json",
        "scored.uncertainty.png",
        "stderr.log",
    } <= names
    for path in written:
        assert secret.encode() not in path.read_bytes(), f"the API key is in {path}"
        assert secret[8:].encode() not in path.read_bytes(), f"part of the API key is in {path}"


def test_ctrl_c_writes_what_it_has_and_the_rerun_finishes(tmp_path, judge_server):
    script = gated(8, lambda i, k, request: Reply([str((i * 7) % 10 + 1)], delay=0.2))
    judge = ScriptedJudge(script)
    server = judge_server(judge)
    write_jsonl(tmp_path / "data.jsonl", chat_rows(40))
    command = f"elicit data.jsonl -o scored.jsonl --base-url {server.base_url} --model judge --concurrency 2"
    # A shell that starts a job in the background (`nohup .ci/run &`) ignores SIGINT in it, and
    # an ignored signal stays ignored in every child: give the CLI a terminal's Ctrl-C back.
    # (A handler, unlike SIG_IGN, is reset to the default by exec.)
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        process = subprocess.Popen(
            cli_command(command),
            cwd=tmp_path,
            env=judge_client_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        signal.signal(signal.SIGINT, inherited)
    deadline = time.monotonic() + 30
    while (
        len(cache_keys(tmp_path / "scored.jsonl.cache.jsonl")) < 6 and time.monotonic() < deadline
    ):
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert "interrupted: everything scored so far is written" in stderr
    partial = read_jsonl(tmp_path / "scored.jsonl")
    done = [row["id"] for row in partial if row["uncertainty"] is not None]
    assert len(partial) == 40 and 6 <= len(done) < 40
    for row in partial:
        if row["uncertainty"] is not None:
            assert row["uncertainty"] == pytest.approx(expected_u(row["id"]))

    # the concurrency is not part of the cache key: the re-run may use more
    script.open()
    result = run_cli_subprocess(
        command.replace("--concurrency 2", "--concurrency 16"), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert f"{len(done)} already in" in result.stderr
    assert [row["uncertainty"] for row in read_jsonl(tmp_path / "scored.jsonl")] == pytest.approx(
        [expected_u(i) for i in range(40)]
    )
    assert all(judge.counts[i] == 1 for i in done)


def key_pieces(secret: str) -> set[str]:
    """Every run of 8 characters of the key: none may be printed or written anywhere."""
    return {secret[i : i + 8] for i in range(len(secret) - 7)}


def test_the_key_is_masked_wherever_the_server_or_the_judge_puts_it(tmp_path, judge_server):
    secret = "sk-test-" + os.urandom(16).hex()

    def script(i, k, request):
        if i == 0:  # a 200 that is not JSON and echoes the request's Authorization header
            return Reply(body=f"proxy: Authorization: {request.authorization}")
        if i == 1:  # the same, where the printed preview cuts the key in the middle
            return Reply(body="x" * 60 + f" {request.authorization}")
        if i == 2:  # the judge's reply quotes the key
            return Reply([f"{request.authorization} is what you sent me"])
        if i == 3:  # ...and in a reply that parses: not printed at all
            return Reply([f"Score: 4 (key {request.authorization})"])
        return None

    server = judge_server(ScriptedJudge(script))
    result = elicit_in_subprocess(
        tmp_path, server, 6, "--sidecar side.jsonl --max-retries 0 --parse-retries 1", key=secret
    )
    assert result.returncode == 1, result.stderr
    assert "row 0: not scored: the reply is not JSON: 'proxy: Authorization: Bearer ***'" in (
        result.stderr
    )
    assert "row 2: not scored: no score in 2 replies: 'Bearer *** is what you" in (result.stderr)
    written = {path: path.read_text(errors="replace") for path in tmp_path.rglob("*.*")}
    for where, text in {"stdout": result.stdout, "stderr": result.stderr, **written}.items():
        leaked = {piece for piece in key_pieces(secret) if piece in text}
        assert not leaked, f"the key is in {where}: {leaked}"


def test_an_unexpected_error_holding_the_key_is_printed_masked(monkeypatch, capsys):
    from axolotl_ual.elicit import cli

    secret = "sk-test-" + os.urandom(16).hex()
    monkeypatch.setenv("OPENAI_API_KEY", secret)

    @cli._key_masked
    def crash(args):
        print(f"starting with {secret}")
        raise RuntimeError(f"bug: key={secret[:20]}")

    with pytest.raises(SystemExit) as exit_info:
        crash(argparse.Namespace(api_key_env="OPENAI_API_KEY"))
    assert exit_info.value.code == 1
    out, err = capsys.readouterr()
    assert out == "starting with ***\n"
    assert "Traceback" in err and "RuntimeError: bug: key=***" in err
    assert not {piece for piece in key_pieces(secret) if piece in out + err}
