"""`generate` as a subprocess, killed mid-run (SIGKILL, Ctrl-C): the same command then finishes,
sending nothing that was already answered, and writes what an uninterrupted run writes."""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import threading
import time

import pytest

from axolotl_ual.cli import main
from axolotl_ual.elicit.fake_server import FakeOpenAIServer
from axolotl_ual.generate import prompts as p
from axolotl_ual.generate.fake_teacher import FakeTeacher
from axolotl_ual.toolkit import judge_client_env

from .support import ScriptedTeacher, cli_command, command, question_of, read_jsonl, run_subprocess
from .test_generate import judged

OPTIONS = "--num-samples 12 --concurrency 4"
FAST_ANSWERS = 8


def gated(policy):
    """`policy` (else the fake teacher), every reply a little slow, and answers after the first
    FAST_ANSWERS taking 5 s until `.open()`: the run cannot finish before the test has stopped
    it, however slowly this machine runs the test."""
    gate = threading.Event()
    answers = []
    lock = threading.Lock()
    teacher = FakeTeacher()

    def script(step, request, k):
        reply = policy(step, request, k) or teacher(request)
        reply.delay = 0.02
        if step == p.ANSWER and not gate.is_set():
            with lock:
                answers.append(request.prompt)
                if len(answers) > FAST_ANSWERS:
                    reply.delay = 5.0
        return reply

    script.open = gate.set
    return script


def cached_answers(path) -> list[str]:
    """The answers recorded in the cache file (complete lines only)."""
    answers = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.endswith("}") and '"step": "answer"' in line:
                answers.append(json.loads(line)["value"])
    return answers


def question_id(text: str) -> str:
    """`Question <id>-<i>`: how the fake teacher names its questions, and its answers them."""
    return re.search(r"Question [0-9a-f]{6}-\d+", text).group(0)


@pytest.fixture(scope="module")
def expected(tmp_path_factory):
    """What an uninterrupted run writes (in this process: it is only the reference)."""
    folder = tmp_path_factory.mktemp("reference")
    with FakeOpenAIServer(ScriptedTeacher(judged)) as server:
        code = main(shlex.split(command(server, output=str(folder / "out.jsonl"), options=OPTIONS)))
    assert code == 0
    return read_jsonl(folder / "out.jsonl")


def start(tmp_path, server):
    return subprocess.Popen(
        cli_command(command(server, options=OPTIONS)),
        cwd=tmp_path,
        env=judge_client_env(OPENAI_API_KEY="sk-x"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_answers(cache, process, count: int) -> None:
    deadline = time.monotonic() + 60
    while len(cached_answers(cache)) < count and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.02)


def test_sigkill_then_the_same_command_sends_nothing_already_answered(
    tmp_path, teacher_server, expected
):
    script = gated(judged)
    teacher = ScriptedTeacher(script)
    server = teacher_server(teacher)
    cache = tmp_path / "out.jsonl.cache.jsonl"
    process = start(tmp_path, server)
    wait_for_answers(cache, process, FAST_ANSWERS - 2)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=10)
    assert process.returncode == -signal.SIGKILL
    time.sleep(0.3)  # let the server finish reading requests sent just before the kill
    answered = {question_id(answer) for answer in cached_answers(cache)}
    assert len(answered) >= FAST_ANSWERS - 2
    assert not (tmp_path / "out.jsonl").exists()  # rows are only ever written whole
    run_1 = list(teacher.log)

    script.open()
    result = run_subprocess(command(server, options=OPTIONS), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    first_pass = re.search(
        r"pass 1/5 \(.*\): (\d+) requests, (\d+) already answered", result.stderr
    )
    assert first_pass.group(1) == first_pass.group(2)
    run_2 = teacher.log[len(run_1) :]
    # no answer recorded before the kill was asked for again...
    again = [question_id(question_of(prompt)) for step, prompt in run_2 if step == p.ANSWER]
    assert again and not answered & set(again)
    # ...and of everything the server saw in run 1, at most the requests in flight (4)
    repeated = set(run_2) & set(run_1)
    assert len(repeated) <= 4, repeated
    assert read_jsonl(tmp_path / "out.jsonl") == expected


def test_ctrl_c_writes_nothing_and_the_rerun_finishes(tmp_path, teacher_server, expected):
    script = gated(judged)
    teacher = ScriptedTeacher(script)
    server = teacher_server(teacher)
    # A shell that starts a job in the background ignores SIGINT in it, and an ignored signal
    # stays ignored in every child: give the CLI a terminal's Ctrl-C back.
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        process = start(tmp_path, server)
    finally:
        signal.signal(signal.SIGINT, inherited)
    wait_for_answers(tmp_path / "out.jsonl.cache.jsonl", process, 4)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert "interrupted: nothing written; the answered requests are in the cache" in stderr
    assert not (tmp_path / "out.jsonl").exists()

    script.open()
    before = len(teacher.log)
    result = run_subprocess(
        command(server, options=OPTIONS).replace("--concurrency 4", "--concurrency 16"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert read_jsonl(tmp_path / "out.jsonl") == expected
    assert not {step for step, _ in teacher.log[before:]} & {p.CONTEXTS, p.KNOWLEDGE_QA}
