"""What every judge backend shares: its options, its request counters, and the two kinds of
judge the runner knows how to drive.

- `AsyncJudge` (`openai`): `async judge(sample)` one sample at a time, many in flight at once.
- `BatchJudge` (`hf`, `vllm`): `judge_batch(samples)` a batch at a time, in this process.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from ...errors import BackendError

__all__ = [
    "AsyncJudge",
    "BackendError",
    "BackendOptions",
    "BatchJudge",
    "Judge",
    "RequestStats",
]


@dataclass
class BackendOptions:
    model: str
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 16
    timeout: float = 60.0
    max_retries: int = 6
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    batch_size: int | None = None
    device: str = "auto"
    dtype: str = "auto"


@dataclass
class RequestStats:
    """Counters for the summary: requests sent, retries by cause, unparsable replies."""

    requests: int = 0
    retries: Counter = field(default_factory=Counter)
    unparsable: int = 0
    # --samples K: samples that got several replies, those whose replies were all the same text,
    # and requests for n > 1 completions answered with fewer (a server that ignores `n`)
    sampled: int = 0
    identical: int = 0
    ignored_n: int = 0

    def count_replies(self, tally) -> None:
        """Note whether a finished `VerbalizedTally`'s replies were all the same."""
        if tally.identical is not None:
            self.sampled += 1
            self.identical += tally.identical

    def describe(self) -> str:
        parts = [f"{self.requests} requests"]
        if self.retries:
            causes = ", ".join(f"{n} x {cause}" for cause, n in self.retries.most_common())
            parts.append(f"retried: {causes}")
        if self.unparsable:
            parts.append(f"{self.unparsable} unparsable replies")
        return "; ".join(parts)


class Judge(ABC):
    """A backend running one method over samples; `stats` feeds the run summary."""

    method: object
    stats: RequestStats

    @abstractmethod
    def describe(self) -> str:
        """Where the judge runs, for the line printed before the run (never the key)."""


class AsyncJudge(Judge):
    """Judges one sample per call; the runner keeps `--concurrency` calls in flight."""

    @abstractmethod
    async def judge(self, sample):
        """The sample's `Judgement` (a failed one for a row-level problem); raises
        `BackendError` to stop the run."""

    @abstractmethod
    async def aclose(self) -> None: ...


class BatchJudge(Judge):
    """Judges `batch_size` samples per call, in this process."""

    batch_size: int

    @abstractmethod
    def judge_batch(self, samples: Sequence) -> list:
        """One `Judgement` per sample, in order."""

    @abstractmethod
    def close(self) -> None: ...


def judge_verbalized_batch(method, samples, generate, stats: RequestStats):
    """Verbalized judgements for a batch of samples on a local model.

    `generate(conversations, n, temperature) -> list[list[str]]` returns `n` replies per
    conversation; samples that still need scores are asked again (see `drive_tallies`).
    """
    from ..methods import VerbalizedTally, drive_tallies

    tallies = [VerbalizedTally(method) for _ in samples]
    conversations = [method.messages(sample) for sample in samples]

    def ask(request: tuple[int, float], indices: list[int]) -> None:
        stats.requests += len(indices)
        replies = generate([conversations[i] for i in indices], *request)
        for index, texts in zip(indices, replies, strict=True):
            stats.unparsable += tallies[index].add(texts)

    judgements = drive_tallies(tallies, ask)
    for tally in tallies:
        stats.count_replies(tally)
    return judgements
