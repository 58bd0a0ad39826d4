"""The task mixture: low-entropy tasks with one right answer, high-entropy tasks with a known p(y|x).

Every prompt carries its exact response distribution, so the experiment never has to guess how
uncertain a sample is: a low-entropy prompt has a single response with probability 1, a
high-entropy prompt a finite list of responses with known probabilities, and a training row's
response is one draw from that distribution. That makes three things exact that a real dataset
only approximates: the conditional entropy H(Y|x) of every row (hence the "known" uncertainty
u = H / H_MAX), the held-out metric for high-entropy prompts (cross entropy against the true
p(y|x) over its whole support), and what a perfectly calibrated model would output.

Each user message starts with an irrelevant context, "<name> #<ticket>:", drawn independently of
the task. It makes nearly every prompt unique, so a model that trains long enough on few rows can
memorize which sampled answer went with which prompt: on high-entropy tasks that memorization is
overfitting to sampling noise (the held-out distribution gets sharper than the truth), which is
the failure label smoothing is meant to prevent. On low-entropy tasks the context is merely
noise to ignore.

Pure Python and seeded (`random.Random` with string seeds, which do not depend on
PYTHONHASHSEED), so a split is the same on every machine and Python version this project runs.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from ..harness import truth
from ..harness.truth import HIGH, LOW, Prompt, entropy, uniform, zipf

# LOW tasks have one correct answer (u = 0), HIGH tasks a known distribution (u = H / H_MAX)

NAMES = (
    "ana",
    "ben",
    "cara",
    "dev",
    "eli",
    "fay",
    "gus",
    "hana",
    "ivo",
    "jade",
    "kim",
    "leo",
    "mia",
    "ned",
    "omar",
    "pia",
    "quin",
    "rosa",
    "sam",
    "tara",
    "uma",
    "vik",
    "wes",
    "zoe",
)
TICKETS = range(10, 100)
COPY_WORDS = (
    "fox",
    "lamp",
    "tree",
    "cup",
    "sun",
    "rock",
    "bird",
    "boat",
    "key",
    "rain",
    "milk",
    "star",
)
LOOKUP_COLORS = ("red", "blue", "green", "gold", "gray", "pink")
# made-up objects with a fixed color each: the table is a constant of the experiment (seeded by
# its own string, independent of every experiment seed) that the model can only learn from data
LOOKUP_OBJECTS = (
    "zib",
    "mok",
    "tav",
    "rul",
    "pex",
    "dorn",
    "kib",
    "sul",
    "vap",
    "hix",
    "lom",
    "fep",
    "yat",
    "gub",
    "nid",
    "wox",
    "jur",
    "bef",
    "cag",
    "tem",
    "sor",
    "pim",
    "dak",
    "vun",
)
_table_rng = random.Random("uncertainty-mixture lookup table v1")
LOOKUP_TABLE = {obj: _table_rng.choice(LOOKUP_COLORS) for obj in LOOKUP_OBJECTS}
FRUITS = ("apple", "pear", "plum", "fig", "lime", "kiwi", "mango", "peach")
ANIMALS = ("cat", "dog", "cow", "owl", "bee", "ant", "yak", "eel", "hen", "ram", "elk", "emu")


@dataclass(frozen=True)
class Task:
    """A named task: `content(rng)` draws an instruction and its response distribution."""

    name: str
    kind: str
    content: Callable[[random.Random], tuple[str, tuple[str, ...], tuple[float, ...]]]
    # every (instruction, responses, probs) the task can produce: the tests measure each one
    contents: Callable[[], list[tuple[str, tuple[str, ...], tuple[float, ...]]]]


def _add(rng):
    a, b = rng.randrange(10), rng.randrange(10)
    return f"add {a} and {b}", (str(a + b),), (1.0,)


def _copy(rng):
    words = [rng.choice(COPY_WORDS) for _ in range(rng.choice((2, 3)))]
    return "copy " + " ".join(words), (" ".join(words),), (1.0,)


def _lookup(rng):
    obj = rng.choice(LOOKUP_OBJECTS)
    return f"color of {obj}", (LOOKUP_TABLE[obj],), (1.0,)


def _coin(rng):
    return ("flip a coin", *uniform(("heads", "tails")))


def _die(rng):
    return ("roll a die", *uniform(str(i) for i in range(1, 7)))


def _fruit(rng):
    return ("name a fruit", *zipf(FRUITS))


def _animal(rng):
    return ("name an animal", *uniform(ANIMALS))


def _number(rng, k=None):
    k = rng.randrange(2, 10) if k is None else k
    return (f"pick a number up to {k}", *uniform(str(i) for i in range(1, k + 1)))


def _sunny(rng):
    return "is it sunny", ("yes", "no"), (0.85, 0.15)


TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task(
            "add",
            LOW,
            _add,
            lambda: [
                (f"add {a} and {b}", (str(a + b),), (1.0,)) for a in range(10) for b in range(10)
            ],
        ),
        # only a sample of the 12^2 + 12^3 word sequences: they are all alike
        Task("copy", LOW, _copy, lambda: [_copy(random.Random(f"copy {i}")) for i in range(50)]),
        Task(
            "lookup",
            LOW,
            _lookup,
            lambda: [(f"color of {o}", (c,), (1.0,)) for o, c in LOOKUP_TABLE.items()],
        ),
        Task("coin", HIGH, _coin, lambda: [_coin(None)]),
        Task("die", HIGH, _die, lambda: [_die(None)]),
        Task("fruit", HIGH, _fruit, lambda: [_fruit(None)]),
        Task("animal", HIGH, _animal, lambda: [_animal(None)]),
        Task("number", HIGH, _number, lambda: [_number(None, k) for k in range(2, 10)]),
        Task("sunny", HIGH, _sunny, lambda: [_sunny(None)]),
    )
}
LOW_TASKS = tuple(name for name, task in TASKS.items() if task.kind == LOW)
HIGH_TASKS = tuple(name for name, task in TASKS.items() if task.kind == HIGH)

# The "known uncertainty" is u = H(Y|x) / H_MAX, with H_MAX the largest conditional entropy of
# any prompt in the mixture ("name an animal": 12 equally likely answers, log 12 nats). So the
# most uncertain task gets u = 1 (epsilon = ual_smoothing_max) and low-entropy tasks u = 0.
H_MAX = max(entropy(probs) for task in TASKS.values() for _, _, probs in task.contents())


def draw_prompt(task: Task, rng: random.Random) -> Prompt:
    """One prompt of `task`: a fresh irrelevant context, then the task's instruction."""
    instruction, responses, probs = task.content(rng)
    context = f"{rng.choice(NAMES)} #{rng.choice(TICKETS)}"
    return Prompt(task.name, task.kind, f"{context}: {instruction}", responses, probs)


def row(prompt: Prompt, response: str) -> dict:
    """A chat row for axolotl (`messages`, `uncertainty` = H / H_MAX) plus what evaluation needs."""
    return truth.row(prompt, response, H_MAX)


def make_split(seed: str, per_task: dict[str, int], exclude=()) -> list[dict]:
    """`per_task[name]` rows of each task, in a seeded random order; no prompt of `exclude`."""
    return truth.draw_rows(
        random.Random(f"uncertainty-mixture {seed}"),
        per_task,
        lambda name, rng: draw_prompt(TASKS[name], rng),
        row,
        exclude,
    )
