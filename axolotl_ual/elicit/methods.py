"""The three ways of eliciting a sample's uncertainty, independent of the backend that runs them.

- `verbalized`: the judge states a score from 1 to 10; K samples are averaged;
  u = (mean - 1) / 9. Raw score column: the mean score.
- `logprob`: the judge answers one digit from 0 to 9; the score is the expectation of the digit
  under the judge's own probabilities over the digit tokens; u = E[digit] / 9. Continuous and
  better calibrated than a single sampled number. Raw score column: E[digit].
- `entropy` (white-box, local model): the mean per-token predictive entropy H of the sample's
  response tokens; u = H / log(V), V the number of logits (so 1 means uniform over the
  vocabulary). Raw score column: H in nats.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .chat_render import encode_response
from .prompts import (
    LOGPROB_SCALE,
    PARSER_VERSION,
    PROMPT_VERSION,
    VERBALIZED_SCALE,
    Scale,
    TokenPosition,
    expected_digit,
    judge_messages,
    parse_score,
)
from .samples import Sample

VERBALIZED, LOGPROB, ENTROPY = "verbalized", "logprob", "entropy"
METHODS = (VERBALIZED, LOGPROB, ENTROPY)
# An unparsable reply is asked again with at least this temperature, so the retry can differ.
RETRY_TEMPERATURE = 0.7
DEFAULT_MIN_DIGIT_MASS = 0.5


@dataclass
class Judgement:
    """The outcome for one sample: a score and its uncertainty, or the reason there is none."""

    score: float | None = None
    uncertainty: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    # Failed because the judge could not be reached or kept refusing (timeouts, 429, 5xx),
    # not because of this sample: many of these in a row mean the server is down.
    transient: bool = False

    @property
    def ok(self) -> bool:
        return self.uncertainty is not None

    @classmethod
    def failed(
        cls, error: str, *, transient: bool = False, detail: dict[str, Any] | None = None
    ) -> Judgement:
        return cls(error=error, transient=transient, detail=detail or {})


def _preview(replies: Sequence[str | None], missing: str | None = None) -> str:
    """The first reply with text, shortened; else what was wrong with the replies."""
    text = " ".join(next((r for r in replies if r and r.strip()), "").split())
    if text:
        return repr(text[:60] + ("..." if len(text) > 60 else ""))
    return missing or "empty replies"


@dataclass(frozen=True)
class JudgeQuestion:
    """A method that asks the judge about the sample (verbalized, logprob)."""

    parse_retries: int = 3
    max_chars: int = 16000
    scale: ClassVar[Scale]

    def messages(self, sample: Sample) -> list[dict[str, str]]:
        return judge_messages(sample, self.scale, self.max_chars)


@dataclass(frozen=True)
class Verbalized(JudgeQuestion):
    samples: int = 1
    temperature: float = 0.0
    max_tokens: int = 16
    name: str = VERBALIZED
    scale: ClassVar[Scale] = VERBALIZED_SCALE

    def identity(self) -> dict[str, Any]:
        return {
            "method": self.name,
            "samples": self.samples,
            "temperature": self.temperature,
            "prompt": PROMPT_VERSION,
            "parser": PARSER_VERSION,
        }

    def retry_temperature(self) -> float:
        return max(self.temperature, RETRY_TEMPERATURE)

    def reusable(self, judgement: Judgement) -> bool:
        return True

    def judgement(
        self, scores: Sequence[float], replies: Sequence[str | None], missing: str | None = None
    ) -> Judgement:
        if not scores:
            return Judgement.failed(
                f"no score in {len(replies)} replies: {_preview(replies, missing)}"
            )
        mean = math.fsum(scores) / len(scores)
        return Judgement(mean, self.scale.uncertainty(mean), {"scores": list(scores)})


@dataclass(frozen=True)
class Logprob(JudgeQuestion):
    top_logprobs: int = 20
    # Below this probability on the digit tokens the judge is not answering with a score: the
    # row is null (see docs/elicit.md for the default). Not part of the cache key: cached
    # scores are checked against it when reused.
    min_digit_mass: float = DEFAULT_MIN_DIGIT_MASS
    # A few tokens, so a reply starting with a space, quote or "**" still reaches its digit.
    max_tokens: int = 4
    name: str = LOGPROB
    scale: ClassVar[Scale] = LOGPROB_SCALE

    def identity(self) -> dict[str, Any]:
        return {"method": self.name, "top_logprobs": self.top_logprobs, "prompt": PROMPT_VERSION}

    def retry_temperature(self) -> float:
        return RETRY_TEMPERATURE

    def judgement(
        self, positions: Sequence[TokenPosition], reply: str | None, missing: str | None = None
    ) -> Judgement:
        found = expected_digit(positions)
        if found is None:
            return Judgement.failed(f"no digit token in the reply: {_preview([reply], missing)}")
        return self.from_digits(*found)

    def from_digits(self, expected: float, mass: float) -> Judgement:
        """The judgement of an expected digit read where `mass` of the probability is on the
        digit tokens: null when that is below `min_digit_mass` (the mass is kept either way)."""
        detail = {"digit_mass": mass}
        if not mass >= self.min_digit_mass:  # NaN included
            return Judgement.failed(
                f"only {mass:.1%} of the judge's probability is on the digit tokens (below "
                f"--min-digit-mass {self.min_digit_mass:g}): its answer is not a score",
                detail=detail,
            )
        return Judgement(expected, self.scale.uncertainty(expected), detail)

    def reusable(self, judgement: Judgement) -> bool:
        """Whether a cached judgement still passes `min_digit_mass`."""
        return judgement.detail.get("digit_mass", 1.0) >= self.min_digit_mass


class VerbalizedTally:
    """One sample's verbalized scores, gathered over as many requests as it takes.

    Asks for the K samples at once (`n`), then again for any that were missing or unparsable;
    after more than `parse_retries` unparsable replies it stops and averages what it has.
    Every backend drives it the same way: `while req := tally.next_request(): ...`.
    """

    def __init__(self, method: Verbalized):
        self.method = method
        self.scores: list[float] = []
        self.unparsable: list[str | None] = []
        self.missing: str | None = None  # what was wrong with replies that had no text
        self.replies: list[str] = []  # every reply's text, to tell sampling from repetition

    def next_request(self) -> tuple[int, float] | None:
        """(how many completions to ask for, temperature), or None when done."""
        missing = self.method.samples - len(self.scores)
        if missing <= 0 or len(self.unparsable) > self.method.parse_retries:
            return None
        temperature = (
            self.method.retry_temperature() if self.unparsable else self.method.temperature
        )
        return missing, temperature

    def add(self, replies: Sequence[str | None], missing: str | None = None) -> int:
        """Parse `replies` (an empty list counts as one empty reply); returns how many failed.

        `missing` says what was wrong with the replies that have no text (None), for the error.
        """
        failed = 0
        if missing and any(reply is None for reply in replies):
            self.missing = missing
        for reply in list(replies) or [None]:
            self.replies.append(" ".join((reply or "").split()))
            score = parse_score(reply, self.method.scale.low, self.method.scale.high)
            if score is None:
                self.unparsable.append(reply)
                failed += 1
            elif len(self.scores) < self.method.samples:
                self.scores.append(score)
        return failed

    @property
    def identical(self) -> bool | None:
        """Whether all of several replies were the same text (None: fewer than two)."""
        return len(set(self.replies)) == 1 if len(self.replies) > 1 else None

    def judgement(self) -> Judgement:
        return self.method.judgement(self.scores, self.unparsable, self.missing)


class LogprobTally:
    """One sample's logprob answer: retried (sampling) while no generated token is a digit."""

    def __init__(self, method: Logprob):
        self.method = method
        self.attempts = 0
        self.result: Judgement | None = None

    def next_request(self) -> float | None:
        """The temperature of the next request, or None when done: scored, or read with too
        little mass on the digits (asking again would only sample until one looks better)."""
        read = self.result is not None and "digit_mass" in self.result.detail
        if read or self.attempts > self.method.parse_retries:
            return None
        return 0.0 if self.attempts == 0 else self.method.retry_temperature()

    def add(
        self, positions: Sequence[TokenPosition], reply: str | None, missing: str | None = None
    ) -> bool:
        """Record one reply; returns whether it gave a score."""
        self.attempts += 1
        self.result = self.method.judgement(positions, reply, missing if reply is None else None)
        return self.result.ok

    def judgement(self) -> Judgement:
        return self.result or Judgement.failed("no reply")


def drive_tallies(tallies: Sequence, ask) -> list[Judgement]:
    """Run every tally to its judgement, asking for what they need in as few calls as possible.

    Each round, the tallies whose `next_request()` is the same (e.g. `(n, temperature)`) are
    asked together: `ask(request, indices)` sends one batch for `tallies[i] for i in indices` and
    feeds each tally its replies. A local backend's batches are grouped this way.
    """
    while True:
        groups: dict[Any, list[int]] = {}
        for index, tally in enumerate(tallies):
            if (request := tally.next_request()) is not None:
                groups.setdefault(request, []).append(index)
        if not groups:
            return [tally.judgement() for tally in tallies]
        for request, indices in groups.items():
            ask(request, indices)


@dataclass(frozen=True)
class Entropy:
    max_length: int = 4096
    # vLLM gives only the top logprobs of each prompt token: see `entropy_from_top_logprobs`.
    top_logprobs: int = 20
    name: str = ENTROPY

    def identity(self) -> dict[str, Any]:
        return {
            "method": self.name,
            "max_length": self.max_length,
            "top_logprobs": self.top_logprobs,
        }

    def reusable(self, judgement: Judgement) -> bool:
        return True

    def encode(self, tokenizer, sample: Sample) -> tuple[list[int], list[bool]]:
        """Token ids of the sample and, per token, whether it is a response token (what H is
        measured over; see `chat_render.encode_response`)."""
        messages = [{"role": m.role, "content": m.content} for m in sample.messages]
        return encode_response(tokenizer, messages, self.max_length)

    @staticmethod
    def measurable(encoded: Sequence[tuple[list[int], list[bool]]]) -> list[int]:
        """Indices of the encoded samples with a response token to measure (past the first)."""
        return [index for index, (_, mask) in enumerate(encoded) if any(mask[1:])]

    @staticmethod
    def no_response() -> Judgement:
        return Judgement.failed(
            "no response tokens to measure (no assistant turn, or all of it beyond --max-length)"
        )

    @staticmethod
    def judgement(mean_entropy: float, vocab_size: int, tokens: int) -> Judgement:
        if not tokens or not math.isfinite(mean_entropy):
            return Judgement.failed(f"no finite entropy over {tokens} response tokens")
        u = min(max(mean_entropy / math.log(vocab_size), 0.0), 1.0)
        return Judgement(mean_entropy, u, {"tokens": tokens, "vocab_size": vocab_size})
