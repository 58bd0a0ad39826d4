"""The generation-level metrics: exact values on hand-made samples and fake models, and the
sampler checked against the model's own distribution (no hidden top-k, padding that changes
nothing, the nucleus transformers defines)."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import binom, chi2

from experiments.harness.evaluate import HFScorer, encode_rows, greedy_decode
from experiments.harness.generation import (
    GREEDY,
    SAMPLE,
    SAMPLES,
    TOP_P,
    GumbelSampling,
    HFGenerator,
    generation_metrics,
    score_samples,
    total_variation,
    truth_samples,
)
from experiments.harness.truth import HIGH, LOW, Prompt, row
from experiments.uncertainty_mixture.tasks import TASKS, make_split


def chi_square_p(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson's goodness of fit of `counts` to `probs` (categories of expected count < 5 pooled)."""
    n = counts.sum().item()
    expected = probs * n
    big = expected >= 5
    obs = torch.cat([counts[big].double(), counts[~big].sum().double().reshape(1)])
    exp = torch.cat([expected[big], expected[~big].sum().reshape(1)])
    keep = exp > 0
    stat = ((obs[keep] - exp[keep]) ** 2 / exp[keep]).sum().item()
    return float(chi2.sf(stat, int(keep.sum()) - 1))


# ---------------------------------------------------------------------- the metrics by hand


def test_total_variation_by_hand():
    assert total_variation({"a": 0.5, "b": 0.5}, {"a": 1.0}) == pytest.approx(0.5)
    assert total_variation({"a": 0.2, "b": 0.8}, {"b": 0.8, "a": 0.2}) == 0
    assert total_variation({"a": 1.0}, {"b": 1.0}) == 1.0


def test_scores_of_hand_made_samples():
    coin = score_samples(["heads", "heads", "heads", None], ["heads", "tails"], [0.5, 0.5])
    assert coin["valid"] == 0.75 and coin["ended"] == 0.75 and coin["samples"] == 4
    assert coin["tv_valid"] == pytest.approx(0.5)  # all valid samples say heads
    # over {heads, tails, invalid}: (|0.5 - 0.75| + |0.5 - 0| + |0 - 0.25|) / 2
    assert coin["tv"] == pytest.approx(0.5)
    assert "exact_match" not in coin

    add = score_samples(["7", "8", "7", "7"], ["7"], [1.0])
    assert add["valid"] == add["exact_match"] == 0.75 and add["ended"] == 1.0
    assert add["tv_valid"] == 0 and add["tv"] == pytest.approx(0.25)

    die = score_samples(["9", None], [str(i) for i in range(1, 7)], [1 / 6] * 6)
    assert die["valid"] == 0 and "tv_valid" not in die and die["tv"] == pytest.approx(1.0)

    skewed = score_samples(["yes"] * 6 + ["no"] * 2, ["yes", "no"], [0.85, 0.15])
    assert skewed["tv_valid"] == pytest.approx(abs(0.85 - 0.75))


def test_the_sampled_truth_floor_is_the_binomial_expectation():
    """The truth sampled K times per coin prompt: TV = |X/K - 1/2|, X ~ Bin(K, 1/2)."""
    k = SAMPLES[HIGH]
    coin = Prompt("coin", HIGH, "flip", ("heads", "tails"), (0.5, 0.5))
    rows = [row(coin, "heads", 1.0) for _ in range(3000)]
    floor = truth_samples(rows, seed="floor test")["high"]
    dist = [binom.pmf(x, k, 0.5) for x in range(k + 1)]
    tvs = [abs(x / k - 0.5) for x in range(k + 1)]
    mean = sum(p * t for p, t in zip(dist, tvs, strict=True))
    sd = math.sqrt(sum(p * (t - mean) ** 2 for p, t in zip(dist, tvs, strict=True)) / len(rows))
    assert abs(floor["tv_valid"] - mean) < 5 * sd
    assert floor["valid"] == 1.0 and floor["rows_without_valid"] == 0
    add = Prompt("add", LOW, "add 1 and 2", ("3",), (1.0,))
    low = truth_samples([row(add, "3", 1.0)] * 5)["low"]
    assert low["exact_match"] == low["valid"] == 1.0


# ---------------------------------------------------------------------- fake models


class Scripted:
    """A fake generator: `answer(prompt index, sample index)` gives each sample's tokens."""

    def __init__(self, answer):
        self.answer = answer
        self.calls = []

    def generate(self, prompts, decoding, n, seed):
        self.calls.append((decoding.name, len(prompts), n))
        return [[self.answer(p, k) for k in range(n)] for p in prompts]


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return make_split("generation test", dict.fromkeys(TASKS, 4))


def test_a_model_that_always_gives_its_first_option(tokenizer, rows):
    """Collapsed onto one valid answer: valid 1, TV among valid = 1 - p(that answer) exactly."""
    encoded = encode_rows(tokenizer, rows)
    first = {e.prompt: e.options[0] for e in encoded}
    fake = Scripted(lambda prompt, k: first[prompt])
    result = generation_metrics(tokenizer, fake, rows, [e.prompt for e in encoded])
    for decoding in (GREEDY, SAMPLE, TOP_P):
        high = result[decoding.name]["high"]
        expected = [1 - r["probs"][0] for r in rows if r["kind"] == HIGH]
        assert high["valid"] == 1.0 and high["rows_without_valid"] == 0
        assert high["tv_valid"] == pytest.approx(sum(expected) / len(expected), abs=1e-12)
        assert result[decoding.name]["low"]["exact_match"] == 1.0
        for task in ("coin", "die", "animal"):
            n_options = len(next(r for r in rows if r["task"] == task)["responses"])
            assert result[decoding.name]["tasks"][task]["tv_valid"] == pytest.approx(
                1 - 1 / n_options
            )
    # greedy asks one answer per prompt; sampling SAMPLES[kind] of each kind's prompts
    low, high = (sum(r["kind"] == kind for r in rows) for kind in (LOW, HIGH))
    assert fake.calls == [
        ("greedy", low, 1),
        ("greedy", high, 1),
        ("sample", low, SAMPLES[LOW]),
        ("sample", high, SAMPLES[HIGH]),
        ("top_p", low, SAMPLES[LOW]),
        ("top_p", high, SAMPLES[HIGH]),
    ]


def test_answers_that_never_end_or_are_not_answers_are_invalid(tokenizer, rows):
    encoded = encode_rows(tokenizer, rows)
    options = {e.prompt: e.options for e in encoded}
    stop = tokenizer.eos_token_id
    wrong = (*tokenizer.encode("zzz"), stop)

    def answer(prompt, k):
        if k % 4 == 0:
            return options[prompt][0][:-1]  # the answer without the end-of-turn: never ended
        if k % 4 == 1:
            return wrong
        return options[prompt][k % len(options[prompt])]

    result = generation_metrics(tokenizer, Scripted(answer), rows, [e.prompt for e in encoded])
    sample = result["sample"]
    assert sample["all"]["ended"] == pytest.approx(0.75)
    assert sample["all"]["valid"] == pytest.approx(0.5)
    assert sample["low"]["exact_match"] == pytest.approx(0.5)
    greedy = result["greedy"]  # k = 0 only: the unended answer
    assert (
        greedy["all"]["valid"] == 0
        and greedy["high"]["rows_without_valid"] == greedy["high"]["rows"]
    )


# ---------------------------------------------------------------------- the sampler


def test_gumbel_sampling_draws_from_the_softmax():
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0, -6.0, -9.0]])
    probs = torch.softmax(logits.double(), -1)[0]
    sampler = GumbelSampling(torch.Generator().manual_seed(0))
    draws = torch.stack(
        [sampler(None, logits.expand(1000, -1)).argmax(-1) for _ in range(40)]
    ).flatten()
    counts = torch.bincount(draws, minlength=8)
    assert chi_square_p(counts, probs) > 1e-6
    # the check has power: a distribution 10% off on the top two tokens fails it
    wrong = probs.clone()
    wrong[0] *= 0.9
    wrong[1] += probs[0] * 0.1
    assert chi_square_p(counts, wrong) < 1e-6


def test_the_nucleus_is_the_smallest_top_set_holding_top_p():
    probs = torch.tensor([[0.45, 0.30, 0.10, 0.08, 0.04, 0.03]], dtype=torch.float64)
    sampler = GumbelSampling(torch.Generator().manual_seed(1), top_p=0.9)
    kept = sampler.log_probs(None, probs.log()).exp()[0]
    # 0.45 + 0.30 + 0.10 = 0.85 < 0.9 <= 0.93: the first four, renormalized
    expected = torch.tensor([0.45, 0.30, 0.10, 0.08, 0, 0], dtype=torch.float64) / 0.93
    torch.testing.assert_close(kept, expected)
    draws = torch.cat([sampler(None, probs.log().expand(500, -1)).argmax(-1) for _ in range(8)])
    assert set(draws.tolist()) == {0, 1, 2, 3}


def _prompts(tokenizer, rows, count):
    return [e.prompt for e in encode_rows(tokenizer, rows[:count])]


def test_greedy_generation_in_a_padded_batch_is_the_unpadded_argmax(model_dir, tokenizer, rows):
    """Left padding, position ids and the KV cache change nothing: `generate` in one batch of
    prompts of different lengths gives each prompt's own step-by-step argmax."""
    scorer = HFScorer(model_dir, tokenizer.pad_token_id)
    prompts = _prompts(tokenizer, rows, 12)
    assert len({len(p) for p in prompts}) > 1
    generator = HFGenerator(scorer.model, tokenizer.pad_token_id, tokenizer.eos_token_id)
    generated = generator.generate(prompts, GREEDY, 1, seed="x")
    reference = greedy_decode(scorer, prompts, tokenizer.eos_token_id)
    assert [g[0] for g in generated] == [tuple(r) for r in reference]


def test_sampling_follows_the_models_full_distribution(model_dir, tokenizer, rows):
    """First tokens sampled in a padded batch fit the model's next-token distribution over the
    whole vocabulary (transformers' default top-k 50 would cut it); the nucleus stays inside
    transformers' own top-p set."""
    scorer = HFScorer(model_dir, tokenizer.pad_token_id)
    prompts = _prompts(tokenizer, rows, 2)
    assert len(prompts[0]) != len(prompts[1])
    generator = HFGenerator(scorer.model, tokenizer.pad_token_id, tokenizer.eos_token_id)
    n = 3000
    for decoding in (SAMPLE, TOP_P):
        samples = generator.generate(prompts, decoding, n, seed="fit", max_new_tokens=1)
        for prompt, drawn in zip(prompts, samples, strict=True):
            probs = scorer.logprobs([prompt])[0][-1].exp()
            if decoding is TOP_P:
                nucleus = GumbelSampling(torch.Generator(), 0.9).log_probs(None, probs.log()[None])
                probs = nucleus[0].exp()
            counts = torch.bincount(torch.tensor([s[0] for s in drawn]), minlength=len(probs))
            assert counts[probs == 0].sum() == 0
            assert chi_square_p(counts, probs) > 1e-6, decoding.name
            if decoding is SAMPLE:  # many tokens, none of them likely: far beyond any top 50
                assert (counts > 0).sum() > 100


def test_generation_is_seeded(model_dir, tokenizer, rows):
    scorer = HFScorer(model_dir, tokenizer.pad_token_id)
    generator = HFGenerator(scorer.model, tokenizer.pad_token_id, tokenizer.eos_token_id)
    prompts = _prompts(tokenizer, rows, 5)
    first = generator.generate(prompts, SAMPLE, 4, seed="s")
    assert first == generator.generate(prompts, SAMPLE, 4, seed="s")
    assert first != generator.generate(prompts, SAMPLE, 4, seed="t")
    torch.manual_seed(123)  # the global generator plays no part
    assert first == generator.generate(prompts, SAMPLE, 4, seed="s")
