"""Judge prompts and the parsing of the judge's replies.

The judge rates the *intrinsic* uncertainty of the task a sample poses (how much valid answers
could differ, how likely an answer is to be wrong), not the quality of the given answer.

Two scales:

- `verbalized` asks for an integer from 1 to 10 and parses the reply text.
- `logprob` asks for a single digit from 0 to 9, so that every score is exactly one token in
  every tokenizer ("10" is two tokens in many), and reads the probabilities the judge puts on
  the ten digit tokens.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .samples import Sample


@dataclass(frozen=True)
class Scale:
    low: int
    high: int
    low_means: str
    high_means: str
    answer_format: str

    def uncertainty(self, score: float) -> float:
        """The score mapped linearly onto [0, 1]."""
        return (score - self.low) / (self.high - self.low)


VERBALIZED_SCALE = Scale(
    1,
    10,
    low_means="exactly one correct answer that every expert would give, with no doubt about "
    "it (e.g. simple arithmetic, a well-known fact)",
    high_means="extremely open-ended or ambiguous: many very different answers are equally "
    "valid, or any answer is likely to be wrong or disputed",
    answer_format="Reply with the score only: one integer from 1 to 10, nothing else.",
)
LOGPROB_SCALE = Scale(
    0,
    9,
    low_means=VERBALIZED_SCALE.low_means,
    high_means=VERBALIZED_SCALE.high_means,
    answer_format="Reply with the score only: a single digit from 0 to 9, nothing else.",
)

SYSTEM_PROMPT = (
    "You are an expert data annotator. You estimate how intrinsically uncertain the tasks in a "
    "language-model training set are, so that training can trust the certain ones more. You "
    "answer with a number only."
)

USER_TEMPLATE = """\
Rate the intrinsic uncertainty of the task in the training sample below.

Intrinsic uncertainty is a property of the task itself, not of how well the sample's answer is written. Consider:
- How much could different correct, high-quality answers differ from each other? A closed question with one right answer is low; creative writing, advice, brainstorming and opinions are high.
- How likely is it that a careful expert's answer (including the one given) is wrong or disputed? Ambiguous or underspecified requests, missing context, contested or fast-changing facts, and hard multi-step reasoning raise it.

Scale:
{low} = {low_means}
{high} = {high_means}
Use the whole range.

<sample>
{transcript}
</sample>

{answer_format}"""

# Part of the cache key: editing the prompts invalidates cached scores instead of mixing them.
PROMPT_VERSION = hashlib.sha256(
    (SYSTEM_PROMPT + USER_TEMPLATE + repr(VERBALIZED_SCALE) + repr(LOGPROB_SCALE)).encode()
).hexdigest()[:12]


def _clip(text: str, limit: int) -> str:
    """`text` cut to about `limit` characters, keeping its start and its end."""
    if len(text) <= limit:
        return text
    keep = max(limit // 2, 1)
    omitted = len(text) - 2 * keep
    return f"{text[:keep]}\n[... {omitted} characters omitted ...]\n{text[-keep:]}"


def transcript(sample: Sample, max_chars: int) -> str:
    """The sample as `### Role` blocks, long messages shortened to fit `max_chars` in all."""
    per_message = max(max_chars // max(len(sample.messages), 1), 200)
    blocks = [
        f"### {m.role.capitalize()}\n{_clip(m.content, per_message)}" for m in sample.messages
    ]
    return "\n\n".join(blocks)


def judge_messages(sample: Sample, scale: Scale, max_chars: int) -> list[dict[str, str]]:
    """The chat messages asking the judge to rate `sample` on `scale`."""
    user = USER_TEMPLATE.format(
        low=scale.low,
        high=scale.high,
        low_means=scale.low_means,
        high_means=scale.high_means,
        transcript=transcript(sample, max_chars),
        answer_format=scale.answer_format,
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


# --------------------------------------------------------------------------- reply parsing

# Part of the verbalized cache key: scores read by an older, looser parser are not reused.
PARSER_VERSION = 2

_NUMBER = r"-?\d+(?:\.\d+)?"
_DECORATION = "\\s*_`'\"#([{"
_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.S | re.I)
_NOT_A_RANGE = r"(?!\s*(?:-|\u2013|to\b|or\b)\s*\d)"  # "7-8", "7 or 8": no single score
_LABELLED = re.compile(
    rf"\b(?:score|rating|uncertainty(?=\s*[:=]))\b[{_DECORATION}]*(?:is|of|=|:)?[{_DECORATION}]*"
    rf"({_NUMBER}){_NOT_A_RANGE}",
    re.I,
)
_OUT_OF = re.compile(rf"({_NUMBER})\s*(?:/|out\s+of)\s*(\d+)\b", re.I)
_ALONE_ON_FIRST_LINE = re.compile(rf"^[{_DECORATION}]*({_NUMBER})[\s*_`'\")\]}}.]*$")


def parse_score(text: str | None, low: int, high: int) -> float | None:
    """The score in a judge's reply, or None when the reply is not a score in one of the forms
    below, or its score is outside [low, high].

    Read, in this order of precedence: a labelled score ("Score: 7", "rating is **7**",
    "Uncertainty: 3"; the last one wins), a fraction of the scale's top ("7/10", "7 out of 10"),
    a number alone on the first line, optionally decorated ("7", "**7**", "7.", '"7"'; what
    follows on later lines is its explanation). Anything else is unparsable, however many
    numbers it holds: "There are 2 valid answers" is not a 2, and "{6~" is not a 6. A range
    ("Score: 7-8") is not a score; a score outside the scale ("11", "0" on 1-10) is rejected,
    not clamped; reasoning in <think> tags is ignored.
    """
    if not text:
        return None
    text = _THINK.sub("", text).strip()
    if not text:
        return None
    candidate: str | None = None
    if labelled := _LABELLED.findall(text):
        candidate = labelled[-1]
    elif fractions := [num for num, den in _OUT_OF.findall(text) if int(den) == high]:
        candidate = fractions[-1]
    elif alone := _ALONE_ON_FIRST_LINE.match(text.splitlines()[0].strip()):
        candidate = alone.group(1)
    if candidate is None:
        return None
    score = float(candidate)
    return score if low <= score <= high else None


def token_digit(token: str | None) -> int | None:
    """The digit a token stands for ("7", " 7", "**7"), or None."""
    if token is None:
        return None
    stripped = token.strip().strip("*_`'\"")
    if len(stripped) == 1 and stripped in "0123456789":
        return int(stripped)
    return None


@dataclass(frozen=True)
class TokenPosition:
    """One generated token and the judge's top alternatives there (token text, logprob)."""

    token: str
    logprob: float
    alternatives: Sequence[tuple[str, float]]


def expected_digit(positions: Iterable[TokenPosition]) -> tuple[float, float] | None:
    """(expected score, probability mass on digit tokens) at the first position where the judge
    chose a digit, with the probabilities renormalized over the digit tokens seen there.

    Only the top alternatives are known through an API, so digits outside them count as zero.
    None when no generated token is a digit.
    """
    for position in positions:
        if token_digit(position.token) is None:
            continue
        seen = list(position.alternatives)
        if all(token != position.token for token, _ in seen):
            seen.append((position.token, position.logprob))
        mass = [0.0] * 10
        for token, logprob in seen:
            digit = token_digit(token)
            if digit is not None and logprob is not None and math.isfinite(logprob):
                mass[digit] += math.exp(logprob)
        total = sum(mass)
        if total <= 0.0:
            return None
        return sum(d * p for d, p in enumerate(mass)) / total, total
    return None
