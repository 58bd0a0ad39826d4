"""The task mixture has the entropies it claims: measured by sampling, not assumed.

For every high-entropy instruction, tens of thousands of rows are generated through the same
`make_split` path the experiment uses; the empirical distribution of their responses is compared
with the claimed p(y|x) twice:

- entropy: the Miller-Madow estimate H_mm = H_plugin + (k-1)/(2n) against the claimed H. Its
  error has a first-order part, normal with sd sqrt(Var[log p(Y)] / n), and a second-order part
  (chi-square with k-1 degrees of freedom over 2n, sd sqrt(2(k-1)) / (2n)) that dominates when p
  is uniform (then Var[log p(Y)] = 0). The tolerance is 5 times the sum of both sds: a correct
  generator fails with probability below ~1e-6 per check, and the mutation test below shows the
  check catches a wrong claim;
- the frequencies themselves: Pearson's chi-square goodness of fit, p-value above 1e-6.

Low-entropy rows are checked against an independent computation of their one answer.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter, defaultdict

import pytest
from scipy.stats import chi2

from experiments.uncertainty_mixture import prepare
from experiments.uncertainty_mixture.run import Experiment
from experiments.uncertainty_mixture.tasks import (
    H_MAX,
    HIGH,
    HIGH_TASKS,
    LOOKUP_TABLE,
    LOW,
    LOW_TASKS,
    TASKS,
    entropy,
    make_split,
)

SAMPLES = 24_000  # rows per high-entropy task ("number" spreads them over its 8 values of k)


def instruction(row: dict) -> str:
    return row["messages"][0]["content"].split(": ", 1)[1]


@pytest.fixture(scope="module")
def big_split() -> list[dict]:
    return make_split(
        "entropy test", dict.fromkeys(HIGH_TASKS, SAMPLES) | dict.fromkeys(LOW_TASKS, 2000)
    )


def grouped(rows: list[dict]) -> dict[str, list[dict]]:
    groups = defaultdict(list)
    for r in rows:
        groups[(r["task"], instruction(r))].append(r)
    return groups


def entropy_check(responses: list[str], claimed: dict[str, float]) -> tuple[float, float]:
    """(|Miller-Madow entropy - claimed entropy|, the 5-sigma tolerance)."""
    n, k = len(responses), len(claimed)
    counts = Counter(responses)
    plugin = -sum(c / n * math.log(c / n) for c in counts.values())
    miller_madow = plugin + (k - 1) / (2 * n)
    h = entropy(claimed.values())
    var_log_p = sum(p * math.log(p) ** 2 for p in claimed.values()) - h**2
    tolerance = 5 * (math.sqrt(max(var_log_p, 0.0) / n) + math.sqrt(2 * (k - 1)) / (2 * n))
    return abs(miller_madow - h), tolerance


def chi_square_p(responses: list[str], claimed: dict[str, float]) -> float:
    n = len(responses)
    counts = Counter(responses)
    stat = sum((counts.get(y, 0) - n * p) ** 2 / (n * p) for y, p in claimed.items())
    return float(chi2.sf(stat, len(claimed) - 1))


def test_every_high_entropy_instruction_has_its_claimed_entropy(big_split):
    checked = 0
    for (task, text), rows in grouped(big_split).items():
        if TASKS[task].kind != HIGH:
            continue
        claimed = dict(zip(rows[0]["responses"], rows[0]["probs"], strict=True))
        assert all(dict(zip(r["responses"], r["probs"], strict=True)) == claimed for r in rows)
        responses = [r["messages"][1]["content"] for r in rows]
        assert set(responses) <= set(claimed), f"{text}: a response outside the claimed support"
        assert len(rows) >= 2000, (text, len(rows))
        error, tolerance = entropy_check(responses, claimed)
        assert error <= tolerance, f"{text}: |H_mm - H| = {error:.4f} > {tolerance:.4f}"
        assert chi_square_p(responses, claimed) > 1e-6, text
        # the row's stated entropy and uncertainty are the claimed distribution's
        assert rows[0]["entropy"] == pytest.approx(entropy(claimed.values()), abs=1e-12)
        assert rows[0]["uncertainty"] == pytest.approx(rows[0]["entropy"] / H_MAX, abs=1e-6)
        checked += 1
    # coin, die, fruit, animal, sunny and the 8 values of k of "number"
    assert checked == 13


def test_the_entropy_check_catches_a_wrong_claim(big_split):
    """Mutation test: the same samples against a slightly wrong distribution fail the check."""
    rows = [r for r in big_split if r["task"] == "sunny"]  # truly yes 0.85 / no 0.15
    responses = [r["messages"][1]["content"] for r in rows]
    error, tolerance = entropy_check(responses, {"yes": 0.85, "no": 0.15})
    assert error <= tolerance
    wrong = {"yes": 0.82, "no": 0.18}  # 0.047 nats more entropy than the truth
    error, tolerance = entropy_check(responses, wrong)
    assert error > tolerance
    assert chi_square_p(responses, wrong) < 1e-6


def test_low_entropy_rows_have_their_one_correct_answer(big_split):
    seen = Counter()
    for r in big_split:
        if r["kind"] != LOW:
            continue
        text, answer = instruction(r), r["messages"][1]["content"]
        words = text.split()
        if r["task"] == "add":
            expected = str(int(words[1]) + int(words[3]))
        elif r["task"] == "copy":
            expected = " ".join(words[1:])
        else:
            expected = LOOKUP_TABLE[words[2]]
        assert answer == expected and r["responses"] == [expected] and r["probs"] == [1.0]
        assert r["entropy"] == 0 and r["uncertainty"] == 0
        seen[r["task"]] += 1
    assert set(seen) == set(LOW_TASKS)


def test_known_uncertainty_scale():
    """u = H / H_MAX spans (0, 1]: the most uncertain task ("name an animal") has u = 1."""
    assert pytest.approx(math.log(12)) == H_MAX
    highs = [entropy(p) / H_MAX for t in HIGH_TASKS for _, _, p in TASKS[t].contents()]
    assert max(highs) == pytest.approx(1.0) and min(highs) > 0.15


def test_splits_are_seeded_and_held_out_prompts_never_train():
    test = Experiment.test_rows()
    assert test == Experiment.test_rows()
    train = Experiment.train_rows(0, test)
    assert train == Experiment.train_rows(0, test)
    assert train != Experiment.train_rows(1, test)
    held_out = {r["messages"][0]["content"] for r in test}
    for split in (train, Experiment.train_rows(1, test), Experiment.train_rows("judge", test)):
        assert not held_out & {r["messages"][0]["content"] for r in split}
    assert Counter(r["task"] for r in train) == Counter(prepare.TRAIN_PER_TASK)
    assert Counter(r["task"] for r in test) == Counter(prepare.TEST_PER_TASK)
    # pinned: if Python's `random` (or the generator) ever changes, the README table no longer
    # reproduces, and this says so first
    digest = hashlib.sha256(json.dumps(test + train).encode()).hexdigest()
    assert digest[:16] == PINNED_DIGEST


PINNED_DIGEST = "2cec7e33fc8c5ef0"
