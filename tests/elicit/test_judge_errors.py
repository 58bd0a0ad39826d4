"""What the judge server answers reaches the user, and the answers that fail every row stop the
run (issues 10 and 12): server messages in every shape, a wrong model or URL, a refused key, a
dead port, a trickling server, replies without a usable choice."""

from __future__ import annotations

import socket
import time

import pytest

from axolotl_ual.elicit.fake_server import Reply

from .support import (
    ScriptedJudge,
    chat_rows,
    elicit_in_subprocess,
    expected_u,
    read_jsonl,
    write_jsonl,
)

FAST = "--max-retries 1 --backoff-base 0.01 --backoff-max 0.05"


def elicit(run_elicit, tmp_path, base_url, rows=6, options=""):
    write_jsonl(tmp_path / "data.jsonl", chat_rows(rows))
    return run_elicit(
        f"elicit {tmp_path / 'data.jsonl'} -o {tmp_path / 'out.jsonl'} --base-url {base_url} "
        f"--model tiny {FAST} {options}"
    )


def scored(tmp_path) -> list:
    return [row["uncertainty"] for row in read_jsonl(tmp_path / "out.jsonl")]


@pytest.mark.parametrize(
    ("status", "body", "said"),
    [
        # transformers serve pinned to a model (FastAPI's `detail`)
        (400, {"detail": "Server is pinned to '/x'; requested 'tiny'."}, "requested 'tiny'"),
        # vLLM
        (
            404,
            {"error": {"message": "The model `tiny` does not exist.", "type": "NotFoundError"}},
            "The model `tiny` does not exist.",
        ),
        # vLLM before 0.8: the error object at the top level
        (404, {"object": "error", "message": "The model `tiny` does not exist."}, "`tiny`"),
    ],
)
def test_a_wrong_model_stops_at_the_first_answer_with_a_hint(
    tmp_path, judge_server, run_elicit, status, body, said
):
    judge = ScriptedJudge(lambda i, k, request: Reply(status=status, body=body))
    server = judge_server(judge)
    code, stdout, stderr = elicit(run_elicit, tmp_path, server.base_url, 20, "--concurrency 2")
    assert code == 3, stderr
    assert f"(HTTP {status}: " in stderr and said in stderr
    assert "check --model" in stderr and "re-run" not in stdout + stderr
    assert len(server.requests) <= 2  # the requests in flight, no retry
    assert scored(tmp_path) == [None] * 20  # the output is still written


def test_a_base_url_without_v1_stops_with_a_hint(tmp_path, judge_server, run_elicit):
    server = judge_server(ScriptedJudge(), prefixes=("/v1",))
    base = server.base_url.removesuffix("/v1")
    code, _, stderr = elicit(run_elicit, tmp_path, base, 10, "--concurrency 1")
    assert code == 3, stderr
    assert f"no chat completions at {base}/chat/completions (HTTP 404: Not Found)" in stderr
    assert "check --base-url (for most servers it ends in /v1)" in stderr
    assert len(server.requests) == 0  # (the 404 came before the policy)


def test_what_was_scored_before_the_stop_is_written(tmp_path, judge_server, run_elicit):
    def script(i, k, request):
        if i >= 3:  # the server was restarted with another model
            return Reply(status=404, body={"detail": "model 'tiny' not found"})
        return None

    server = judge_server(ScriptedJudge(script))
    code, _, stderr = elicit(run_elicit, tmp_path, server.base_url, 8, "--concurrency 1")
    assert code == 3, stderr
    assert scored(tmp_path) == pytest.approx([expected_u(i) for i in range(3)] + [None] * 5)


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_stops_at_once_and_is_not_echoed(
    tmp_path, judge_server, run_elicit, monkeypatch, status
):
    secret = "sk-test-refused-0123456789abcdef"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    judge = ScriptedJudge(
        lambda i, k, request: Reply(status=status, error=f"bad key {request.authorization}")
    )
    server = judge_server(judge)
    code, stdout, stderr = elicit(
        run_elicit, tmp_path, server.base_url, 30, "--concurrency 2 --max-retries 5"
    )
    assert code == 3, stderr
    assert f"the server refused the API key (HTTP {status}: bad key Bearer ***)" in stderr
    assert "check OPENAI_API_KEY" in stderr
    assert secret[8:16] not in stdout + stderr
    assert len(server.requests) <= 2  # never retried


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (  # FastAPI validation errors: a list of pydantic dicts
            Reply(
                status=422,
                body={
                    "detail": [
                        {"loc": ["body", "messages", 1, "content"], "msg": "Field required"},
                        {"loc": ["body", "top_k"], "msg": "Input should be a valid integer"},
                    ]
                },
            ),
            "HTTP 422: messages.1.content: Field required; top_k: Input should be a valid integer",
        ),
        (
            Reply(status=400, body={"error": "prompt too long for this judge"}),
            "HTTP 400: prompt too long for this judge",
        ),
        (  # about one prompt, though it names the model (--model tiny): the run goes on
            Reply(status=400, body={"error": {"message": "tiny's maximum context is 2048"}}),
            "HTTP 400: tiny's maximum context is 2048",
        ),
        (  # a text body (a proxy), shown after the retries
            Reply(status=502, body="<html><body>upstream connect error</body></html>"),
            "HTTP 502 after 2 attempts: <html><body>upstream connect error</body></html>",
        ),
    ],
)
def test_every_http_error_shows_the_server_message(
    tmp_path, judge_server, run_elicit, reply, message
):
    server = judge_server(ScriptedJudge(lambda i, k, request: reply if i == 1 else None))
    code, _, stderr = elicit(run_elicit, tmp_path, server.base_url, 3)
    assert code == 1, stderr
    assert f"row 1: not scored: {message}" in stderr
    assert scored(tmp_path)[1] is None and None not in scored(tmp_path)[::2]


def test_a_dead_port_stops_quickly_saying_so(tmp_path, run_elicit):
    with socket.socket() as probe:  # a loopback port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    write_jsonl(tmp_path / "data.jsonl", chat_rows(15))
    code, stdout, stderr = run_elicit(
        f"elicit {tmp_path / 'data.jsonl'} -o {tmp_path / 'out.jsonl'} "
        f"--base-url http://127.0.0.1:{port}/v1 --model judge"
    )
    assert code == 3, stderr
    assert time.monotonic() - started < 8  # default retries and backoff: was ~30 s
    assert f"the server is not reachable at http://127.0.0.1:{port}/v1" in stderr
    assert "re-run" not in stdout + stderr
    assert scored(tmp_path) == [None] * 15


def test_a_trickling_server_cannot_hold_a_request_past_the_timeout(tmp_path, judge_server):
    """A byte every 0.25 s never trips a per-read timeout of 1 s; the whole request is bounded."""
    server = judge_server(ScriptedJudge(lambda i, k, request: Reply(["5"], trickle=0.25)))
    started = time.monotonic()
    result = elicit_in_subprocess(tmp_path, server, 2, f"--timeout 1 {FAST} --concurrency 2")
    assert time.monotonic() - started < 20  # a trickled reply would take ~80 s per request
    assert result.returncode == 1, result.stderr
    assert "row 0: not scored: timeout after 2 attempts" in result.stderr
    assert "retried: 2 x timeout" in result.stdout


def test_replies_without_a_usable_choice_say_what_was_wrong(tmp_path, judge_server, run_elicit):
    def script(i, k, request):
        return {
            0: Reply(body={"id": "x", "object": "chat.completion", "created": 1}),
            1: Reply(body={"id": "x", "choices": []}),
            2: Reply([None]),
            3: Reply(
                body={
                    "choices": [
                        {"index": 0, "message": {"content": None, "reasoning_content": "Hmm"}}
                    ]
                }
            ),
            4: Reply(body={"error": {"message": "the model crashed", "code": 500}}),
        }.get(i)

    server = judge_server(ScriptedJudge(script))
    code, _, stderr = elicit(run_elicit, tmp_path, server.base_url, 6, "--parse-retries 1")
    assert code == 1, stderr
    for line in (
        "row 0: not scored: the reply has no 'choices': "
        '{"id": "x", "object": "chat.completion", "created": 1}',
        "row 1: not scored: the reply's 'choices' is an empty list",
        "row 2: not scored: no score in 2 replies: null message content",
        "row 3: not scored: no score in 2 replies: null message content, only reasoning "
        "(raise --max-tokens)",
    ):
        assert line in stderr
    assert "the reply has no 'choices': the model crashed" in stderr  # row 4, in the summary
    assert "empty replies" not in stderr
    assert scored(tmp_path)[5] == pytest.approx(expected_u(5))
