"""The experiment's metrics on hand-built "models" whose answers are known in closed form."""

from __future__ import annotations

import math

import pytest
import torch

from experiments.harness.evaluate import (
    HFScorer,
    OracleScorer,
    encode_rows,
    evaluate,
    exact_match,
    expected_calibration_error,
    oracle_scorer,
)
from experiments.uncertainty_mixture import prepare
from experiments.uncertainty_mixture.report import ranks, spearman
from experiments.uncertainty_mixture.tasks import TASKS, make_split
from tests.experiments.fakes import believing
from tests.experiments.helpers import arm_configs, differing_keys


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return make_split("metric test", dict.fromkeys(TASKS, 3))


def test_the_truth_scores_ce_equal_to_entropy_and_zero_kl(tokenizer, rows):
    result = evaluate(tokenizer, oracle_scorer(tokenizer, rows), rows)
    high, low = result["high"], result["low"]
    assert high["ce"] == pytest.approx(high["entropy"], abs=1e-9)
    assert high["kl"] == pytest.approx(0.0, abs=1e-9)
    assert high["support_mass"] == pytest.approx(1.0, abs=1e-9)
    assert low["exact_match"] == 1.0 and low["token_nll"] == pytest.approx(0.0, abs=1e-12)
    assert low["ece"] == pytest.approx(0.0, abs=1e-12)  # always sure and always right
    for task, summary in result["tasks"].items():
        if "ce" in summary:
            assert summary["ce"] == pytest.approx(summary["entropy"], abs=1e-9), task


def test_a_wrong_belief_scores_the_closed_form_ce_and_kl(tokenizer, rows):
    """q uniform over the support: CE = log k whatever p is; KL = log k - H(p)."""
    uniform = believing(
        tokenizer, rows, lambda r: {y: 1 / len(r["responses"]) for y in r["responses"]}
    )
    result = evaluate(tokenizer, uniform, rows)
    for task in ("sunny", "fruit", "number"):
        members = [r for r in rows if r["task"] == task]
        ce = sum(math.log(len(r["responses"])) for r in members) / len(members)
        h = sum(r["entropy"] for r in members) / len(members)
        assert result["tasks"][task]["ce"] == pytest.approx(ce, abs=1e-9)
        assert result["tasks"][task]["kl"] == pytest.approx(ce - h, abs=1e-9)


def test_mass_off_the_support_costs_its_log_in_ce(tokenizer, rows):
    """q = 0.9 p on the support (10% elsewhere): CE = H - log 0.9, support mass 0.9."""
    leaky = believing(
        tokenizer,
        rows,
        lambda r: {y: 0.9 * p for y, p in zip(r["responses"], r["probs"], strict=True)},
    )
    high = evaluate(tokenizer, leaky, rows)["high"]
    assert high["ce"] == pytest.approx(high["entropy"] - math.log(0.9), abs=1e-9)
    assert high["kl"] == pytest.approx(-math.log(0.9), abs=1e-9)
    assert high["support_mass"] == pytest.approx(0.9, abs=1e-9)


def test_exact_match_needs_the_answer_and_the_end_of_turn(tokenizer, rows):
    low = [r for r in rows if r["kind"] == "low"]
    encoded = encode_rows(tokenizer, low)
    # a model sure of a wrong answer for the first row, right on the others
    wrong = {encoded[0].prompt: {(*encoded[0].options[0][:-1], tokenizer.pad_token_id): 1.0}}
    table = {e.prompt: {e.options[0]: 1.0} for e in encoded[1:]} | wrong
    hits = exact_match(tokenizer, OracleScorer(table, len(tokenizer)), encoded)
    assert hits == [False] + [True] * (len(low) - 1)


def test_ece_by_hand():
    confidence = torch.tensor([0.95, 0.95, 0.55, 0.55, 1.0], dtype=torch.float64)
    correct = torch.tensor([True, False, True, True, True])
    # bin 9: {0.95, 0.95, 1.0}, accuracy 2/3, confidence 0.9667; bin 5: {0.55, 0.55}, accuracy 1
    expected = 3 / 5 * abs(2 / 3 - (0.95 + 0.95 + 1.0) / 3) + 2 / 5 * abs(1 - 0.55)
    assert expected_calibration_error(confidence, correct) == pytest.approx(expected, abs=1e-12)
    assert expected_calibration_error(
        torch.tensor([0.3] * 10, dtype=torch.float64), torch.arange(10) < 3
    ) == pytest.approx(0)


def test_response_tokens_are_the_tokens_axolotl_trains(tokenizer, rows):
    """What is scored (response + end-of-turn) is exactly what axolotl's chat_template labels."""
    from tests.reference import axolotl_tokenized

    for r, enc, tok in zip(
        rows, encode_rows(tokenizer, rows), axolotl_tokenized(tokenizer, rows), strict=True
    ):
        trained = [t for t in tok["labels"] if t != -100]
        assert tuple(trained) == enc.options[enc.reference], r["messages"]
        assert tuple(tok["input_ids"][: len(enc.prompt)]) == enc.prompt


def test_hf_scorer_is_independent_of_batch_padding(model_dir, tokenizer, rows):
    scorer = HFScorer(model_dir, tokenizer.pad_token_id)
    encoded = encode_rows(tokenizer, rows[:6])
    sequences = [e.prompt + e.options[0] for e in encoded]
    together = scorer.logprobs(sequences)
    for seq, batched in zip(sequences, together, strict=True):
        alone = scorer.logprobs([seq])[0]
        assert batched.shape == (len(seq), scorer.vocab_size)
        torch.testing.assert_close(batched, alone, atol=1e-5, rtol=0)
        torch.testing.assert_close(batched.exp().sum(-1), torch.ones(len(seq), dtype=torch.float64))


def test_ranks_and_spearman():
    assert ranks([3.0, 1.0, 2.0, 1.0]) == [4.0, 1.5, 3.0, 1.5]
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)


def test_configs_differ_only_in_the_arm_keys(tmp_path):
    configs = arm_configs(prepare, tmp_path, seed=3)
    arm_keys = {
        "ual_uncertainty_source",
        "ual_smoothing_max",
        "ual_mapping",
        "output_dir",
        "dataset_prepared_path",
    }
    reference = configs["sft"]
    for name, cfg in configs.items():
        assert cfg["seed"] == 3 and cfg["dataset_num_proc"] == 1
        assert differing_keys(cfg, reference) <= arm_keys, name
    assert configs["ls"]["ual_uncertainty_source"] == "constant"
    assert configs["ls"]["ual_smoothing_max"] == 0.1
    assert configs["sft"]["ual_smoothing_max"] == 0.0
    assert (
        configs["ual_known"]["ual_smoothing_max"]
        == configs["ual_elicited"]["ual_smoothing_max"]
        == 0.2
    )
    assert configs["ual_elicited"]["ual_mapping"] == "rank"
