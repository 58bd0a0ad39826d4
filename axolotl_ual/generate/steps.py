"""What each leaf goes through, step by step: the requests of a step, and what their replies
make of the leaf's samples. Nothing here sends anything (`run.py` does).

| leaf kind | steps |
|---|---|
| freeform skill | questions -> question_filter (keep 1) -> answer -> answer_rating (keep >= 2) |
| grounded skill | contexts -> questions (per context) -> question_filter -> answer -> answer_rating |
| knowledge | knowledge_qa (per document chunk) -> faithfulness (keep YES) -> relevancy (keep 2) |

The first step of a leaf draws about `num_samples` items (rounded up to whole requests of
`per_request` items, at least one request per document chunk), duplicates dropped (case,
spacing and punctuation ignored, the seed examples' own questions included). A request that
failed (after every retry) or whose replies could not be parsed takes nothing further: its
items are missing from the output and the next run asks for it again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from . import prompts as p
from .cache import Result, request_key
from .prompts import Candidate
from .taxonomy import FREEFORM, GROUNDED, KNOWLEDGE, Leaf, chunk_words

TEACHER, JUDGE = "teacher", "judge"
STEPS_OF_KIND = {
    FREEFORM: (p.QUESTIONS, p.QUESTION_FILTER, p.ANSWER, p.ANSWER_RATING),
    GROUNDED: (p.CONTEXTS, p.QUESTIONS, p.QUESTION_FILTER, p.ANSWER, p.ANSWER_RATING),
    KNOWLEDGE: (p.KNOWLEDGE_QA, p.FAITHFULNESS, p.RELEVANCY),
}
# steps that draw new items (numbered requests: several draws of one prompt differ)
DRAW_STEPS = frozenset({p.CONTEXTS, p.QUESTIONS, p.KNOWLEDGE_QA})
# The judge's verdicts, recorded as columns of every row (null where a step does not apply).
SCORE_COLUMNS = {
    p.QUESTION_FILTER: "question_score",
    p.ANSWER_RATING: "answer_rating",
    p.FAITHFULNESS: "faithful",
    p.RELEVANCY: "relevancy_score",
}
KEEP_RELEVANCY = 2


@dataclass(frozen=True)
class Sampling:
    """Who answers a role's requests, and how."""

    model: str
    temperature: float
    max_tokens: int


@dataclass(frozen=True)
class Settings:
    teacher: Sampling
    judge: Sampling
    num_samples: int = 30
    per_request: int = 5
    chunk_words: int = 1000
    min_answer_rating: int = 2
    system_prompt: str | None = None


@dataclass
class Item:
    """One request of one step of one leaf (the runner's work item)."""

    key: str
    leaf: Leaf
    step: str
    number: int  # the request's position within its leaf's step
    role: str
    messages: list[dict[str, str]]
    candidate: Candidate
    source: int | None = None  # the leaf sample it is about (None: a draw of the first step)

    @property
    def label(self) -> str:
        return f"{self.leaf.path}: {self.step} request {self.number}"

    def parse(self, text: str) -> Any:
        if self.step in (p.CONTEXTS, p.QUESTIONS):
            return p.parse_items(self.step, text)
        if self.step == p.ANSWER:
            return p.parse_answer(text)
        if self.step == p.KNOWLEDGE_QA:
            return [list(pair) for pair in p.parse_pairs(text)]
        if self.step == p.FAITHFULNESS:
            return p.parse_verdict(text)
        return p.parse_score(self.step, text)


@dataclass
class Draft:
    """A sample on its way: what it holds so far and the judge's verdicts on it."""

    candidate: Candidate
    scores: dict[str, Any] = field(default_factory=dict)


@dataclass
class StepCount:
    """A leaf's step in numbers, for the summary."""

    requests: int = 0
    cached: int = 0
    failed: int = 0
    unparsable: int = 0  # of the failed
    produced: int = 0  # first steps: items drawn
    duplicates: int = 0
    kept: int = 0
    dropped: int = 0  # rejected by the judge


def normalized(text: str) -> str:
    return re.sub(r"\W+", " ", text.lower()).strip()


def stable_start(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:4], "big")


class LeafRun:
    """One leaf's samples through its steps."""

    def __init__(self, leaf: Leaf, settings: Settings):
        self.leaf = leaf
        self.settings = settings
        self.steps = STEPS_OF_KIND[leaf.kind]
        self.drafts: list[Draft] = []
        self.counts: dict[str, StepCount] = {step: StepCount() for step in self.steps}
        self.chunks = [
            (document.name, index, text)
            for document in leaf.documents
            for index, text in enumerate(chunk_words(document.text, settings.chunk_words))
        ]

    # ------------------------------------------------------------------ requests

    def items(self, index: int) -> list[Item]:
        """The requests of the leaf's `index`-th step (none past its last step)."""
        if index >= len(self.steps):
            return []
        step = self.steps[index]
        settings, leaf = self.settings, self.leaf
        per, rounds = settings.per_request, math.ceil(settings.num_samples / settings.per_request)
        specs: list[tuple[list[dict[str, str]], Candidate, int | None]] = []
        if step == p.CONTEXTS:
            specs = [(p.contexts_messages(leaf, r), Candidate(), None) for r in range(rounds)]
        elif step == p.QUESTIONS and leaf.kind == FREEFORM:
            specs = [
                (p.questions_messages(leaf, r, per, None), Candidate(), None) for r in range(rounds)
            ]
        elif step == p.KNOWLEDGE_QA:
            per_chunk = math.ceil(settings.num_samples / (per * max(len(self.chunks), 1)))
            for c, (name, position, text) in enumerate(self.chunks):
                for r in range(per_chunk):
                    messages = p.knowledge_qa_messages(leaf, text, c + r, per)
                    specs.append(
                        (messages, Candidate(context=text, document=name, chunk=position), None)
                    )
        else:
            for j, draft in enumerate(self.drafts):
                specs.append((self._messages(step, draft.candidate, j), draft.candidate, j))
        role = JUDGE if step in p.JUDGE_STEPS else TEACHER
        sampling = settings.judge if role == JUDGE else settings.teacher
        items = []
        for number, (messages, candidate, source) in enumerate(specs):
            identity = {
                "prompts": p.PROMPT_VERSION,
                "parser": p.PARSER_VERSION,
                "leaf": leaf.path,
                "step": step,
                # several draws of one prompt are different requests; later steps are named
                # by their messages alone, so a sample keeps its replies wherever it moves
                "draw": number if step in DRAW_STEPS else None,
                **dataclasses.asdict(sampling),
                "messages": messages,
            }
            items.append(
                Item(request_key(identity), leaf, step, number, role, messages, candidate, source)
            )
        self.counts[step].requests = len(items)
        return items

    def _messages(self, step: str, candidate: Candidate, position: int):
        leaf = self.leaf
        if step == p.QUESTIONS:  # grounded: questions about each new context
            return p.questions_messages(
                leaf, position, self.settings.per_request, candidate.context
            )
        if step == p.QUESTION_FILTER:
            return p.question_filter_messages(leaf, candidate)
        if step == p.ANSWER:  # the examples shown depend on the question, not on its position
            return p.answer_messages(leaf, candidate, stable_start(candidate.question or ""))
        if step == p.ANSWER_RATING:
            return p.answer_rating_messages(leaf, candidate)
        if step == p.FAITHFULNESS:
            return p.faithfulness_messages(candidate)
        if step == p.RELEVANCY:
            return p.relevancy_messages(candidate)
        raise AssertionError(f"no messages for step {step}")

    # ------------------------------------------------------------------ replies

    def apply(self, index: int, items: list[Item], results: dict[str, Result]) -> None:
        """Turn the step's replies (in request order) into the leaf's samples."""
        if index >= len(self.steps):
            return
        step = self.steps[index]
        count = self.counts[step]
        usable = []
        for item in items:
            result = results.get(item.key)
            if result is None or not result.ok:
                count.failed += 1
                count.unparsable += bool(result is not None and result.unparsable)
                continue
            usable.append((item, result.value))
        if step in DRAW_STEPS:
            self.drafts = self._draw(step, usable, count)
            return
        kept = []
        for item, value in usable:
            draft = self.drafts[item.source]
            if step == p.ANSWER:
                kept.append(Draft(dataclasses.replace(draft.candidate, answer=value), draft.scores))
                continue
            scores = {**draft.scores, SCORE_COLUMNS[step]: value}
            if self._keeps(step, value):
                kept.append(Draft(draft.candidate, scores))
            else:
                count.dropped += 1
        count.kept = len(kept)
        self.drafts = kept

    def _keeps(self, step: str, value: Any) -> bool:
        if step == p.QUESTION_FILTER:
            return value == 1
        if step == p.ANSWER_RATING:
            return value >= self.settings.min_answer_rating
        if step == p.FAITHFULNESS:
            return value is True
        return value == KEEP_RELEVANCY

    def _draw(self, step: str, usable: list[tuple[Item, Any]], count: StepCount) -> list[Draft]:
        """The drawn items (contexts, questions, Q/A pairs): each request's first `per_request`
        (one context), duplicates of earlier ones and of the seed examples dropped."""
        per = self.settings.per_request
        seen = Counter()
        for seed in self.leaf.seeds:
            seen[(normalized(seed.question), normalized(seed.context or ""))] += 1
        for seed in self.leaf.knowledge_seeds:
            for question, _ in seed.pairs:
                seen[(normalized(question), "")] += 1
        drafts = []
        for item, value in usable:
            if step == p.CONTEXTS:
                new = [Candidate(context=text) for text in value[:1]]  # one context was asked for
                keys = [("", normalized(c.context)) for c in new]
            elif step == p.QUESTIONS:
                new = [dataclasses.replace(item.candidate, question=q) for q in value[:per]]
                keys = [(normalized(c.question), normalized(c.context or "")) for c in new]
            else:
                new = [
                    dataclasses.replace(item.candidate, question=q, answer=a)
                    for q, a in value[:per]
                ]
                keys = [(normalized(c.question), "") for c in new]
            for candidate, key in zip(new, keys, strict=True):
                count.produced += 1
                if seen[key]:
                    count.duplicates += 1
                    continue
                seen[key] += 1
                drafts.append(Draft(candidate))
        count.kept = len(drafts)
        return drafts

    # ------------------------------------------------------------------ output

    def rows(self) -> list[dict[str, Any]]:
        out = []
        for draft in self.drafts:
            candidate = draft.candidate
            user = (
                f"{candidate.context}\n\n{candidate.question}"
                if candidate.context
                else candidate.question
            )
            messages = [{"role": "system", "content": self.settings.system_prompt}] * bool(
                self.settings.system_prompt
            )
            messages += [
                {"role": "user", "content": user},
                {"role": "assistant", "content": candidate.answer},
            ]
            row = {
                "messages": messages,
                "leaf": self.leaf.path,
                "branch": self.leaf.branch,
                "kind": self.leaf.kind,
                "document": candidate.document,
            }
            row.update({column: draft.scores.get(column) for column in SCORE_COLUMNS.values()})
            out.append(row)
        return out
