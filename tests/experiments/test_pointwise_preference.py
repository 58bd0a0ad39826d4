"""The point-wise preference experiment's data, metrics and configs, without training.

The metrics are checked on fake models whose probabilities are known in closed form: a model
that gives the whole good response probability q_g and the bad one q_b has, by the chain rule,
sum of token log-probabilities log q_g, so a per-token mean of log q_g / (number of tokens),
whatever the responses share.
"""

from __future__ import annotations

import hashlib
import json
import math
import re

import pytest
import torch

from experiments.harness.evaluate import encode_rows
from experiments.pointwise_preference import data, prepare
from experiments.pointwise_preference.evaluate import (
    evaluate,
    load_model,
    scoring_rows,
    summarize,
)
from experiments.uncertainty_mixture.tasks import LOOKUP_TABLE
from tests.experiments.fakes import believing as fake_model
from tests.experiments.helpers import differing_keys

PINNED_TEST_DIGEST = "f3e872dd61a40f7a"  # the held-out split and seed 0's training split


@pytest.fixture(scope="module")
def prompts() -> list[dict]:
    return data.test_prompts(dict.fromkeys(data.TASKS, 4))


# ---------------------------------------------------------------------- data


def test_bad_responses_by_hand():
    assert data.bad_response("add", "10") == "11"
    assert data.bad_response("add", "0") == "1"
    assert data.bad_response("copy", "tree rock fox") == "tree rock"
    assert data.bad_response("copy", "fox fox") == "fox"
    assert data.bad_response("lookup", "gold") == "gray"
    assert data.bad_response("lookup", "pink") == "red"  # wraps around
    with pytest.raises(ValueError):
        data.bad_response("coin", "heads")


def test_every_prompt_has_its_known_good_and_bad_response():
    """Checked from the prompt text itself, independently of the generator."""
    rows = data.test_prompts() + data.train_rows(0, data.test_prompts())
    for r in rows:
        instruction = r["prompt"].split(": ", 1)[1]
        assert r["good"] != r["bad"]
        if r["task"] == "add":
            a, b = map(int, re.fullmatch(r"add (\d) and (\d)", instruction).groups())
            assert (int(r["good"]), int(r["bad"])) == (a + b, a + b + 1)
        elif r["task"] == "copy":
            words = instruction.removeprefix("copy ").split()
            assert r["good"] == " ".join(words) and r["bad"] == " ".join(words[:-1])
        else:
            color = LOOKUP_TABLE[instruction.removeprefix("color of ")]
            assert r["good"] == color and r["bad"] != color


def test_splits_are_seeded_labelled_and_disjoint():
    test = data.test_prompts()
    assert len(test) == sum(data.TEST_PER_TASK.values())
    train = data.train_rows(0, test)
    assert train == data.train_rows(0, test)  # seeded
    assert train != data.train_rows(1, test)
    assert not {r["prompt"] for r in train} & {p["prompt"] for p in test}
    assert not {r["prompt"] for r in data.pretrain_rows(test)} & {p["prompt"] for p in test}
    for r in train:
        assert r["response"] == (r["good"] if r["label"] == 1 else r["bad"])
    for task in data.TASKS:
        labels = [r["label"] for r in train if r["task"] == task]
        assert len(labels) == data.TRAIN_PER_TASK[task]
        assert 0.4 < sum(labels) / len(labels) < 0.6, task  # a fair coin per row
    digest = hashlib.sha256(json.dumps([test, train]).encode()).hexdigest()
    assert digest[:16] == PINNED_TEST_DIGEST


def test_both_row_formats_carry_the_same_prompt_response_and_label():
    for r in data.train_rows(2, data.test_prompts()):
        chat, kto = data.chat_row(r), data.kto_row(r)
        assert chat["messages"][0] == {"role": "user", "content": kto["prompt"]}
        assert chat["messages"][1] == {"role": "assistant", "content": kto["completion"]}
        assert chat["label"] == int(kto["label"]) and isinstance(kto["label"], bool)


def test_kto_prompt_pairs_write_the_chat_template(tokenizer):
    """axolotl's `chatml.prompt_pairs` (the KTO arm's dataset type) renders a row exactly as the
    chat template does (up to the template's trailing newline, which no arm trains)."""
    from axolotl.prompt_strategies.kto.chatml import prompt_pairs

    for r in data.train_rows(0, data.test_prompts())[:30]:
        kto = prompt_pairs({})(data.kto_row(r))
        chat = tokenizer.apply_chat_template(data.chat_row(r)["messages"], tokenize=False)
        assert chat == kto["prompt"] + kto["completion"] + "\n"
        assert kto["prompt"] == tokenizer.apply_chat_template(
            data.chat_row(r)["messages"][:1], tokenize=False, add_generation_prompt=True
        )


# ---------------------------------------------------------------------- metrics


def believing(tokenizer, prompts, belief):
    """A fake model giving each prompt's good and bad response the probabilities
    `belief(prompt) = (q_good, q_bad)`; the rest goes to a response that is neither."""
    beliefs = {p["prompt"]: belief(p) for p in prompts}
    return fake_model(
        tokenizer,
        scoring_rows(prompts),
        lambda r: dict(zip(r["responses"], beliefs[r["messages"][0]["content"]], strict=True)),
    )


def expected(tokenizer, prompts, belief) -> dict:
    """The metrics in closed form, from the response lengths in tokens."""
    encoded = encode_rows(tokenizer, scoring_rows(prompts))
    n = len(prompts)
    q = [belief(p) for p in prompts]
    good_tok = [math.log(g) / len(e.options[0]) for (g, _), e in zip(q, encoded, strict=True)]
    bad_tok = [math.log(b) / len(e.options[1]) for (_, b), e in zip(q, encoded, strict=True)]
    return {
        "good_token_logp": sum(good_tok) / n,
        "bad_token_logp": sum(bad_tok) / n,
        "token_margin": (sum(good_tok) - sum(bad_tok)) / n,
        "good_logp": sum(math.log(g) for g, _ in q) / n,
        "bad_logp": sum(math.log(b) for _, b in q) / n,
        "good_prob": sum(g for g, _ in q) / n,
        "bad_prob": sum(b for _, b in q) / n,
        "preference_accuracy": sum(g > b for g, b in q) / n,
    }


@pytest.mark.parametrize(
    "belief",
    [
        lambda p: (0.7, 0.2),
        # wrong on lookup, unsure on copy (whose bad response is a prefix of the good one)
        lambda p: {"add": (0.6, 0.1), "copy": (0.45, 0.45), "lookup": (0.05, 0.9)}[p["task"]],
        lambda p: (0.3, 0.3 + 0.1 * (len(p["prompt"]) % 3)),
    ],
    ids=["sure", "per-task", "mixed"],
)
def test_metrics_equal_their_closed_form(tokenizer, prompts, belief):
    result = evaluate(tokenizer, believing(tokenizer, prompts, belief), prompts)
    want = expected(tokenizer, prompts, belief)
    for key, value in want.items():
        assert result["all"][key] == pytest.approx(value, abs=1e-9), key
    assert result["all"]["prompts"] == len(prompts)
    for task in data.TASKS:
        members = [p for p in prompts if p["task"] == task]
        want = expected(tokenizer, members, belief)
        for key, value in want.items():
            assert result["tasks"][task][key] == pytest.approx(value, abs=1e-9), (task, key)


def test_preference_accuracy_is_strict_and_per_prompt(tokenizer, prompts):
    tie = evaluate(tokenizer, believing(tokenizer, prompts, lambda p: (0.4, 0.4)), prompts)
    assert tie["all"]["preference_accuracy"] == 0.0
    assert tie["all"]["token_margin"] != 0  # same probability, different lengths
    wrong_on_add = evaluate(
        tokenizer,
        believing(tokenizer, prompts, lambda p: (0.1, 0.5) if p["task"] == "add" else (0.5, 0.1)),
        prompts,
    )
    assert wrong_on_add["tasks"]["add"]["preference_accuracy"] == 0.0
    assert wrong_on_add["tasks"]["copy"]["preference_accuracy"] == 1.0
    assert wrong_on_add["all"]["preference_accuracy"] == pytest.approx(2 / 3)


def test_summarize_by_hand():
    per_prompt = [
        {"task": "t", "good": torch.tensor([-1.0, -3.0]), "bad": torch.tensor([-0.5])},
        {"task": "t", "good": torch.tensor([-0.2]), "bad": torch.tensor([-2.0, -2.0, -2.0])},
    ]
    out = summarize(per_prompt)
    assert out["good_token_logp"] == pytest.approx((-2.0 - 0.2) / 2)
    assert out["bad_token_logp"] == pytest.approx((-0.5 - 2.0) / 2)
    assert out["token_margin"] == pytest.approx(((-2.0 + 0.5) + (-0.2 + 2.0)) / 2)
    assert out["good_logp"] == pytest.approx((-4.0 - 0.2) / 2)
    assert out["good_prob"] == pytest.approx((math.exp(-4.0) + math.exp(-0.2)) / 2)
    assert out["bad_prob"] == pytest.approx((math.exp(-0.5) + math.exp(-6.0)) / 2)
    assert out["preference_accuracy"] == 0.5  # -4 < -0.5, -0.2 > -6


def test_a_lora_adapter_is_merged_into_its_base(model_dir, tmp_path, tokenizer):
    """What is evaluated is the trained adapter on the base, not the base alone."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    torch.manual_seed(0)
    # init_lora_weights=False: B is random too, so the adapter changes the output
    peft = get_peft_model(
        base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    ).eval()
    peft.save_pretrained(tmp_path / "adapter")
    ids = torch.tensor([tokenizer.encode("mia #52: add 4 and 6")])
    with torch.no_grad():
        want = peft(input_ids=ids).logits
        merged = load_model(tmp_path / "adapter", model_dir)(input_ids=ids).logits
        alone = load_model(model_dir, model_dir)(input_ids=ids).logits
    torch.testing.assert_close(merged, want, atol=1e-5, rtol=1e-5)
    assert (alone - want).abs().max() > 1e-2


# ---------------------------------------------------------------------- configs


def test_arms_share_everything_but_their_objective(tmp_path):
    configs = {
        name: prepare.arm_config(
            arm,
            base_model=tmp_path / "base",
            train_file=tmp_path / f"{name}.jsonl",
            run_dir=tmp_path / name,
            seed=2,
        )
        for name, arm in prepare.ARMS.items()
    }
    per_arm = {"datasets", "output_dir", "dataset_prepared_path"}
    # the SFT path's keys (the plugin's, its chat template) against the KTO path's
    paths = {"plugins", "chat_template", "remove_unused_columns", "pad_to_multiple_of"}
    paths |= set(prepare.ARMS["sft"].keys)
    for name, cfg in configs.items():
        assert cfg["seed"] == 2 and cfg["base_model"] == str(tmp_path / "base")
        for key, value in {**prepare.COMMON, **prepare.CPU}.items():
            assert cfg[key] == value, (name, key)
        assert cfg["save_steps"] == cfg["max_steps"] == 150
        assert prepare.PROBE in cfg["plugins"]
        own = set(prepare.ARMS[name].keys)
        assert differing_keys(cfg, configs["sft"]) <= per_arm | own | paths, name
    assert configs["sft"]["ual_smoothing_max"] == configs["ulma"]["ual_smoothing_max"] == 0.0
    assert configs["ulma"]["ual_objective"] == "ulma"
    assert configs["ulma"]["ual_preference_beta"] == configs["kto"]["rl_beta"] == 0.1
    kto = configs["kto"]
    assert kto["rl"] == "kto" and prepare.UAL not in kto["plugins"]
    assert kto["datasets"][0]["type"] == "chatml.prompt_pairs"
    assert kto["remove_unused_columns"] is False
    assert configs["sft"]["datasets"][0]["type"] == "axolotl_ual.chat_template"
    # batches of about the same width as KTO's (its longest row, 25-30 tokens), not 64
    assert configs["ulma"]["pad_to_multiple_of"] == 8 and "pad_to_multiple_of" not in kto
