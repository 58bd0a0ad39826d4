"""Prompts with a known response distribution, and seeded splits of them.

A prompt carries its exact p(y | x): a low-entropy prompt a single response with probability 1,
a high-entropy prompt a finite list of responses with known probabilities; a row's response is
one draw from it. That makes exact what a real dataset only approximates: each row's
conditional entropy, the held-out metrics against the truth, and what a perfect model outputs.

Pure Python and seeded by the caller (`random.Random` with string seeds, which do not depend on
PYTHONHASHSEED).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

LOW = "low"  # one correct answer
HIGH = "high"  # answers drawn from a known distribution


@dataclass(frozen=True)
class Prompt:
    """A user message and its true response distribution p(y | message)."""

    task: str
    kind: str
    text: str
    responses: tuple[str, ...]
    probs: tuple[float, ...]

    def __post_init__(self):
        if len(set(self.responses)) != len(self.responses):
            raise ValueError(f"{self.task}: two options are the same string: {self.responses}")
        if abs(sum(self.probs) - 1.0) > 1e-12 or min(self.probs) <= 0:
            raise ValueError(f"{self.task}: probabilities must be positive and sum to 1")

    @property
    def entropy(self) -> float:
        """H(Y | x) in nats: what an ideal model's cross entropy on this prompt would be."""
        return entropy(self.probs)

    def sample(self, rng: random.Random) -> str:
        if len(self.responses) == 1:
            return self.responses[0]
        return rng.choices(self.responses, weights=self.probs)[0]


def entropy(probs: Iterable[float]) -> float:
    return 0.0 - sum(p * math.log(p) for p in probs if p > 0)  # 0.0, not -0.0, for one answer


def uniform(options: Iterable[str]) -> tuple[tuple[str, ...], tuple[float, ...]]:
    options = tuple(options)
    return options, (1.0 / len(options),) * len(options)


def zipf(options: Iterable[str]) -> tuple[tuple[str, ...], tuple[float, ...]]:
    options = tuple(options)
    weights = [1.0 / (rank + 1) for rank in range(len(options))]
    total = sum(weights)
    return options, tuple(w / total for w in weights)


def row(prompt: Prompt, response: str, h_max: float) -> dict:
    """A chat row for axolotl (`messages`, `uncertainty` = H / h_max) plus what evaluation needs."""
    return {
        "messages": [
            {"role": "user", "content": prompt.text},
            {"role": "assistant", "content": response},
        ],
        "uncertainty": round(prompt.entropy / h_max, 6),
        "task": prompt.task,
        "kind": prompt.kind,
        "entropy": prompt.entropy,
        "responses": list(prompt.responses),
        "probs": list(prompt.probs),
    }


def draw_rows(
    rng: random.Random,
    per_task: dict[str, int],
    draw: Callable[[str, random.Random], Prompt],
    to_row: Callable[[Prompt, str], dict],
    exclude: Iterable[str] = (),
) -> list[dict]:
    """`per_task[name]` rows of each task from `draw(name, rng)`, in a seeded random order.

    A prompt whose text is in `exclude` (e.g. the held-out prompts) is drawn again, so held-out
    prompts never appear verbatim in a training split. Every row's response is a draw from its
    prompt's distribution, from the same random stream.
    """
    excluded = set(exclude)
    rows = []
    for name, count in per_task.items():
        for _ in range(count):
            prompt = draw(name, rng)
            while prompt.text in excluded:
                prompt = draw(name, rng)
            rows.append(to_row(prompt, prompt.sample(rng)))
    rng.shuffle(rows)
    return rows


def training_split(
    make_split: Callable[..., list[dict]], seed, held_out: list[dict], per_task: dict[str, int]
) -> list[dict]:
    """`make_split(f"train {seed}", per_task, exclude=...)`, no prompt of `held_out` among them."""
    exclude = [r["messages"][0]["content"] for r in held_out]
    return make_split(f"train {seed}", per_task, exclude=exclude)
