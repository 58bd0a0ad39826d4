"""`elicit` against the replies of real server implementations, reproduced in the loopback
server from their source (see `fake_server.SHAPES`): vLLM's OpenAI server, llama.cpp's server,
`transformers serve` (issue 12)."""

from __future__ import annotations

import json
import math

import pytest

from axolotl_ual.elicit.fake_server import (
    LLAMACPP_LOWEST,
    Reply,
    Request,
    Token,
    llamacpp_completion_body,
    vllm_completion_body,
)

from .support import ScriptedJudge, chat_rows, expected_u, read_jsonl, write_jsonl


def digits(i: int) -> Token:
    """Row i's answer: " d" (d = i % 10) sampled with 0.5, "d" 0.2, " d+1" 0.2, "The" 0.1, and a
    newline the judge gives no probability at all (-inf)."""
    d = i % 10
    return Token(
        f" {d}",
        math.log(0.5),
        [
            ("The", math.log(0.1)),
            (f"{d}", math.log(0.2)),
            (f" {(d + 1) % 10}", math.log(0.2)),
            ("\n", -math.inf),
        ],
    )


def expected_digit(i: int) -> float:
    d = i % 10
    return (0.7 * d + 0.2 * ((d + 1) % 10)) / 0.9


def logprob_rows(run_elicit, tmp_path, server, n_rows=6, options=""):
    write_jsonl(tmp_path / "data.jsonl", chat_rows(n_rows))
    code, stdout, stderr = run_elicit(
        f"elicit {tmp_path / 'data.jsonl'} -o {tmp_path / 'out.jsonl'} --base-url "
        f"{server.base_url} --model judge --method logprob {options}"
    )
    return code, stdout, stderr, read_jsonl(tmp_path / "out.jsonl")


def test_the_shapes_are_the_servers_own():
    request = Request(0, 0.0, {"logprobs": True, "top_logprobs": 3, "messages": []}, None)
    reply = Reply([" 7"], tokens=[digits(7)])
    vllm = vllm_completion_body(request, reply)["choices"][0]
    item = vllm["logprobs"]["content"][0]
    assert item["token"] == " 7" and item["bytes"] == [32, 55]
    # the sampled token first, then the others, cut to top_logprobs; -inf clamped to -9999.0
    assert [alt["token"] for alt in item["top_logprobs"]] == [" 7", "The", "7"]
    assert vllm["message"]["reasoning"] is None and vllm["stop_reason"] is None
    all_of_them = Request(0, 0.0, {**request.body, "top_logprobs": 9}, None)
    full = vllm_completion_body(all_of_them, reply)["choices"][0]["logprobs"]["content"][0]
    assert full["top_logprobs"][-1]["logprob"] == -9999.0
    llama = llamacpp_completion_body(all_of_them, reply)
    entry = llama["choices"][0]["logprobs"]["content"][0]
    assert set(entry) == {"id", "token", "bytes", "logprob", "top_logprobs"}
    assert entry["top_logprobs"][-1]["logprob"] == LLAMACPP_LOWEST
    plain = llamacpp_completion_body(Request(0, 0.0, {"messages": []}, None), reply)
    assert "logprobs" not in plain["choices"][0]  # absent, not null, when not asked for
    json.dumps(vllm), json.dumps(llama)  # finite numbers only


@pytest.mark.parametrize("shape", ["vllm", "llamacpp"])
def test_logprob_reads_the_servers_logprobs(tmp_path, judge_server, run_elicit, shape):
    judge = ScriptedJudge(lambda i, k, request: Reply([f" {i % 10}"], tokens=[digits(i)]))
    server = judge_server(judge, shape=shape)
    code, _, stderr, rows = logprob_rows(run_elicit, tmp_path, server)
    assert code == 0, stderr
    assert [row["uncertainty_score"] for row in rows] == pytest.approx(
        [expected_digit(i) for i in range(6)]
    )
    assert [row["uncertainty_digit_mass"] for row in rows] == pytest.approx([0.9] * 6)


def test_vllm_top_logprobs_are_cut_after_the_sampled_token(tmp_path, judge_server, run_elicit):
    """With --top-logprobs 2 vLLM sends the sampled " d" and "The": the expectation is " d"."""
    judge = ScriptedJudge(lambda i, k, request: Reply([f" {i % 10}"], tokens=[digits(i)]))
    server = judge_server(judge, shape="vllm")
    code, _, stderr, rows = logprob_rows(
        run_elicit, tmp_path, server, 3, "--top-logprobs 2 --min-digit-mass 0.1"
    )
    assert code == 0, stderr
    assert [row["uncertainty_score"] for row in rows] == [0.0, 1.0, 2.0]
    assert [row["uncertainty_digit_mass"] for row in rows] == pytest.approx([0.5] * 3)


def test_llamacpp_refuses_n_and_is_asked_one_completion_at_a_time(
    tmp_path, judge_server, run_elicit
):
    judge = ScriptedJudge(lambda i, k, request: Reply([str(k + 4)]))
    server = judge_server(judge, shape="llamacpp")
    write_jsonl(tmp_path / "data.jsonl", chat_rows(6))
    code, stdout, stderr = run_elicit(
        f"elicit {tmp_path / 'data.jsonl'} -o {tmp_path / 'out.jsonl'} --base-url "
        f"{server.base_url} --model judge --samples 3 --concurrency 1"
    )
    assert code == 0, stderr
    # row 0's first request (n=3) got the 500, not retried; then n is never sent again
    assert [request.n for request in server.requests] == [3] + [1] * 18
    assert "retried" not in stdout
    scores = [row["uncertainty_score"] for row in read_jsonl(tmp_path / "out.jsonl")]
    assert scores == [6.0] + [5.0] * 5  # (5+6+7)/3 after the refused request, else (4+5+6)/3


def test_transformers_serve_has_no_logprobs_and_does_not_sample(tmp_path, judge_server, run_elicit):
    server = judge_server(ScriptedJudge(), shape="transformers-serve")
    code, _, stderr, _ = logprob_rows(run_elicit, tmp_path, server, 3)
    assert code == 3 and "the server answered without logprobs" in stderr
    write_jsonl(tmp_path / "data.jsonl", chat_rows(20))
    code, stdout, stderr = run_elicit(
        f"elicit {tmp_path / 'data.jsonl'} -o {tmp_path / 'v.jsonl'} --base-url "
        f"{server.base_url} --model judge --samples 3"
    )
    assert code == 0, stderr
    assert [row["uncertainty"] for row in read_jsonl(tmp_path / "v.jsonl")] == pytest.approx(
        [expected_u(i) for i in range(20)]
    )
    assert "warning: every sample's replies were identical (20 samples" in stdout
