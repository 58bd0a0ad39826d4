"""Instruction Modelling's regime: long instructions, short responses, a known p(y|x).

Every user message is a *card*: nine lines of structured text (about 80 tokens), then a
question whose answer is one or two tokens. For example (a `field` row):

    card 27 of jade
    city: bern
    pet: ant
    color: gray
    food: fig
    day: fri
    list: sun key boat bird star
    note: pex is green. pim is pink. cag is gray.
    question: what is the pet?          -> ant

The card is text a model can learn to predict, the way Instruction Modelling (IM) trains it:
fixed keys in a fixed order, values from small fixed vocabularies, and a `note` of facts from a
fixed world table (24 made-up objects with one color each, the uncertainty mixture's lookup
table), so the same fact reads the same on every card. The tasks:

| task  | kind | question                      | answer                                   |
|-------|------|-------------------------------|------------------------------------------|
| field | low  | what is the <key>?            | that key's value on this card (copy)     |
| fact  | low  | what color is <object>?       | its color in the world table; the object |
|       |      |                               | is never on this card's own note         |
| pick  | high | pick a word from the list     | one of the card's 5 list words, uniform  |
| die   | high | roll a die                    | 1-6, uniform (the card is irrelevant)    |

So each task tests something IM might change: reading the instruction (`field`), knowledge
that the responses of few `fact` rows teach but that every card's note also states (an
SFT model learns it from the answers only, an IM model from the notes as well), and, on the
high-entropy tasks, how sharply a model memorizes sampled answers of unique long prompts
(IM's claimed regularization) and whether it keeps to the valid answers the card defines.

Pure Python and seeded, like the uncertainty mixture (`experiments/harness/truth.py`).
"""

from __future__ import annotations

import random

from ..harness import truth
from ..harness.truth import HIGH, LOW, Prompt, entropy, uniform
from ..uncertainty_mixture.tasks import (
    ANIMALS,
    COPY_WORDS,
    FRUITS,
    LOOKUP_COLORS,
    LOOKUP_TABLE,
    NAMES,
    TICKETS,
)

CITIES = ("oslo", "rome", "lima", "kyiv", "baku", "doha", "riga", "bern", "suva", "apia", "nuuk")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
FIELDS = {"city": CITIES, "pet": ANIMALS, "color": LOOKUP_COLORS, "food": FRUITS, "day": DAYS}
LIST_WORDS = 5
NOTE_FACTS = 6
OBJECTS = tuple(LOOKUP_TABLE)

TASKS = {"field": LOW, "fact": LOW, "pick": HIGH, "die": HIGH}
LOW_TASKS = tuple(name for name, kind in TASKS.items() if kind == LOW)
HIGH_TASKS = tuple(name for name, kind in TASKS.items() if kind == HIGH)
DIE = uniform(str(i) for i in range(1, 7))
# u = H / H_MAX as in the uncertainty mixture (the eval buckets read it; no arm smooths by it)
H_MAX = entropy(DIE[1])


def card(rng: random.Random) -> tuple[list[str], dict[str, str], tuple[str, ...], set[str]]:
    """A card's lines (without the question), its field values, list words and note objects."""
    values = {key: rng.choice(options) for key, options in FIELDS.items()}
    words = tuple(rng.sample(COPY_WORDS, LIST_WORDS))
    objects = rng.sample(OBJECTS, NOTE_FACTS)
    lines = [
        f"card {rng.choice(TICKETS)} of {rng.choice(NAMES)}",
        *(f"{key}: {value}" for key, value in values.items()),
        "list: " + " ".join(words),
        "note: " + " ".join(f"{obj} is {LOOKUP_TABLE[obj]}." for obj in objects),
    ]
    return lines, values, words, set(objects)


def draw_prompt(task: str, rng: random.Random) -> Prompt:
    """One prompt of `task`: a fresh card, then the task's question."""
    lines, values, words, on_card = card(rng)
    if task == "field":
        key = rng.choice(tuple(FIELDS))
        question, (responses, probs) = f"what is the {key}?", ((values[key],), (1.0,))
    elif task == "fact":
        obj = rng.choice([o for o in OBJECTS if o not in on_card])
        question, (responses, probs) = f"what color is {obj}?", ((LOOKUP_TABLE[obj],), (1.0,))
    elif task == "pick":
        question, (responses, probs) = "pick a word from the list", uniform(words)
    elif task == "die":
        question, (responses, probs) = "roll a die", DIE
    else:
        raise ValueError(f"unknown task {task!r}")
    text = "\n".join([*lines, f"question: {question}"])
    return Prompt(task, TASKS[task], text, responses, probs)


def row(prompt: Prompt, response: str) -> dict:
    return truth.row(prompt, response, H_MAX)


def make_split(seed: str, per_task: dict[str, int], exclude=()) -> list[dict]:
    """`per_task[name]` rows of each task, in a seeded random order; no prompt of `exclude`."""
    rng = random.Random(f"instruction-modelling {seed}")
    return truth.draw_rows(rng, per_task, draw_prompt, row, exclude)


def guess_exact_match() -> dict[str, float]:
    """Exact match of a model that neither reads the card nor knows the world: on `field`, the
    key's value guessed from its options (1 / their number, averaged over the keys); on `fact`,
    always the most common color of the world table."""
    colors = list(LOOKUP_TABLE.values())
    return {
        "field": sum(1 / len(options) for options in FIELDS.values()) / len(FIELDS),
        "fact": max(colors.count(c) for c in set(colors)) / len(colors),
    }


def vocabulary() -> list[str]:
    """Every value a card or an answer can hold (for the tokenizer's corpus)."""
    return [
        *(v for options in FIELDS.values() for v in options),
        *COPY_WORDS,
        *OBJECTS,
        *DIE[0],
        *NAMES,
    ]
