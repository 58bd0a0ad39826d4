"""The Instruction Modelling experiment's data and configs: the cards say what the module claims,
every answer is recomputed from the card's text, the sampled answers follow their distribution,
the regime is IM's (long instructions, short responses), and the arms differ only in their keys."""

from __future__ import annotations

import hashlib
import json
import statistics
from collections import Counter

import pytest
from scipy.stats import chisquare

from experiments.instruction_modelling import prepare
from experiments.instruction_modelling.run import Experiment
from experiments.instruction_modelling.tasks import (
    DIE,
    FIELDS,
    HIGH,
    LIST_WORDS,
    LOW,
    NOTE_FACTS,
    TASKS,
    make_split,
)
from experiments.uncertainty_mixture.tasks import LOOKUP_TABLE
from tests.experiments.helpers import arm_configs, differing_keys


def parse(text: str) -> dict:
    """A card's text back into its parts, independently of how tasks.py builds it."""
    lines = text.split("\n")
    assert len(lines) == 2 + len(FIELDS) + 2
    assert lines[0].startswith("card ")
    fields = dict(line.split(": ", 1) for line in lines[1 : 1 + len(FIELDS)])
    words = lines[1 + len(FIELDS)].removeprefix("list: ").split()
    note = lines[2 + len(FIELDS)].removeprefix("note: ")
    facts = dict(fact.split(" is ") for fact in note.removesuffix(".").split(". "))
    question = lines[-1].removeprefix("question: ")
    return {"fields": fields, "words": words, "facts": facts, "question": question}


@pytest.fixture(scope="module")
def big_split() -> list[dict]:
    return make_split("im test", dict.fromkeys(TASKS, 3000))


def test_cards_hold_what_the_module_says(big_split):
    for r in big_split[:2000]:
        card = parse(r["messages"][0]["content"])
        assert list(card["fields"]) == list(FIELDS)
        assert all(card["fields"][k] in options for k, options in FIELDS.items())
        assert len(card["words"]) == len(set(card["words"])) == LIST_WORDS
        # the note's facts are the world's: the same fact reads the same on every card
        assert len(card["facts"]) == NOTE_FACTS
        assert all(LOOKUP_TABLE[obj] == color for obj, color in card["facts"].items())


def test_every_answer_follows_from_the_card(big_split):
    seen = Counter()
    for r in big_split:
        card, answer = parse(r["messages"][0]["content"]), r["messages"][1]["content"]
        q = card["question"]
        if r["task"] == "field":
            expected = [card["fields"][q.removeprefix("what is the ").removesuffix("?")]]
        elif r["task"] == "fact":
            obj = q.removeprefix("what color is ").removesuffix("?")
            assert obj not in card["facts"]  # never answerable from its own card
            expected = [LOOKUP_TABLE[obj]]
        elif r["task"] == "pick":
            assert q == "pick a word from the list"
            expected = card["words"]
        else:
            assert q == "roll a die"
            expected = [str(i) for i in range(1, 7)]
        assert r["responses"] == expected and answer in expected
        assert r["probs"] == pytest.approx([1 / len(expected)] * len(expected), abs=1e-15)
        assert r["kind"] == (LOW if len(expected) == 1 else HIGH) == TASKS[r["task"]]
        seen[r["task"]] += 1
    assert seen == dict.fromkeys(TASKS, 3000)


def test_sampled_answers_follow_their_distribution(big_split):
    """pick: uniform over the list's positions; die: uniform over 1-6; field: every key asked;
    fact: every object asked (chi-square p > 1e-6, 3000 rows each)."""
    positions = Counter()
    for r in big_split:
        if r["task"] == "pick":
            positions[r["responses"].index(r["messages"][1]["content"])] += 1
    assert chisquare([positions[i] for i in range(LIST_WORDS)]).pvalue > 1e-6
    die = Counter(r["messages"][1]["content"] for r in big_split if r["task"] == "die")
    assert set(die) == set(DIE[0]) and chisquare(list(die.values())).pvalue > 1e-6
    keys = Counter(
        parse(r["messages"][0]["content"])["question"].split()[-1]
        for r in big_split
        if r["task"] == "field"
    )
    assert set(keys) == {f"{k}?" for k in FIELDS}
    assert chisquare(list(keys.values())).pvalue > 1e-6
    # the check has power: the die's answers against a distribution 40% off on one face fail
    counts = [die[y] for y in DIE[0]]
    off = [1.4] + [0.92] * 5
    assert chisquare(counts, [sum(counts) * w / 6 for w in off]).pvalue < 1e-6


def test_the_regime_is_long_instructions_and_short_responses(tmp_path):
    """With the experiment's own tokenizer: instructions of 60+ tokens, responses of 1-3, and
    instruction tokens over 90% of what IM trains."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(prepare.build_base_model(tmp_path / "m"))
    test = Experiment.test_rows()
    instruction = [len(tokenizer.encode(r["messages"][0]["content"])) for r in test]
    response = [len(tokenizer.encode(r["messages"][1]["content"])) + 1 for r in test]  # + eot
    assert min(instruction) >= 60 and max(response) <= 4
    share = sum(instruction) / (sum(instruction) + sum(response))
    assert share > 0.9 and statistics.mean(instruction) / statistics.mean(response) > 20
    full = [
        tokenizer.apply_chat_template(r["messages"], tokenize=True, return_dict=False) for r in test
    ]
    assert max(len(ids) for ids in full) < 128  # sequence_len: nothing is truncated


def test_splits_are_seeded_and_held_out_prompts_never_train():
    test = Experiment.test_rows()
    assert test == Experiment.test_rows()
    train = Experiment.train_rows(0, test)
    assert train == Experiment.train_rows(0, test) and train != Experiment.train_rows(1, test)
    held_out = {r["messages"][0]["content"] for r in test}
    for seed in (0, 1, 2):
        trained = {r["messages"][0]["content"] for r in Experiment.train_rows(seed, test)}
        assert not held_out & trained
    assert Counter(r["task"] for r in train) == Counter(prepare.TRAIN_PER_TASK)
    assert Counter(r["task"] for r in test) == Counter(prepare.TEST_PER_TASK)
    assert sum(prepare.TRAIN_PER_TASK.values()) == 240  # few samples
    # pinned: if Python's `random` or the generator changes, the README's tables no longer
    # reproduce, and this says so first
    digest = hashlib.sha256(json.dumps(test + train).encode()).hexdigest()
    assert digest[:16] == PINNED_DIGEST


PINNED_DIGEST = "96b475582a0094a2"


def test_the_arms_differ_only_in_the_instruction_keys(tmp_path):
    configs = arm_configs(prepare, tmp_path, seed=2)
    arm_keys = {
        "train_on_inputs",
        "ual_instruction_weight",
        "ual_instruction_smoothing",
        "output_dir",
        "dataset_prepared_path",
    }
    sft = configs["sft"]
    for name, cfg in configs.items():
        assert cfg["seed"] == 2 and cfg["dataset_num_proc"] == 1, name
        assert cfg["ual_smoothing_max"] == 0.0  # responses are never smoothed
        assert differing_keys(cfg, sft) <= arm_keys, name
    assert sft["train_on_inputs"] is False and "ual_instruction_weight" not in sft
    for name, eps in (("im", 0.0), ("im_smooth", 0.1)):
        assert configs[name]["train_on_inputs"] is True
        assert configs[name]["ual_instruction_weight"] == 1.0
        assert configs[name]["ual_instruction_smoothing"] == eps
