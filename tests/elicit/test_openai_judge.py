"""`elicit --backend openai` against a real HTTP server on loopback, with injected faults."""

from __future__ import annotations

import math

import pytest

from axolotl_ual import rows as rowlib
from axolotl_ual.elicit.fake_server import Reply, Token

from .support import ScriptedJudge, chat_rows, expected_score, expected_u, read_jsonl, write_jsonl

ALWAYS_UNPARSABLE = {5, 15}
ALWAYS_503 = {25}
FAST_RETRIES = "--max-retries 2 --backoff-base 0.05 --backoff-max 0.2"


def elicit_chat_rows(run_elicit, tmp_path, server, n_rows: int, options: str = ""):
    """Write `n_rows` chat rows to data.jsonl and score them into out.jsonl through `server`."""
    write_jsonl(tmp_path / "data.jsonl", chat_rows(n_rows))
    return run_elicit(
        f"elicit {tmp_path / 'data.jsonl'} -o {tmp_path / 'out.jsonl'} "
        f"--base-url {server.base_url} --model judge {options}"
    )


def faulty(i: int, k: int, request) -> Reply | None:
    """Row i's k-th request: one transient fault of each kind, formatted replies, dead rows."""
    if i in ALWAYS_UNPARSABLE:
        return Reply(["I cannot rate this."])
    if i in ALWAYS_503:
        return Reply(status=503)
    if k == 0 and i % 10 == 1:
        return Reply(status=500)
    if k == 0 and i % 10 == 2:
        return Reply(status=429, headers={"Retry-After": "1"})
    if k == 0 and i % 10 == 3:
        return Reply(delay=2.5)  # beyond the client's --timeout 1
    if k == 0 and i % 10 == 4:
        return Reply(["Hmm, hard to say."])
    if i % 10 == 6:
        return Reply([f"Score: **{expected_score(i)}**/10"])
    return None


def test_faults_are_retried_and_exact_scores_are_written(tmp_path, judge_server, run_elicit):
    judge = ScriptedJudge(faulty)
    server = judge_server(judge)
    rows = chat_rows(30)
    write_jsonl(tmp_path / "data.jsonl", rows)
    out = tmp_path / "scored.jsonl"
    command = (
        f"elicit {tmp_path / 'data.jsonl'} --output {out} --backend openai --base-url {server.base_url} "
        f"--model judge --method verbalized --samples 1 --concurrency 8 --timeout 1 {FAST_RETRIES}"
    )
    code, stdout, stderr = run_elicit(command)

    nulls = ALWAYS_UNPARSABLE | ALWAYS_503
    assert code == 1, stderr  # some rows are null
    scored = read_jsonl(out)
    assert [row["id"] for row in scored] == list(range(30))  # every row, in order
    for row, original in zip(scored, rows, strict=True):
        assert {k: row[k] for k in original} == original  # every original column, unchanged
        i = row["id"]
        if i in nulls:
            assert row["uncertainty"] is None and row["uncertainty_score"] is None
        else:
            assert row["uncertainty"] == pytest.approx(expected_u(i), abs=1e-12)
            assert row["uncertainty_score"] == expected_score(i)

    # Exactly one request per normal row, two per transient fault, 1 + 3 (default) parse retries
    # for an unparsable row, 1 + 2 transport retries for a dead one: the client's own retries
    # are off.
    expected_requests = {}
    for i in range(30):
        if i in ALWAYS_UNPARSABLE:
            expected_requests[i] = 4
        elif i in ALWAYS_503:
            expected_requests[i] = 3
        elif i % 10 in (1, 2, 3, 4):
            expected_requests[i] = 2
        else:
            expected_requests[i] = 1
    assert dict(judge.counts) == expected_requests
    # Retry-After: 1 is honoured
    for i in (2, 12, 22):
        first, second = judge.times[i]
        assert second - first >= 0.95
    # the summary
    assert "null      3 rows" in stdout
    assert "scored    27 rows" in stdout
    assert (
        "retried:" in stdout
        and "HTTP 429" in stdout
        and "HTTP 500" in stdout
        and "timeout" in stdout
    )
    assert "3 rows are not scored (null in the output)" in stdout
    assert "row 5: not scored: no score in 4 replies: 'I cannot rate this.'" in stderr

    # The cache holds the 27 successes; a re-run asks again for the 3 nulls only.
    cache = read_jsonl(tmp_path / "scored.jsonl.cache.jsonl")
    assert len(cache) == 27
    assert {r["sample_key"] for r in cache} == {
        rowlib.sample_key(row, ("messages",)) for row in rows if row["id"] not in nulls
    }
    before = dict(judge.counts)
    code, stdout, _ = run_elicit(command)
    assert code == 1
    assert {
        i: judge.counts[i] - before[i] for i in judge.counts if judge.counts[i] != before[i]
    } == {5: 4, 15: 4, 25: 3}
    assert read_jsonl(out) == scored


def test_all_scored_exits_zero_and_sidecar_matches(tmp_path, judge_server, run_elicit):
    server = judge_server(ScriptedJudge())
    rows = chat_rows(12)
    write_jsonl(tmp_path / "data.jsonl", rows)
    code, stdout, stderr = run_elicit(
        f"elicit {tmp_path / 'data.jsonl'} -o {tmp_path / 'scored.jsonl'} --sidecar {tmp_path / 'side.jsonl'} --field u --base-url {server.base_url} --model judge"
    )
    assert code == 0, stderr
    scored = read_jsonl(tmp_path / "scored.jsonl")
    assert [r["u"] for r in scored] == pytest.approx([expected_u(i) for i in range(12)])
    assert [r["u_score"] for r in scored] == [expected_score(i) for i in range(12)]
    assert "uncertainty" not in scored[0]
    sidecar = read_jsonl(tmp_path / "side.jsonl")
    assert sidecar == [
        {
            rowlib.SIDECAR_KEY: rowlib.sample_key(row, ("messages",)),
            rowlib.SIDECAR_UNCERTAINTY: pytest.approx(expected_u(row["id"])),
        }
        for row in rows
    ]
    assert "null      0 rows" in stdout


def test_sidecar_only_and_duplicate_rows_are_asked_once(tmp_path, judge_server, run_elicit):
    judge = ScriptedJudge()
    server = judge_server(judge)
    rows = chat_rows(4) + chat_rows(4)  # every sample twice
    write_jsonl(tmp_path / "data.jsonl", rows)
    code, _, stderr = run_elicit(
        f"elicit {tmp_path / 'data.jsonl'} --sidecar {tmp_path / 'side.jsonl'} --base-url {server.base_url} --model judge"
    )
    assert code == 0, stderr
    assert dict(judge.counts) == {0: 1, 1: 1, 2: 1, 3: 1}
    assert len(read_jsonl(tmp_path / "side.jsonl")) == 4
    assert (tmp_path / "side.jsonl.cache.jsonl").exists()


def test_several_samples_are_averaged(tmp_path, judge_server, run_elicit):
    """--samples 3: asked with n=3 at temperature > 0; one unparsable sample is asked again."""

    def script(i, k, request):
        assert request.body["temperature"] > 0
        if k == 0:
            assert request.n == 3
            return Reply(["2", "oops", "5"])
        assert request.n == 1  # only the missing sample
        return Reply(["9"])

    judge = ScriptedJudge(script)
    server = judge_server(judge)
    code, _, stderr = elicit_chat_rows(run_elicit, tmp_path, server, 3, "--samples 3")
    assert code == 0, stderr
    for row in read_jsonl(tmp_path / "out.jsonl"):
        assert row["uncertainty_score"] == pytest.approx((2 + 5 + 9) / 3)
        assert row["uncertainty"] == pytest.approx(((2 + 5 + 9) / 3 - 1) / 9)
    assert dict(judge.counts) == {0: 2, 1: 2, 2: 2}


def test_a_server_that_ignores_n_is_asked_again(tmp_path, judge_server, run_elicit):
    judge = ScriptedJudge(lambda i, k, request: Reply([str(k + 4)]))  # one choice whatever n says
    server = judge_server(judge)
    code, _, stderr = elicit_chat_rows(run_elicit, tmp_path, server, 2, "--samples 3")
    assert code == 0, stderr
    assert [r["uncertainty_score"] for r in read_jsonl(tmp_path / "out.jsonl")] == [
        5.0,
        5.0,
    ]  # (4+5+6)/3
    assert dict(judge.counts) == {0: 3, 1: 3}


def digit_distribution(i: int) -> list[tuple[str, float]]:
    """Row i's top logprobs: digits (i % 10) and (i + 3) % 10 with 0.6 / 0.3, a word with 0.1."""
    return [
        (str(i % 10), math.log(0.6)),
        (" " + str((i + 3) % 10), math.log(0.3)),
        ("Sure", math.log(0.1)),
    ]


def test_logprob_method_reads_the_expected_digit(tmp_path, judge_server, run_elicit):
    def script(i, k, request):
        assert request.body["logprobs"] is True and request.body["top_logprobs"] == 20
        assert request.body["temperature"] == (0.0 if k == 0 else 0.7)
        if i == 3 and k == 0:  # the first token is not a digit at all: asked again
            return Reply(["Well"], tokens=[Token("Well", -0.1, [("Well", -0.1)])])
        if i == 4:  # never a digit: null
            return Reply(["No"], tokens=[Token("No", -0.1, [("No", -0.1)])])
        if i == 5:  # the digit comes after a markdown token
            return Reply(
                ["**7"],
                tokens=[
                    Token("**", -0.2, [("**", -0.2)]),
                    Token("7", math.log(0.6), digit_distribution(7)),
                ],
            )
        return Reply(
            [str(i % 10)], tokens=[Token(str(i % 10), math.log(0.6), digit_distribution(i))]
        )

    judge = ScriptedJudge(script)
    server = judge_server(judge)
    code, _, stderr = elicit_chat_rows(run_elicit, tmp_path, server, 8, "--method logprob")
    assert code == 1, stderr
    rows = read_jsonl(tmp_path / "out.jsonl")
    for row in rows:
        i = row["id"]
        if i == 4:
            assert row["uncertainty"] is None
            continue
        d = 7 if i == 5 else i
        expected = (0.6 * (d % 10) + 0.3 * ((d + 3) % 10)) / 0.9
        assert row["uncertainty_score"] == pytest.approx(expected)
        assert row["uncertainty"] == pytest.approx(expected / 9)
    assert judge.counts[3] == 2 and judge.counts[4] == 4 and judge.counts[0] == 1


def test_logprob_method_stops_when_the_server_gives_no_logprobs(tmp_path, judge_server, run_elicit):
    server = judge_server(ScriptedJudge(lambda i, k, request: Reply(["5"])))
    code, _, stderr = elicit_chat_rows(
        run_elicit, tmp_path, server, 3, "--method logprob --concurrency 1"
    )
    assert code == 3
    assert "answered without logprobs" in stderr
    assert [r["uncertainty"] for r in read_jsonl(tmp_path / "out.jsonl")] == [None] * 3


def test_bad_key_stops_the_run_at_once(tmp_path, judge_server, run_elicit):
    judge = ScriptedJudge(
        lambda i, k, request: Reply(status=401, error="Incorrect API key provided")
    )
    server = judge_server(judge)
    code, _, stderr = elicit_chat_rows(run_elicit, tmp_path, server, 50, "--concurrency 4")
    assert code == 3
    assert "HTTP 401: Incorrect API key provided" in stderr
    assert sum(judge.counts.values()) <= 4  # only the requests already in flight
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 50


def test_a_client_error_nulls_only_its_row(tmp_path, judge_server, run_elicit):
    def script(i, k, request):
        return Reply(status=400, error="maximum context length exceeded") if i == 1 else None

    judge = ScriptedJudge(script)
    server = judge_server(judge)
    code, _, stderr = elicit_chat_rows(run_elicit, tmp_path, server, 3)
    assert code == 1
    assert [r["uncertainty"] is None for r in read_jsonl(tmp_path / "out.jsonl")] == [
        False,
        True,
        False,
    ]
    assert judge.counts[1] == 1  # a 400 is not retried
    assert "row 1: not scored: HTTP 400: maximum context length exceeded" in stderr


def test_a_dead_server_stops_the_run(tmp_path, judge_server, run_elicit):
    judge = ScriptedJudge(lambda i, k, request: Reply(status=502))
    server = judge_server(judge)
    code, _, stderr = elicit_chat_rows(
        run_elicit, tmp_path, server, 40, "--concurrency 2 --max-retries 1 --backoff-base 0.01"
    )
    assert code == 3
    assert "the last 10 samples all failed after every retry" in stderr
    assert sum(judge.counts.values()) < 2 * 40  # it gave up before trying every row


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ("--method entropy", "--method entropy measures a local model"),
        ("--samples 3 --temperature 0", "--samples 3 needs --temperature > 0"),
        ("--method logprob --samples 2", "--samples applies to --method verbalized only"),
        ("--shard 4/4", "need 0 <= i < n"),
        ("--field messages", "is the sample's content"),
        ("--method logprob --top-logprobs 21", "--top-logprobs 21: OpenAI-compatible servers"),
    ],
)
def test_usage_errors(tmp_path, run_elicit, flags, message):
    write_jsonl(tmp_path / "data.jsonl", chat_rows(2))
    code, _, stderr = run_elicit(
        f"elicit {tmp_path / 'data.jsonl'} -o {tmp_path / 'out.jsonl'} --model judge "
        f"--base-url http://127.0.0.1:9/v1 {flags}"
    )
    assert code == 2
    assert message in stderr
    assert not (tmp_path / "out.jsonl").exists()


def test_input_errors_name_row_field_and_value(tmp_path, run_elicit):
    rows = chat_rows(3)
    rows[2]["messages"][1]["content"] = {"text": 5}
    write_jsonl(tmp_path / "data.jsonl", rows)
    code, _, stderr = run_elicit(
        f"elicit {tmp_path / 'data.jsonl'} -o {tmp_path / 'out.jsonl'} --model judge --base-url http://127.0.0.1:9/v1"
    )
    assert code == 2
    assert "row 2, messages[1]: 'content' must be a string, got dict: {'text': 5}" in stderr
    assert not (tmp_path / "out.jsonl").exists()
    code, _, stderr = run_elicit(
        f"elicit {tmp_path / 'data.jsonl'} -o {tmp_path / 'data.jsonl'} --model m"
    )
    assert code == 2 and "is the input" in stderr


def digit_mass_reply(i: int, mass: float) -> Reply:
    """Digit 3 with probability `mass`; the rest on a word."""
    alternatives = [("3", math.log(mass)), ("The", math.log(1 - mass))]
    return Reply(["3"], tokens=[Token("3", math.log(mass), alternatives)])


def test_logprob_reports_the_digit_mass_and_nulls_rows_below_the_threshold(
    tmp_path, judge_server, run_elicit
):
    mass_of = {0: 0.95, 1: 0.9, 2: 0.99, 3: 0.3}
    judge = ScriptedJudge(lambda i, k, request: digit_mass_reply(i, mass_of[i]))
    server = judge_server(judge)
    code, stdout, stderr = elicit_chat_rows(run_elicit, tmp_path, server, 4, "--method logprob")
    assert code == 1, stderr
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert [r["uncertainty_digit_mass"] for r in rows] == pytest.approx([0.95, 0.9, 0.99, 0.3])
    assert [r["uncertainty"] for r in rows[:3]] == pytest.approx([3 / 9] * 3)
    assert rows[3]["uncertainty"] is None and rows[3]["uncertainty_score"] is None
    assert (
        "row 3: not scored: only 30.0% of the judge's probability is on the digit tokens "
        "(below --min-digit-mass 0.5): its answer is not a score" in stderr
    )
    assert judge.counts[3] == 1  # a low mass is the judge's answer: not asked again
    assert "digits    mean 78.5%, min 30.0% of the judge's probability on the digit tokens" in (
        stdout
    )
    assert "1 below --min-digit-mass 0.5, null" in stdout
    assert "warning: the judge put" not in stdout  # a mean of 78.5% is not low across the run

    # a lower threshold keeps the row; the cache is checked against the threshold on reuse
    code, _, stderr = elicit_chat_rows(
        run_elicit, tmp_path, server, 4, "--method logprob --min-digit-mass 0.2"
    )
    assert code == 0, stderr
    assert judge.counts[3] == 2 and judge.counts[0] == 1  # only the null row was asked again
    code, _, _ = elicit_chat_rows(run_elicit, tmp_path, server, 4, "--method logprob")
    assert code == 1 and judge.counts[3] == 3  # its cached score fails 0.5: asked, null again
    assert read_jsonl(tmp_path / "out.jsonl")[3]["uncertainty"] is None


def test_a_judge_that_does_not_answer_with_digits_is_warned_about(
    tmp_path, judge_server, run_elicit
):
    server = judge_server(ScriptedJudge(lambda i, k, request: digit_mass_reply(i, 0.04)))
    code, stdout, _ = elicit_chat_rows(run_elicit, tmp_path, server, 3, "--method logprob")
    assert code == 1
    assert [r["uncertainty"] for r in read_jsonl(tmp_path / "out.jsonl")] == [None] * 3
    assert "warning: the judge put on average only 4.0% of its probability on the digit" in stdout


def greedy(i: int, k: int, request) -> Reply:
    """A server that ignores `n` and `temperature` (transformers serve): one greedy reply."""
    return Reply([f"Score: {expected_score(i)}"])


REPETITION = "warning: every sample's replies were identical"


def test_a_server_that_ignores_n_and_temperature_is_noticed_once(
    tmp_path, judge_server, run_elicit
):
    server = judge_server(ScriptedJudge(greedy))
    code, stdout, stderr = elicit_chat_rows(run_elicit, tmp_path, server, 25, "--samples 3")
    assert code == 0, stderr
    assert stdout.count(REPETITION) == 1
    assert (
        f"{REPETITION} (25 samples with several replies under --samples 3), and it answered 50 "
        "requests for n > 1 with fewer completions: the server most likely ignores" in stdout
    )


def test_no_repetition_warning_for_a_handful_of_rows_or_a_server_that_samples(
    tmp_path, judge_server, run_elicit
):
    server = judge_server(ScriptedJudge(greedy))
    code, stdout, _ = elicit_chat_rows(run_elicit, tmp_path, server, 5, "--samples 3")
    assert code == 0 and REPETITION[:30] not in stdout  # 5 sure answers prove nothing

    def sampling(i, k, request):  # most rows agree with themselves, a few do not
        if i % 8 == 0:
            return Reply(["3", "4", "3"][: request.n])
        return Reply([str(expected_score(i))] * request.n)

    server = judge_server(ScriptedJudge(sampling))
    code, stdout, _ = elicit_chat_rows(
        run_elicit, tmp_path, server, 25, f"--samples 3 --cache {tmp_path / 'other.jsonl'}"
    )
    assert code == 0 and REPETITION[:30] not in stdout
