"""Point-wise preference data with known good and bad responses, from the seeded task generator.

The prompts are the three one-answer tasks of `experiments/uncertainty_mixture/tasks.py`
(`add 4 and 6`, `copy tree rock`, `color of kib`, each behind an irrelevant "<name> #<ticket>:"
context). Every prompt has exactly one good response, the correct answer, and one bad response,
a fixed systematic mistake computed from the correct answer:

| task | good | bad |
|---|---|---|
| add | the sum | the sum plus one |
| copy | the words | the words without the last one (stops early) |
| lookup | the object's color | the next color in `LOOKUP_COLORS` |

Because the bad response is a deterministic function of the prompt, a model that has seen both
(the base model here is pretrained on an unfiltered half-and-half mix) can be maximally unsure
which one is right; the labels are then the only signal that tells them apart.

Row formats, with the same prompt, response and label in each:
- `chat_row`: `{"messages": [user, assistant], "label": 1 | 0, ...}`, what the UAL plugin's
  `axolotl_ual.chat_template` type reads (ULMA, point-wise DPO, SFT on the positives);
- `kto_row`: `{"prompt": user text, "completion": response, "label": true | false}`, what
  axolotl's `rl: kto` dataset type `chatml.prompt_pairs` reads. That type writes the prompt and
  completion in chatml, exactly as the tiny model's chat template renders the conversation, so
  TRL's KTOTrainer trains the same tokens (checked in tests/experiments).

Pure Python and seeded: string seeds for `random.Random`, so the splits are the same everywhere.
"""

from __future__ import annotations

import random

from experiments.uncertainty_mixture.tasks import LOOKUP_COLORS, LOW_TASKS, make_split

TASKS = LOW_TASKS  # add, copy, lookup: one correct answer each

PRETRAIN_PER_TASK = dict.fromkeys(TASKS, 400)
TRAIN_PER_TASK = dict.fromkeys(TASKS, 200)
TEST_PER_TASK = dict.fromkeys(TASKS, 100)


def bad_response(task: str, good: str) -> str:
    """The systematic mistake for a prompt whose correct answer is `good`."""
    if task == "add":
        return str(int(good) + 1)
    if task == "copy":
        words = good.split()
        if len(words) < 2:
            raise ValueError(f"copy answers have 2-3 words, got {good!r}")
        return " ".join(words[:-1])
    if task == "lookup":
        return LOOKUP_COLORS[(LOOKUP_COLORS.index(good) + 1) % len(LOOKUP_COLORS)]
    raise ValueError(f"no bad response defined for task {task!r}")


def _prompts(split: str, per_task: dict[str, int], exclude=()) -> list[dict]:
    """Seeded prompts with their good and bad responses: {"task", "prompt", "good", "bad"}."""
    rows = make_split(f"pointwise-preference {split}", per_task, exclude=exclude)
    out = []
    for r in rows:
        good = r["responses"][0]
        out.append(
            {
                "task": r["task"],
                "prompt": r["messages"][0]["content"],
                "good": good,
                "bad": bad_response(r["task"], good),
            }
        )
    return out


def test_prompts(per_task: dict[str, int] = TEST_PER_TASK) -> list[dict]:
    """The held-out split, shared by every seed: each prompt with both responses."""
    return _prompts("test", per_task)


def _labelled(split: str, per_task: dict[str, int], held_out: list[dict]) -> list[dict]:
    """One response a prompt, good or bad with probability 1/2 (its own seeded stream)."""
    prompts = _prompts(split, per_task, exclude=[p["prompt"] for p in held_out])
    coin = random.Random(f"pointwise-preference labels {split}")
    rows = []
    for p in prompts:
        label = coin.random() < 0.5
        rows.append({**p, "response": p["good"] if label else p["bad"], "label": int(label)})
    return rows


def pretrain_rows(held_out: list[dict], per_task: dict[str, int] = PRETRAIN_PER_TASK):
    """The base model's unfiltered data: half good, half bad responses; labels unused."""
    return _labelled("pretrain", per_task, held_out)


def train_rows(seed: int, held_out: list[dict], per_task: dict[str, int] = TRAIN_PER_TASK):
    """Seed `seed`'s point-wise preference data: one response a prompt, labelled 1 / 0."""
    return _labelled(f"train {seed}", per_task, held_out)


def chat_row(row: dict) -> dict:
    return {
        "messages": [
            {"role": "user", "content": row["prompt"]},
            {"role": "assistant", "content": row["response"]},
        ],
        "label": row["label"],
        "task": row["task"],
    }


def kto_row(row: dict) -> dict:
    return {"prompt": row["prompt"], "completion": row["response"], "label": bool(row["label"])}
