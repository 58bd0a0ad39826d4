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

from .prompts import (
    LOGPROB_SCALE,
    PROMPT_VERSION,
    VERBALIZED_SCALE,
    Scale,
    TokenPosition,
    expected_digit,
    judge_messages,
    parse_score,
)
from .samples import ASSISTANT, Sample

VERBALIZED, LOGPROB, ENTROPY = "verbalized", "logprob", "entropy"
METHODS = (VERBALIZED, LOGPROB, ENTROPY)
# An unparsable reply is asked again with at least this temperature, so the retry can differ.
RETRY_TEMPERATURE = 0.7


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
    def failed(cls, error: str, *, transient: bool = False) -> Judgement:
        return cls(error=error, transient=transient)


def _preview(replies: Sequence[str | None]) -> str:
    text = next((r for r in replies if r), "")
    text = " ".join(text.split())
    return repr(text[:60] + ("..." if len(text) > 60 else "")) if text else "empty replies"


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
        }

    def retry_temperature(self) -> float:
        return max(self.temperature, RETRY_TEMPERATURE)

    def judgement(self, scores: Sequence[float], replies: Sequence[str | None]) -> Judgement:
        if not scores:
            return Judgement.failed(f"no score in {len(replies)} replies: {_preview(replies)}")
        mean = math.fsum(scores) / len(scores)
        return Judgement(mean, self.scale.uncertainty(mean), {"scores": list(scores)})


@dataclass(frozen=True)
class Logprob(JudgeQuestion):
    top_logprobs: int = 20
    # A few tokens, so a reply starting with a space, quote or "**" still reaches its digit.
    max_tokens: int = 4
    name: str = LOGPROB
    scale: ClassVar[Scale] = LOGPROB_SCALE

    def identity(self) -> dict[str, Any]:
        return {"method": self.name, "top_logprobs": self.top_logprobs, "prompt": PROMPT_VERSION}

    def retry_temperature(self) -> float:
        return RETRY_TEMPERATURE

    def judgement(self, positions: Sequence[TokenPosition], reply: str | None) -> Judgement:
        found = expected_digit(positions)
        if found is None:
            return Judgement.failed(f"no digit token in the reply {_preview([reply])}")
        expected, mass = found
        return Judgement(expected, self.scale.uncertainty(expected), {"digit_mass": mass})


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

    def next_request(self) -> tuple[int, float] | None:
        """(how many completions to ask for, temperature), or None when done."""
        missing = self.method.samples - len(self.scores)
        if missing <= 0 or len(self.unparsable) > self.method.parse_retries:
            return None
        temperature = (
            self.method.retry_temperature() if self.unparsable else self.method.temperature
        )
        return missing, temperature

    def add(self, replies: Sequence[str | None]) -> int:
        """Parse `replies` (an empty list counts as one empty reply); returns how many failed."""
        failed = 0
        for reply in list(replies) or [None]:
            score = parse_score(reply, self.method.scale.low, self.method.scale.high)
            if score is None:
                self.unparsable.append(reply)
                failed += 1
            elif len(self.scores) < self.method.samples:
                self.scores.append(score)
        return failed

    def judgement(self) -> Judgement:
        return self.method.judgement(self.scores, self.unparsable)


class LogprobTally:
    """One sample's logprob answer: retried (sampling) while no generated token is a digit."""

    def __init__(self, method: Logprob):
        self.method = method
        self.attempts = 0
        self.result: Judgement | None = None

    def next_request(self) -> float | None:
        """The temperature of the next request, or None when done."""
        if (
            self.result is not None and self.result.ok
        ) or self.attempts > self.method.parse_retries:
            return None
        return 0.0 if self.attempts == 0 else self.method.retry_temperature()

    def add(self, positions: Sequence[TokenPosition], reply: str | None) -> bool:
        """Record one reply; returns whether it gave a score."""
        self.attempts += 1
        self.result = self.method.judgement(positions, reply)
        return self.result.ok

    def judgement(self) -> Judgement:
        return self.result or Judgement.failed("no reply")


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

    def encode(self, tokenizer, sample: Sample) -> tuple[list[int], list[bool]]:
        """Token ids of the rendered sample and, per token, whether it belongs to a response.

        With a chat template, a response is everything an assistant turn adds to the rendered
        conversation (its content and the template's end-of-turn marker); without one, the
        sample is rendered as `### Role:` blocks and a response is the assistant's content.
        Samples longer than `max_length` tokens are cut at the end.
        """
        messages = [{"role": m.role, "content": m.content} for m in sample.messages]
        if getattr(tokenizer, "chat_template", None):
            text, spans = _render_chat(tokenizer, messages)
            add_special_tokens = False  # the template writes its own BOS, if the model has one
        else:
            text, spans = render_plain(messages)
            add_special_tokens = True
        try:
            encoded = tokenizer(
                text,
                add_special_tokens=add_special_tokens,
                truncation=True,
                max_length=self.max_length,
                return_offsets_mapping=True,
            )
        except NotImplementedError:  # slow tokenizers have no offsets
            return _encode_by_prefixes(tokenizer, text, spans, add_special_tokens, self.max_length)
        mask = [
            end > start and any(lo <= start < hi for lo, hi in spans)
            for start, end in encoded["offset_mapping"]
        ]
        return list(encoded["input_ids"]), mask

    @staticmethod
    def judgement(mean_entropy: float, vocab_size: int, tokens: int) -> Judgement:
        if not tokens or not math.isfinite(mean_entropy):
            return Judgement.failed(f"no finite entropy over {tokens} response tokens")
        u = min(max(mean_entropy / math.log(vocab_size), 0.0), 1.0)
        return Judgement(mean_entropy, u, {"tokens": tokens, "vocab_size": vocab_size})


def _render_chat(tokenizer, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The chat-templated text and the character spans of its assistant turns."""
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    spans: list[tuple[int, int]] = []
    cursor = 0
    for index, message in enumerate(messages):
        if message["role"] != ASSISTANT:
            continue
        span = None
        if index:
            try:
                before = tokenizer.apply_chat_template(
                    messages[:index], tokenize=False, add_generation_prompt=True
                )
                through = tokenizer.apply_chat_template(messages[: index + 1], tokenize=False)
            except Exception:  # noqa: BLE001 - some templates reject partial conversations
                before = through = None
            if (
                before is not None
                and through is not None
                and through.startswith(before)
                and full.startswith(through)
                and len(before) >= cursor
            ):
                # what training learns: the content and the turn's end token, not the
                # whitespace some templates write after it (e.g. chatml's "\n" after
                # <|im_end|>, which axolotl leaves untrained)
                end = len(through.rstrip())
                span = (len(before), max(end, len(before)))
        if span is None:  # a template that rewrites earlier turns: find the content itself
            start = full.find(message["content"], cursor)
            if start < 0 or not message["content"]:
                continue
            span = (start, start + len(message["content"]))
        spans.append(span)
        cursor = span[1]
    return full, spans


def render_plain(messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """`### Role:` blocks for models without a chat template, and the assistant content spans."""
    text, spans = "", []
    for message in messages:
        text += f"### {message['role'].capitalize()}:\n"
        if message["role"] == ASSISTANT:
            spans.append((len(text), len(text) + len(message["content"])))
        text += message["content"] + "\n\n"
    return text, spans


def _encode_by_prefixes(tokenizer, text, spans, add_special_tokens, max_length):
    def count(prefix: str) -> int:
        return len(tokenizer(prefix, add_special_tokens=add_special_tokens)["input_ids"])

    ids = tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"][:max_length]
    mask = [False] * len(ids)
    for lo, hi in spans:
        for position in range(count(text[:lo]), min(count(text[:hi]), len(ids))):
            mask[position] = True
    return list(ids), mask


def mean_response_entropy(logits, input_mask) -> list[tuple[float, int]]:
    """Per batch row: (mean entropy in nats over the masked tokens' predictions, token count).

    `logits` [B, T, V] from a forward pass over the batch; `input_mask` [B, T] bool, true for
    response tokens. Token t is predicted by the logits at t - 1, so the first token never counts.
    """
    import torch

    predicted = input_mask[:, 1:].to(logits.device)
    rows = torch.arange(logits.shape[0], device=logits.device)[:, None].expand_as(predicted)
    row_of = rows[predicted]
    selected = logits[:, :-1][predicted]  # [N, V], only the positions that count
    entropies = torch.empty(selected.shape[0], dtype=torch.float64, device=logits.device)
    for start in range(0, selected.shape[0], 1024):  # float32 copies of a chunk at a time
        chunk = torch.log_softmax(selected[start : start + 1024].float(), dim=-1)
        entropies[start : start + 1024] = -(chunk.exp() * chunk).sum(-1).double()
    sums = torch.zeros(logits.shape[0], dtype=torch.float64, device=logits.device)
    sums.index_add_(0, row_of, entropies)
    counts = predicted.sum(1)
    return [
        (float(s) / int(c) if int(c) else math.nan, int(c))
        for s, c in zip(sums, counts, strict=True)
    ]


def entropy_from_top_logprobs(logprobs: Sequence[float], vocab_size: int) -> float:
    """Entropy (nats) of a distribution known only by its top logprobs.

    The probability left over, 1 - sum(top), is spread evenly over the other tokens: the largest
    entropy consistent with what is known, exact when the top tokens hold all the mass.
    """
    probs = [(math.exp(lp), lp) for lp in logprobs if lp is not None and math.isfinite(lp)]
    entropy = -math.fsum(p * lp for p, lp in probs)
    rest_mass = 1.0 - math.fsum(p for p, _ in probs)
    rest_tokens = vocab_size - len(probs)
    if rest_mass > 1e-12 and rest_tokens > 0:
        entropy -= rest_mass * math.log(rest_mass / rest_tokens)
    return entropy
