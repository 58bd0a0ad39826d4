"""The Instruction Modelling experiment end to end in its CI size: `run --smoke` (SFT and IM with
smoothed instructions, 40 steps, a fifth of the data).

Checks what the output files say: the evaluator scores exactly the response tokens axolotl's own
eval scores (with and without trained instructions), the IM arm trained its instruction tokens
with epsilon 0.1 and its responses with 0, generated answers agree with the token-level numbers,
and the report holds them.
"""

from __future__ import annotations

import json
import math

import pytest
import yaml

from tests.experiments.helpers import run_smoke

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    work, out, stdout = run_smoke(
        "experiments.instruction_modelling.run", tmp_path_factory.mktemp("im-smoke")
    )
    runs = {r["arm"]: r for r in json.loads((out / "results.json").read_text())["runs"]}
    return work, out, stdout, runs


def test_the_evaluator_scores_the_response_tokens_axolotl_evaluates(smoke):
    _, _, _, runs = smoke
    assert set(runs) == {"sft", "im_smooth"}
    sft, im = runs["sft"]["axolotl"]["eval"], runs["im_smooth"]["axolotl"]["eval"]
    # SFT evaluates response tokens only; IM also its instruction tokens, reported apart
    assert "eval_ual_nll_instruction" not in sft
    assert runs["sft"]["all"]["tokens"] == sft["eval_ual_tokens"]
    assert runs["sft"]["all"]["token_nll"] == pytest.approx(sft["eval_ual_nll"], abs=2e-4)
    assert runs["im_smooth"]["all"]["tokens"] == im["eval_ual_tokens_response"]
    assert runs["im_smooth"]["all"]["token_nll"] == pytest.approx(
        im["eval_ual_nll_response"], abs=2e-4
    )
    # the held-out instructions are long: over 20 instruction tokens per response token
    assert im["eval_ual_tokens_instruction"] > 20 * im["eval_ual_tokens_response"]
    for run in runs.values():
        assert run["axolotl"]["steps"] == 40


def test_the_im_arm_smooths_its_instructions_only(smoke):
    """epsilon 0.1 on instruction tokens, 0 on responses: the logged mean epsilon over trained
    tokens is 0.1 x the instruction share, at every logging step."""
    work, _, _, _ = smoke
    for arm, instructions in (("sft", False), ("im_smooth", True)):
        model = work / "runs" / f"{arm}-seed0" / "model"
        history = json.loads(next(model.glob("checkpoint-*/trainer_state.json")).read_text())
        logs = [r for r in history["log_history"] if "loss" in r]
        assert logs
        for record in logs:
            if instructions:
                assert record["ual_instruction_fraction"] > 0.9
                assert record["ual_epsilon_mean"] == pytest.approx(
                    0.1 * record["ual_instruction_fraction"], abs=2e-6
                )
            else:
                assert "ual_instruction_fraction" not in record
                assert record["ual_epsilon_mean"] == 0.0
        cfg = yaml.safe_load((model.parent / "config.yml").read_text())
        assert cfg["train_on_inputs"] is instructions and cfg["max_steps"] == 40


def test_generated_answers_agree_with_the_token_level_metrics(smoke):
    _, _, _, runs = smoke
    for run in runs.values():
        generation = run["generation"]
        assert generation["greedy"]["low"]["exact_match"] == run["low"]["exact_match"]
        sampled = generation["sample"]["high"]
        sd = math.sqrt(0.25 / sampled["samples"])
        assert abs(sampled["valid"] - run["high"]["support_mass"]) < 5 * sd, run["arm"]


def test_report_files_hold_the_numbers(smoke):
    _, out, stdout, runs = smoke
    text = (out / "results.md").read_text()
    assert text in stdout
    rows = {
        label: [line for line in text.splitlines() if line.startswith(f"| {label} |")]
        for label in ("SFT", "IM, instructions smoothed 0.1")
    }
    sft, im = runs["sft"], runs["im_smooth"]
    assert rows["SFT"][0].startswith(
        f"| SFT | {sft['low']['exact_match']:.3f} | {sft['low']['token_nll']:.3f} "
        f"| {sft['high']['kl']:.3f} |"
    )
    difference = im["high"]["kl"] - sft["high"]["kl"]
    assert rows["IM, instructions smoothed 0.1"][1].split(" | ")[3] == f"{difference:+.3f}"
    assert "| truth (oracle) | 1.000 | 0.000 | 0.000 |" in text
    assert "| truth (sampled) | 1.000 | 1.000 | 1.000 | 1.000 |" in text
    png = (out / "results.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000
