"""What every judge backend shares: its options, its request counters, its fatal error."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ...errors import BackendError

__all__ = ["BackendError", "BackendOptions", "RequestStats"]


@dataclass
class BackendOptions:
    model: str
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
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

    def describe(self) -> str:
        parts = [f"{self.requests} requests"]
        if self.retries:
            causes = ", ".join(f"{n} x {cause}" for cause, n in self.retries.most_common())
            parts.append(f"retried: {causes}")
        if self.unparsable:
            parts.append(f"{self.unparsable} unparsable replies")
        return "; ".join(parts)


def judge_verbalized_batch(method, samples, generate, stats: RequestStats):
    """Verbalized judgements for a batch of samples on a local model.

    `generate(conversations, n, temperature) -> list[list[str]]` returns `n` replies per
    conversation. Samples that still need scores (missing or unparsable) are asked again,
    grouped by what they ask for, following each sample's `VerbalizedTally`.
    """
    from ..methods import VerbalizedTally

    tallies = [VerbalizedTally(method) for _ in samples]
    conversations = [method.messages(sample) for sample in samples]
    while True:
        groups: dict[tuple[int, float], list[int]] = {}
        for index, tally in enumerate(tallies):
            if (request := tally.next_request()) is not None:
                groups.setdefault(request, []).append(index)
        if not groups:
            return [tally.judgement() for tally in tallies]
        for (n, temperature), indices in groups.items():
            stats.requests += len(indices)
            replies = generate([conversations[i] for i in indices], n, temperature)
            for index, texts in zip(indices, replies, strict=True):
                stats.unparsable += tallies[index].add(texts)
