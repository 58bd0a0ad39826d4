"""The experiment end to end in its CI size: `run --smoke` (judge, elicit, 2 arms, 40 steps).

Checks what the output files say, not only that the command ran: the evaluator and axolotl's own
eval agree on the same held-out tokens, generated answers agree with the token-level numbers,
the UAL arm trained with epsilon = 0.2 u, the elicited arm trained on the judge's scores with the
rank mapping, and the report holds those numbers.
"""

from __future__ import annotations

import json
import math

import pytest
import yaml

from axolotl_ual.toolkit import read_jsonl
from experiments.harness.report import axolotl_logs
from tests.experiments.helpers import run_smoke

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return run_smoke("experiments.uncertainty_mixture.run", tmp_path_factory.mktemp("smoke"))


def test_evaluator_and_axolotl_eval_read_the_same_tokens(smoke):
    work, out, _ = smoke
    runs = {r["arm"]: r for r in json.loads((out / "results.json").read_text())["runs"]}
    assert set(runs) == {"ual_known", "ual_elicited"}
    for arm, run in runs.items():
        logged = run["axolotl"]["eval"]
        assert run["all"]["tokens"] == logged["eval_ual_tokens"], arm
        assert run["all"]["token_nll"] == pytest.approx(logged["eval_ual_nll"], abs=2e-4), arm
        assert run["axolotl"]["steps"] == 40
        assert 0 <= run["low"]["exact_match"] <= 1 and run["high"]["kl"] > 0
        assert 0 < run["high"]["support_mass"] <= 1 and 0 <= run["all"]["ece"] <= 1
        cfg = yaml.safe_load((work / "runs" / f"{arm}-seed0" / "config.yml").read_text())
        assert cfg["seed"] == 0 and cfg["max_steps"] == 40 and cfg["dataset_num_proc"] == 1


def test_generated_answers_agree_with_the_token_level_metrics(smoke):
    """Greedy `generate` is the evaluator's own greedy decoding; sampling at T = 1 finds valid
    answers as often as the model's probability mass on them says (binomial noise, 5 sd)."""
    _, out, _ = smoke
    runs = json.loads((out / "results.json").read_text())["runs"]
    for run in runs:
        generation = run["generation"]
        assert generation["greedy"]["low"]["exact_match"] == run["low"]["exact_match"]
        sampled = generation["sample"]["high"]
        sd = math.sqrt(0.25 / sampled["samples"])  # bounds the sd of a mean of Bernoullis
        assert abs(sampled["valid"] - run["high"]["support_mass"]) < 5 * sd, run["arm"]
        for decoding in ("greedy", "sample", "top_p"):
            assert 0 <= generation[decoding]["high"]["valid"] <= 1
            assert (
                generation[decoding]["low"]["exact_match"] == generation[decoding]["low"]["valid"]
            )


def test_the_known_arm_trains_with_epsilon_of_the_true_uncertainty(smoke):
    work, _, _ = smoke
    model = work / "runs" / "ual_known-seed0" / "model"
    history = json.loads(next(model.glob("checkpoint-*/trainer_state.json")).read_text())[
        "log_history"
    ]
    logs = [r for r in history if "loss" in r]
    assert logs
    for record in logs:
        assert record["ual_uncertainty_mean"] > 0  # the batches hold high-entropy rows
        assert record["ual_epsilon_mean"] == pytest.approx(
            0.2 * record["ual_uncertainty_mean"], abs=2e-6
        )
    assert json.loads((model / "ual_run.json").read_text())["mapping"] == "linear"


def test_the_elicited_arm_trains_on_the_judges_scores(smoke):
    work, _, _ = smoke
    known = read_jsonl(work / "data" / "train-0.jsonl")
    elicited = read_jsonl(work / "data" / "train-0.elicited.jsonl")
    assert [r["messages"] for r in elicited] == [r["messages"] for r in known]
    assert all(0 <= r["uncertainty"] <= 1 and r["uncertainty_score"] > 0 for r in elicited)
    assert any(a["uncertainty"] != b["uncertainty"] for a, b in zip(known, elicited, strict=True))
    run_dir = work / "runs" / "ual_elicited-seed0"
    assert json.loads((run_dir / "model" / "ual_run.json").read_text())["mapping"] == "rank"
    cfg = yaml.safe_load((run_dir / "config.yml").read_text())
    assert cfg["datasets"][0]["path"].endswith("train-0.elicited.jsonl")
    # the judge: plain SFT (epsilon 0) on its own split
    judge = axolotl_logs(work / "runs" / "judge-seed1000" / "model")
    assert judge["ual_epsilon_mean"] == 0.0


def test_report_files_hold_the_numbers(smoke):
    _, out, stdout = smoke
    text = (out / "results.md").read_text()
    assert text in stdout  # what the command prints is what it writes
    runs = {r["arm"]: r for r in json.loads((out / "results.json").read_text())["runs"]}
    for label, arm in (("UAL, known u", "ual_known"), ("UAL, elicited u", "ual_elicited")):
        row = next(line for line in text.splitlines() if line.startswith(f"| {label} |"))
        assert f"| {runs[arm]['low']['exact_match']:.3f} | {runs[arm]['high']['kl']:.3f} |" in row
    assert "| truth (oracle) | 1.000 | 0.000 |" in text
    for label, arm in (("UAL, known u", "ual_known"), ("UAL, elicited u", "ual_elicited")):
        generated = runs[arm]["generation"]
        row = [line for line in text.splitlines() if line.startswith(f"| {label} |")][1]
        assert row.startswith(
            f"| {label} | {generated['greedy']['low']['exact_match']:.3f} "
            f"| {generated['greedy']['high']['valid']:.3f} "
            f"| {generated['sample']['low']['exact_match']:.3f} |"
        )
    png = (out / "results.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000
