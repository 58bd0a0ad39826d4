"""The teacher's and the judge's prompts for each step, and the strict parsing of their replies.

Written for this package (not InstructLab's text), after the steps of LAB's pipelines
(instructlab-sdg's `full` flows):

| step | who | asks for | reply |
|---|---|---|---|
| `contexts` | teacher | one new context like the grounded skill's seed contexts | `<context>..</context>` |
| `questions` | teacher | N new questions for the task (about a context, when grounded) | `<question>..</question>` x N |
| `question_filter` | judge | does the question fit the task, is it clear and harmless? | `<score>0 or 1</score>` |
| `answer` | teacher | the answer, in the style of the seed answers | `<answer>..</answer>` |
| `answer_rating` | judge | 1 wrong/unsafe, 2 correct but lacking, 3 right and complete | `<score>1-3</score>` |
| `knowledge_qa` | teacher | N question-answer pairs grounded on a document chunk | `<question>..</question><answer>..</answer>` x N |
| `faithfulness` | judge | is every claim of the answer in the chunk? | `<verdict>YES or NO</verdict>` |
| `relevancy` | judge | does the answer address the question, and only it? 0-2 | `<score>0-2</score>` |

A reply is usable only in that form: text outside the tags is ignored (the judge explains
itself first), a judge reply without exactly one readable verdict in range, a teacher reply with
no complete tagged item, or an empty item is unparsable (`Unparsable`, with the reason). The
prompt and parser versions are part of every cache key: changing a prompt regenerates what it
asked for.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from .taxonomy import KnowledgeSeed, Leaf, Seed

PROMPT_VERSION = "generate-prompts-1"
PARSER_VERSION = "generate-parser-1"

CONTEXTS, QUESTIONS, QUESTION_FILTER, ANSWER, ANSWER_RATING = (
    "contexts",
    "questions",
    "question_filter",
    "answer",
    "answer_rating",
)
KNOWLEDGE_QA, FAITHFULNESS, RELEVANCY = "knowledge_qa", "faithfulness", "relevancy"
JUDGE_STEPS = frozenset({QUESTION_FILTER, ANSWER_RATING, FAITHFULNESS, RELEVANCY})

TEACHER_SYSTEM = (
    "You write training data for a language model: new, varied, self-contained examples of a "
    "task, true to the instructions and in exactly the output format asked for."
)
JUDGE_SYSTEM = (
    "You review training data for a language model. You are strict and brief: one or two "
    "sentences of reasons, then your verdict in exactly the format asked for."
)

# The last line of each step's request: how the reply must be written. The loopback server
# (`fake_teacher`) recognizes the step by it.
FORMATS = {
    CONTEXTS: "Write the context between <context> and </context>, and nothing else.",
    QUESTIONS: "Write each question between <question> and </question>, and nothing else.",
    QUESTION_FILTER: "End with <score>1</score> to keep the question or <score>0</score> to drop it.",
    ANSWER: "Write the answer between <answer> and </answer>, and nothing else.",
    ANSWER_RATING: "End with your rating as <score>N</score>, N being 1, 2 or 3.",
    KNOWLEDGE_QA: "Write each pair as <question>...</question> followed by <answer>...</answer>.",
    FAITHFULNESS: "End with <verdict>YES</verdict> or <verdict>NO</verdict>.",
    RELEVANCY: "End with your score as <score>N</score>, N being 0, 1 or 2.",
}
SCORE_RANGES = {QUESTION_FILTER: (0, 1), ANSWER_RATING: (1, 3), RELEVANCY: (0, 2)}
EXAMPLES_SHOWN = 3  # seed examples shown per request, rotated so every seed is used


class Unparsable(ValueError):
    """A reply that is not in the form its step asked for; the message says why."""


@dataclass(frozen=True)
class Candidate:
    """One sample on its way through a leaf's steps: what is known of it so far."""

    context: str | None = None
    question: str | None = None
    answer: str | None = None
    document: str | None = None  # knowledge: the document the chunk comes from
    chunk: int | None = None  # knowledge: the chunk's index within the document


def rotate(items: Sequence, start: int, count: int = EXAMPLES_SHOWN) -> list:
    """`count` items from `start` on, wrapping around (all of them if there are fewer)."""
    if len(items) <= count:
        return list(items)
    return [items[(start + i) % len(items)] for i in range(count)]


def _chat(system: str, user: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def _skill_examples(seeds: Sequence[Seed], *, answers: bool = True) -> str:
    blocks = []
    for number, seed in enumerate(seeds, 1):
        lines = [f"Example {number}"]
        if seed.context:
            lines.append(f"Context:\n{seed.context}")
        lines.append(f"Question: {seed.question}")
        if answers:
            lines.append(f"Answer:\n{seed.answer}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _task(leaf: Leaf) -> str:
    return leaf.task_description or "(no description: infer the task from the examples)"


def contexts_messages(leaf: Leaf, round_: int) -> list[dict[str, str]]:
    seeds = rotate([s for s in leaf.seeds if s.context], round_)
    user = (
        f"The task:\n{_task(leaf)}\n\n"
        f"In this task a question is asked about a context. Examples:\n\n"
        f"{_skill_examples(seeds, answers=False)}\n\n"
        "Write one new context for this task: the same kind of text as the examples' contexts, "
        "of similar length, on a different subject from every example, complete enough that "
        "questions like the examples' can be answered from it alone. Do not write a question.\n"
        f"{FORMATS[CONTEXTS]}"
    )
    return _chat(TEACHER_SYSTEM, user)


def questions_messages(leaf: Leaf, round_: int, count: int, context: str | None):
    seeds = rotate(leaf.seeds, round_)
    about = (
        f"Here is a new context:\n{context}\n\nWrite {count} new questions that this task would "
        "ask about the context above, each answerable from it."
        if context is not None
        else f"Write {count} new questions for this task."
    )
    user = (
        f"The task:\n{_task(leaf)}\n\nExamples:\n\n{_skill_examples(seeds)}\n\n{about} Each "
        "question must stand on its own, differ from the examples and from the other questions "
        "in subject and wording, and be something a user could really ask. Do not answer them.\n"
        f"{FORMATS[QUESTIONS]}"
    )
    return _chat(TEACHER_SYSTEM, user)


def _given(candidate: Candidate) -> str:
    context = f"Context:\n{candidate.context}\n\n" if candidate.context else ""
    return f"{context}Question: {candidate.question}"


def question_filter_messages(leaf: Leaf, candidate: Candidate):
    grounded = " and the context" if candidate.context else ""
    user = (
        f"A question was written for this task:\n{_task(leaf)}\n\n{_given(candidate)}\n\n"
        "Should it be kept as training data? Keep it only if it asks for what the task "
        f"describes, it is clear and complete (it can be answered from what it says{grounded}), "
        f"and answering it does no harm.\n{FORMATS[QUESTION_FILTER]}"
    )
    return _chat(JUDGE_SYSTEM, user)


def answer_messages(leaf: Leaf, candidate: Candidate, position: int):
    seeds = rotate(leaf.seeds, position)
    user = (
        f"The task:\n{_task(leaf)}\n\nExamples of questions and their answers:\n\n"
        f"{_skill_examples(seeds)}\n\nNow answer this one the way the examples are answered: "
        "the same style, format and level of detail, correct and complete.\n\n"
        f"{_given(candidate)}\n\n{FORMATS[ANSWER]}"
    )
    return _chat(TEACHER_SYSTEM, user)


def answer_rating_messages(leaf: Leaf, candidate: Candidate):
    user = (
        f"The task:\n{_task(leaf)}\n\n{_given(candidate)}\n\nAnswer:\n{candidate.answer}\n\n"
        "Rate the answer. 1: wrong, harmful, or not an answer to the question. 2: correct, but "
        "incomplete, careless, or not in the form the task asks for. 3: correct, complete and "
        f"well written for the task.\n{FORMATS[ANSWER_RATING]}"
    )
    return _chat(JUDGE_SYSTEM, user)


def _knowledge_examples(seeds: Sequence[KnowledgeSeed]) -> str:
    blocks = []
    for number, seed in enumerate(seeds, 1):
        pairs = "\n".join(f"Question: {q}\nAnswer: {a}" for q, a in seed.pairs)
        blocks.append(f"Example {number}\nExcerpt:\n{seed.context}\n{pairs}")
    return "\n\n".join(blocks)


def knowledge_qa_messages(leaf: Leaf, chunk: str, round_: int, count: int):
    seeds = rotate(leaf.knowledge_seeds, round_)
    user = (
        f"Domain: {leaf.domain}\nThe document: {leaf.document_outline}\n\n"
        "Examples of questions answered from an excerpt of the document:\n\n"
        f"{_knowledge_examples(seeds)}\n\nHere is another excerpt of the document:\n{chunk}\n\n"
        f"Write {count} new question-answer pairs about this excerpt, like the examples: each "
        "question answerable from the excerpt alone and different from the others, each answer "
        "saying only what the excerpt says.\n"
        f"{FORMATS[KNOWLEDGE_QA]}"
    )
    return _chat(TEACHER_SYSTEM, user)


def faithfulness_messages(candidate: Candidate):
    user = (
        f"Excerpt of a document:\n{candidate.context}\n\nQuestion: {candidate.question}\n"
        f"Answer: {candidate.answer}\n\nIs everything the answer states supported by the "
        f"excerpt (nothing added, nothing contradicted)?\n{FORMATS[FAITHFULNESS]}"
    )
    return _chat(JUDGE_SYSTEM, user)


def relevancy_messages(candidate: Candidate):
    user = (
        f"Question: {candidate.question}\nAnswer: {candidate.answer}\n\nDoes the answer address "
        "the question? 0: it does not. 1: partly, or with much that was not asked. 2: fully, "
        f"and only what was asked.\n{FORMATS[RELEVANCY]}"
    )
    return _chat(JUDGE_SYSTEM, user)


# --------------------------------------------------------------------------- parsing

THINK = re.compile(r"<think>.*?</think>", re.S | re.I)
_INSIDE = r"(?:(?!</?(?:question|answer)>).)*?"  # text holding no question or answer tag


def _tagged(text: str, tag: str) -> list[str]:
    """The contents of every complete `<tag>...</tag>` (holding no other such tag), stripped."""
    inside = rf"(?:(?!</?{tag}>).)*?"
    return [m.strip() for m in re.findall(rf"<{tag}>({inside})</{tag}>", text, re.S | re.I)]


def _clean(text: str) -> str:
    return THINK.sub("", text)


def _some(items: list[str], tag: str) -> list[str]:
    kept = [item for item in items if item]
    if not kept:
        raise Unparsable(f"no non-empty <{tag}>...</{tag}> in the reply")
    return kept


def parse_items(step: str, text: str) -> list[str]:
    """`contexts` / `questions`: the tagged items."""
    tag = "context" if step == CONTEXTS else "question"
    return _some(_tagged(_clean(text), tag), tag)


def parse_answer(text: str) -> str:
    answers = _tagged(_clean(text), "answer")
    if len(answers) != 1 or not answers[0]:
        found = f"{len(answers)} <answer> blocks" if answers else "no complete <answer>...</answer>"
        raise Unparsable(f"{found} in the reply (one is asked for)")
    return answers[0]


def parse_pairs(text: str) -> list[tuple[str, str]]:
    """`knowledge_qa`: each `<question>` directly followed by its `<answer>`."""
    pattern = re.compile(
        rf"<question>({_INSIDE})</question>\s*<answer>({_INSIDE})</answer>", re.S | re.I
    )
    pairs = [(q.strip(), a.strip()) for q, a in pattern.findall(_clean(text))]
    pairs = [(q, a) for q, a in pairs if q and a]
    if not pairs:
        raise Unparsable("no <question>...</question> followed by <answer>...</answer>")
    return pairs


def parse_score(step: str, text: str) -> int:
    """A judge's `<score>N</score>`: exactly one (the last one counts if it repeats the same
    number), an integer in the step's range."""
    low, high = SCORE_RANGES[step]
    found = _tagged(_clean(text), "score")
    if not found:
        raise Unparsable("no <score>...</score> in the reply")
    if len(set(found)) > 1:
        raise Unparsable(f"several different scores {found}")
    value = found[-1]
    if not re.fullmatch(r"\d+", value) or not low <= int(value) <= high:
        raise Unparsable(f"score {value!r} is not an integer from {low} to {high}")
    return int(value)


def parse_verdict(text: str) -> bool:
    found = {v.upper() for v in _tagged(_clean(text), "verdict")}
    if found == {"YES"}:
        return True
    if found == {"NO"}:
        return False
    raise Unparsable(
        "no <verdict>YES</verdict> or <verdict>NO</verdict>" if not found else f"verdicts {found}"
    )
