"""`axolotl-ual generate` against a loopback OpenAI-compatible server: the pipelines end to end
on the bundled taxonomy, the judge's rejections, faults (5xx/429 retried, a refused key, garbage
from the teacher), the output-path rule, the key never written or printed."""

from __future__ import annotations

import os
import shutil

import pytest

from axolotl_ual.elicit.fake_server import Reply
from axolotl_ual.elicit.samples import prepare_samples
from axolotl_ual.generate import prompts as p
from axolotl_ual.generate.fake_teacher import step_of
from axolotl_ual.generate.taxonomy import COMPOSITIONAL, FOUNDATIONAL, KNOWLEDGE
from axolotl_ual.toolkit import judge_client_env

from .support import TAXONOMY, ScriptedTeacher, command, question_of, read_jsonl, run_subprocess

HAIKU = "compositional_skills/writing/freeform/haiku"
UNITS = "foundational_skills/reasoning/unit_conversion"
ACTIONS = "compositional_skills/extraction/grounded/action_items"
RAILWAY = "knowledge/transport/lanterne_valley_railway"


def judged(step, request, k):
    """The judge's verdicts, by item: the first question of every teacher request is dropped by
    the filter, the second is rated 1; the first knowledge pair of every chunk is unfaithful,
    the second rated 1 for relevancy; everything else passes."""
    question = question_of(request.prompt).splitlines()[0]  # (not the answer below it)
    first, second = "-0" in question, "-1" in question
    if step == p.QUESTION_FILTER:
        return Reply([f"<score>{0 if first else 1}</score>"])
    if step == p.ANSWER_RATING:
        return Reply([f"Rated. <score>{1 if second else 3}</score>"])
    if step == p.FAITHFULNESS:
        return Reply([f"<verdict>{'NO' if first else 'YES'}</verdict>"])
    if step == p.RELEVANCY:
        return Reply([f"<score>{1 if second else 2}</score>"])
    return None


# --num-samples 6 --per-request 3 --chunk-words 300 (support.command): per freeform leaf 2
# question requests x 3, 2 dropped, 2 rated 1 -> 2 rows; grounded: 2 contexts x 3 questions,
# the same -> 2 rows; knowledge: 3 chunks x 1 request x 3 pairs, 3 unfaithful, 3 irrelevant -> 3.
EXPECTED_ROWS = {RAILWAY: 3, UNITS: 2, ACTIONS: 2, HAIKU: 2}
EXPECTED_STEPS = {
    p.CONTEXTS: 2,
    p.QUESTIONS: 2 + 2 + 2,
    p.QUESTION_FILTER: 3 * 6,
    p.ANSWER: 3 * 4,
    p.ANSWER_RATING: 3 * 4,
    p.KNOWLEDGE_QA: 3,
    p.FAITHFULNESS: 9,
    p.RELEVANCY: 6,
}


def by_leaf(rows):
    counts = {}
    for row in rows:
        counts[row["leaf"]] = counts.get(row["leaf"], 0) + 1
    return counts


def test_the_bundled_taxonomy_end_to_end_then_a_rerun_sends_nothing(
    tmp_path, teacher_server, run_cli
):
    teacher = ScriptedTeacher(judged)
    server = teacher_server(teacher)
    code, out, err = run_cli(command(server, options="--split-by-branch"), cwd=tmp_path)
    assert code == 0, err
    assert dict(teacher.steps()) == EXPECTED_STEPS
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert by_leaf(rows) == EXPECTED_ROWS
    assert list(by_leaf(rows)) == [RAILWAY, UNITS, ACTIONS, HAIKU]  # LAB's order
    branch = {RAILWAY: KNOWLEDGE, UNITS: FOUNDATIONAL, ACTIONS: COMPOSITIONAL, HAIKU: COMPOSITIONAL}
    for row in rows:
        assert row["branch"] == branch[row["leaf"]]
        roles = [m["role"] for m in row["messages"]]
        assert roles == ["user", "assistant"]
        user, answer = (m["content"] for m in row["messages"])
        if row["branch"] == KNOWLEDGE:
            assert row["kind"] == "knowledge" and row["document"] == "lanterne_valley_railway.md"
            assert (row["faithful"], row["relevancy_score"]) == (True, 2)
            assert row["question_score"] is None and row["answer_rating"] is None
            chunk, question = user.rsplit("\n\n", 1)
            assert answer in chunk  # the fake teacher answers with a sentence of the chunk
            assert question.startswith("What does the excerpt say, point ")
            assert "-2?" in question  # -0 was unfaithful, -1 irrelevant
        else:
            assert (row["question_score"], row["answer_rating"]) == (1, 3)
            assert row["faithful"] is None and row["relevancy_score"] is None
            assert "-2:" in user  # -0 filtered out, -1 rated 1
            asked = "Question " + user.rsplit("Question ", 1)[1].split(":")[0]
            assert answer == f"A placeholder answer to {asked}, in the style of the examples."
        if row["kind"] == "grounded":
            assert user.startswith("Placeholder context ") and "\n\nQuestion " in user
    prepare_samples(rows, "chat", "messages")  # rows `elicit` reads as chat rows
    split = {
        b: read_jsonl(tmp_path / f"out.{b}.jsonl") for b in (KNOWLEDGE, FOUNDATIONAL, COMPOSITIONAL)
    }
    assert [len(split[b]) for b in split] == [3, 2, 4]
    assert [r for b in split for r in split[b]] == rows
    assert "kept 4, rejected 2" in out and f"{HAIKU} (freeform): 2 rows" in out

    before = (tmp_path / "out.jsonl").read_bytes()
    sent = len(server.requests)
    code, out, err = run_cli(command(server, options="--split-by-branch"), cwd=tmp_path)
    assert code == 0, err
    assert len(server.requests) == sent  # everything came from the cache
    assert "0 to send" in err and "1 to send" not in err
    assert (tmp_path / "out.jsonl").read_bytes() == before
    # one leaf of the same taxonomy: all from the cache, and the rest is said to be unused
    code, out, err = run_cli(command(server, options=f"--leaf {HAIKU}"), cwd=tmp_path)
    assert code == 0 and len(server.requests) == sent, err
    haiku = 2 + 6 + 4 + 4
    assert f"note: {sent - haiku} recorded requests were not asked this time" in err


def test_5xx_and_429_are_retried_and_change_nothing(tmp_path, teacher_server, run_cli):
    def flaky(step, request, k):
        if k == 0 and step in (p.QUESTIONS, p.ANSWER) and "-1" not in question_of(request.prompt):
            return Reply(status=503 if step == p.QUESTIONS else 500, error="overloaded")
        if k == 0 and step in (p.QUESTION_FILTER, p.FAITHFULNESS):
            return Reply(status=429, headers={"Retry-After": "0"}, error="slow down")
        return judged(step, request, k)

    clean = tmp_path / "clean"
    clean.mkdir()
    code, _, err = run_cli(command(teacher_server(ScriptedTeacher(judged))), cwd=clean)
    assert code == 0, err
    teacher = ScriptedTeacher(flaky)
    code, out, err = run_cli(command(teacher_server(teacher)), cwd=tmp_path)
    assert code == 0, err
    assert read_jsonl(tmp_path / "out.jsonl") == read_jsonl(clean / "out.jsonl")
    assert "x HTTP 429" in out and "x HTTP 503" in out and "x HTTP 500" in out
    steps = teacher.steps()
    assert steps[p.QUESTION_FILTER] == 2 * EXPECTED_STEPS[p.QUESTION_FILTER]


def test_a_refused_key_stops_at_once_and_the_fixed_rerun_resumes(tmp_path, teacher_server, run_cli):
    refusing = {"on": True}

    def script(step, request, k):
        if step == p.ANSWER and refusing["on"]:
            return Reply(status=401, error="Incorrect API key provided")
        return judged(step, request, k)

    teacher = ScriptedTeacher(script)
    server = teacher_server(teacher)
    code, _, err = run_cli(command(server, options="--concurrency 4"), cwd=tmp_path)
    assert code == 3, err
    assert (
        "the server refused the API key (HTTP 401: Incorrect API key provided): check OPENAI_API_KEY"
        in err
    )
    assert "nothing written" in err
    assert not (tmp_path / "out.jsonl").exists()
    assert teacher.steps()[p.ANSWER] <= 4  # only those in flight when the first 401 came back
    before = teacher.steps()

    refusing["on"] = False
    code, _, err = run_cli(command(server, options="--concurrency 4"), cwd=tmp_path)
    assert code == 0, err
    after = teacher.steps()
    for step in (p.CONTEXTS, p.QUESTIONS, p.KNOWLEDGE_QA, p.FAITHFULNESS):
        assert after[step] == before[step], f"{step} was asked again"
    assert by_leaf(read_jsonl(tmp_path / "out.jsonl")) == EXPECTED_ROWS


def test_unparsable_teacher_output_is_counted_and_skipped(tmp_path, teacher_server, run_cli):
    garbage = {"on": True}

    def script(step, request, k):
        if garbage["on"] and step == p.QUESTIONS and "haiku" in request.prompt:
            return Reply(["Here are some ideas: the sea, the moon, a cat."])  # no tags
        if step == p.ANSWER_RATING and k == 0:
            return Reply(["I would say it is good."])  # asked again, at a higher temperature
        return judged(step, request, k)

    teacher = ScriptedTeacher(script)
    server = teacher_server(teacher)
    code, out, err = run_cli(command(server), cwd=tmp_path)
    assert code == 1, err
    assert (
        f"{HAIKU}: questions request 0: failed: unparsable: no non-empty <question>...</question> in "
        "the reply; 2 replies, the last 'Here are some ideas: the sea, the moon, a cat.'"
    ) in err
    assert "2 requests (0 cached, 2 failed (2 unparsable))" in out
    assert "unparsable replies (answer_rating 8, questions 4)" in out
    assert "2 request(s) failed" in err
    expected = {**EXPECTED_ROWS}
    del expected[HAIKU]
    assert by_leaf(read_jsonl(tmp_path / "out.jsonl")) == expected
    retried = [r for r in server.requests if "End with your rating" in r.prompt]
    assert sorted({r.body["temperature"] for r in retried}) == [0.0, 0.7]

    garbage["on"] = False  # the next run asks for just what failed, and what follows from it
    before = teacher.steps()
    code, out, err = run_cli(command(server), cwd=tmp_path)
    assert code == 0, err
    new = teacher.steps() - before
    assert new[p.QUESTIONS] == 2 and new[p.QUESTION_FILTER] == 6 and not new[p.KNOWLEDGE_QA]
    assert by_leaf(read_jsonl(tmp_path / "out.jsonl")) == EXPECTED_ROWS


def test_outputs_that_would_overwrite_what_generate_did_not_write_are_refused(
    tmp_path, teacher_server, run_cli
):
    server = teacher_server(ScriptedTeacher(judged))
    taxonomy = tmp_path / "taxonomy"
    shutil.copytree(TAXONOMY, taxonomy)
    (tmp_path / "notes.jsonl").write_text('{"note": "mine"}\n')
    (tmp_path / "data.jsonl").write_text('{"messages": [], "uncertainty": 0.5}\n')
    cases = {
        f"-o {taxonomy}/out.jsonl": "is inside the folder",
        "-o notes.jsonl": "--output notes.jsonl exists and is not a scored dataset this command wrote (no columns 'messages', 'leaf', 'branch')",
        "-o out.jsonl --cache data.jsonl": "--cache data.jsonl exists and is not a generate cache this command wrote",
        "-o out.jsonl --cache out.jsonl": "give each output its own path",
        "-o notes.jsonl.x --split-by-branch": "cannot tell the output format",
    }
    for options, message in cases.items():
        text = command(server, output=None, taxonomy=taxonomy) + " " + options
        code, _, err = run_cli(text, cwd=tmp_path)
        assert code == 2, (options, err)
        assert message in err, (options, err)
    assert not server.requests
    assert (tmp_path / "notes.jsonl").read_text() == '{"note": "mine"}\n'


def test_dry_run_judge_model_and_system_prompt(tmp_path, teacher_server, run_cli):
    teacher = ScriptedTeacher(judged)
    server = teacher_server(teacher)
    code, _, err = run_cli(command(server, output=None, options="--dry-run"), cwd=tmp_path)
    assert code == 0, err
    assert "4 leaves" in err and "in 3 chunk(s) of <= 300 words" in err
    assert not server.requests and not list(tmp_path.iterdir())
    options = "--judge-model judge --system-prompt 'You are a helpful assistant.' --leaf '*/haiku'"
    code, _, err = run_cli(command(server, options=options), cwd=tmp_path)
    assert code == 0, err
    models = {False: set(), True: set()}  # by: is it a judge step?
    for request in server.requests:
        models[step_of(request) in p.JUDGE_STEPS].add(request.body["model"])
    assert models == {False: {"teacher"}, True: {"judge"}}
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert by_leaf(rows) == {HAIKU: 2}
    assert all(
        row["messages"][0] == {"role": "system", "content": "You are a helpful assistant."}
        for row in rows
    )


def key_pieces(secret: str) -> set[str]:
    return {secret[i : i + 8] for i in range(len(secret) - 7)}


def test_the_api_key_is_never_written_or_printed(tmp_path, teacher_server):
    secret = "sk-test-" + os.urandom(16).hex()

    def script(step, request, k):
        assert request.authorization == f"Bearer {secret}"
        if step == p.QUESTIONS and "haiku" in request.prompt:  # echoed in an error body
            return Reply(status=400, error=f"bad request from {request.authorization}")
        if step == p.CONTEXTS and k == 0:
            return Reply(
                status=429, headers={"Retry-After": "0"}, error=f"slow {request.authorization}"
            )
        if step == p.KNOWLEDGE_QA:  # quoted in an unparsable reply
            return Reply([f"{request.authorization} is what you sent me"])
        if step == p.ANSWER:  # quoted in a reply that parses: it becomes a row's answer
            return Reply([f"<answer>Sent with {request.authorization}.</answer>"])
        return judged(step, request, k)

    server = teacher_server(ScriptedTeacher(script))
    result = run_subprocess(
        command(server, options="--split-by-branch"),
        cwd=tmp_path,
        env=judge_client_env(OPENAI_API_KEY=secret),
    )
    assert result.returncode == 1, result.stderr
    assert "failed: HTTP 400: bad request from Bearer ***" in result.stderr
    assert "the last 'Bearer *** is what you sent me'" in result.stderr
    answers = [row["messages"][-1]["content"] for row in read_jsonl(tmp_path / "out.jsonl")]
    assert answers and set(answers) == {"Sent with Bearer ***."}
    written = {
        path: path.read_text(errors="replace") for path in tmp_path.rglob("*") if path.is_file()
    }
    assert {"out.jsonl", "out.jsonl.cache.jsonl", "out.compositional_skill.jsonl"} <= {
        p.name for p in written
    }
    for where, text in {"stdout": result.stdout, "stderr": result.stderr, **written}.items():
        leaked = {piece for piece in key_pieces(secret) if piece in text}
        assert not leaked, f"the key is in {where}: {leaked}"


@pytest.mark.parametrize("bad", ["--num-samples 0", "--min-answer-rating 4", "--temperature 3"])
def test_bad_arguments(tmp_path, teacher_server, bad):
    result = run_subprocess(command(teacher_server(), options=bad), cwd=tmp_path)
    assert result.returncode == 2 and "error: argument" in result.stderr
