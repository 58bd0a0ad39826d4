"""How the loopback server (`elicit.fake_server`) answers `generate`'s prompts, for tests and for
trying the command without a model.

It recognizes each step by the output format its prompt ends with (`prompts.FORMATS`) and
answers in that format, deterministically from a hash of the prompt: new contexts, numbered
questions (`Question <id>-<i>: ...`), answers that name their question, knowledge pairs whose
answer is a sentence of the excerpt, and judge verdicts that reject some items (about one
question in five, one answer in five rated 1, one knowledge answer in six unfaithful, one in
seven rated 1 for relevancy). The text is placeholder text, not data to train on: it shows
the pipeline working, not what a teacher writes.

`FakeTeacher()(request)` is a server policy; `reply_for(step, prompt)` the reply text, for
tests that script faults around it; `step_of(request)` says which step a request is.
"""

from __future__ import annotations

import hashlib
import re

from ..elicit.fake_server import Reply, Request
from . import prompts as p

# Most specific first: the knowledge format mentions both tags.
_DETECTION_ORDER = (
    p.KNOWLEDGE_QA,
    p.CONTEXTS,
    p.QUESTIONS,
    p.QUESTION_FILTER,
    p.ANSWER,
    p.ANSWER_RATING,
    p.FAITHFULNESS,
    p.RELEVANCY,
)


def step_of(request: Request) -> str | None:
    """The `generate` step a request is for, or None (another client, e.g. `elicit`)."""
    prompt = request.prompt
    return next((step for step in _DETECTION_ORDER if p.FORMATS[step] in prompt), None)


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def _tag(text: str) -> str:
    return f"{_hash(text) % 16**6:06x}"


def _count(prompt: str, default: int = 3) -> int:
    match = re.search(r"Write (\d+) new", prompt)
    return int(match.group(1)) if match else default


def _section(prompt: str, label: str) -> str:
    """The text after the last `label` line ("Question: ...", "Answer:\\n..."), up to a blank
    line."""
    matches = list(re.finditer(rf"^{label}:[ \n](.*?)(?:\n\n|\Z)", prompt, re.S | re.M))
    return matches[-1].group(1).strip() if matches else ""


def _excerpt(prompt: str) -> str:
    match = re.search(r"another excerpt of the document:\n(.*?)\n\nWrite \d+ new", prompt, re.S)
    return match.group(1) if match else ""


def question_of(prompt: str) -> str:
    return _section(prompt, "Question")


def reply_for(step: str, prompt: str) -> str:
    """What the fake teacher or judge answers to a `step` prompt."""
    tag = _tag(prompt)
    if step == p.CONTEXTS:
        return (
            f"<context>Placeholder context {tag}. Three sentences of made-up notes on subject "
            f"{tag}: someone will do something by Friday; something else was only discussed; "
            "a last point closes the notes.</context>"
        )
    if step == p.QUESTIONS:
        return "\n".join(
            f"<question>Question {tag}-{i}: a new request for the task, number {i}?</question>"
            for i in range(_count(prompt))
        )
    if step == p.ANSWER:
        question = question_of(prompt).split(":", 1)[0]
        return f"<answer>A placeholder answer to {question}, in the style of the examples.</answer>"
    if step == p.KNOWLEDGE_QA:
        sentences = [s for s in re.split(r"(?<=[.!?])\s+", _excerpt(prompt)) if len(s) > 20]
        sentences = sentences or ["The excerpt says little."]
        return "\n".join(
            f"<question>What does the excerpt say, point {tag}-{i}?</question>\n"
            f"<answer>{sentences[(_hash(tag) + i) % len(sentences)]}</answer>"
            for i in range(_count(prompt))
        )
    verdict = _hash(question_of(prompt) + "\n" + _section(prompt, "Answer"))
    if step == p.QUESTION_FILTER:
        keep = verdict % 5 != 0
        return (
            f"{'It fits the task.' if keep else 'It is off the task.'} <score>{int(keep)}</score>"
        )
    if step == p.ANSWER_RATING:
        rating = 1 if verdict % 5 == 0 else 2 if verdict % 5 == 1 else 3
        return f"Rated on correctness and form. <score>{rating}</score>"
    if step == p.FAITHFULNESS:
        return (
            f"Checked against the excerpt. <verdict>{'NO' if verdict % 6 == 0 else 'YES'}</verdict>"
        )
    if step == p.RELEVANCY:
        return f"It answers the question. <score>{1 if verdict % 7 == 0 else 2}</score>"
    raise AssertionError(f"unknown step {step}")


class FakeTeacher:
    """A server policy answering every `generate` step (None for other requests)."""

    def __call__(self, request: Request) -> Reply | None:
        step = step_of(request)
        if step is None:
            return None
        return Reply([reply_for(step, request.prompt)] * request.n)
