"""The point-wise preference experiment in its CI size: `run --smoke` (base, ULMA and KTO).

Checks what the output files say, not only that the command ran: ULMA (the UAL plugin's SFT
path) and KTO (axolotl's `rl: kto`, TRL's KTOTrainer) trained on exactly the same rows (prompt
tokens, trained tokens, labels) from the same initial adapter; those tokens are the ones the
evaluator scores; and the report holds the numbers.
"""

from __future__ import annotations

import json

import pytest

from axolotl_ual.toolkit import read_jsonl
from experiments.harness.evaluate import encode_rows
from experiments.pointwise_preference.run import SMOKE
from tests.experiments.helpers import run_smoke

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return run_smoke(
        "experiments.pointwise_preference.run", tmp_path_factory.mktemp("pointwise-smoke")
    )


def probe(work, arm: str) -> dict:
    return json.loads((work / "runs" / f"{arm}-seed0" / "model" / "probe.json").read_text())


def _key(row: dict) -> str:
    return json.dumps(row, sort_keys=True)


def test_ulma_and_kto_train_the_same_rows_from_the_same_adapter(smoke):
    work, _, _ = smoke
    ulma, kto = probe(work, "ulma"), probe(work, "kto")
    assert ulma["trainer"] == "UALTrainer" and kto["trainer"] == "AxolotlKTOTrainer"
    rows = read_jsonl(work / "data" / "train-0.all.jsonl")
    assert len(ulma["trained"]) == len(kto["trained"]) == len(rows)
    assert sorted(map(_key, ulma["trained"])) == sorted(map(_key, kto["trained"]))
    assert sorted(r["label"] for r in ulma["trained"]) == sorted(r["label"] for r in rows)
    assert ulma["initial_adapter_sha256"] == kto["initial_adapter_sha256"]
    run = json.loads((work / "runs" / "ulma-seed0" / "model" / "ual_run.json").read_text())
    assert run["objective"] == "ulma"
    assert run["reference"] == "the model with its adapters disabled"
    assert run["smoothing_max"] == 0.0  # ULMA exactly, no label smoothing


def test_the_evaluator_scores_the_tokens_the_trainers_train(smoke):
    """Each training row's prompt and response tokens, as the evaluator encodes them, are the
    prompt tokens and the trained tokens both trainers recorded."""
    from transformers import AutoTokenizer

    work, _, _ = smoke
    tokenizer = AutoTokenizer.from_pretrained(work / "runs" / "base" / "model")
    rows = read_jsonl(work / "data" / "train-0.all.jsonl")
    encoded = encode_rows(
        tokenizer,
        [
            {**r, "kind": "low", "responses": [r["messages"][1]["content"]], "probs": [1.0]}
            for r in rows
        ],
    )
    expected = sorted(
        _key({"prompt": list(e.prompt), "trained": list(e.options[0]), "label": r["label"]})
        for e, r in zip(encoded, rows, strict=True)
    )
    assert sorted(map(_key, probe(work, "kto")["trained"])) == expected


def test_each_run_is_measured(smoke):
    work, out, _ = smoke
    runs = {r["arm"]: r for r in json.loads((out / "results.json").read_text())["runs"]}
    assert set(runs) == {"ulma", "kto"}
    for arm, run in runs.items():
        assert len(probe(work, arm)["step_wall_s"]) == SMOKE["max_steps"] == run["cost"]["steps"]
        assert run["axolotl"]["steps"] == SMOKE["max_steps"]
        cost = run["cost"]
        assert cost["step_cpu_s"] > 0 and 0 < cost["step_wall_s"] < cost["run_s"]
        # the process's peak holds the torch / axolotl runtime, hundreds of MiB
        assert cost["peak_rss_mib"] >= cost["rss_at_train_begin_mib"] > 100
        assert 0 <= run["all"]["preference_accuracy"] <= 1
        assert 0 < run["all"]["good_prob"] + run["all"]["bad_prob"] <= 1
    logs = json.loads(
        next(
            (work / "runs" / "kto-seed0" / "model").glob("checkpoint-*/trainer_state.json")
        ).read_text()
    )["log_history"]
    assert any("rewards/chosen" in r for r in logs)  # TRL's KTO loss ran


def test_report_files_hold_the_numbers(smoke):
    _, out, stdout = smoke
    text = (out / "results.md").read_text()
    assert text in stdout  # what the command prints is what it writes
    data = json.loads((out / "results.json").read_text())
    runs = {r["arm"]: r for r in data["runs"]}
    for label, arm in (("ULMA", "ulma"), ("KTO (rl: kto)", "kto")):
        row = next(line for line in text.splitlines() if line.startswith(f"| {label} |"))
        a = runs[arm]["all"]
        assert row.startswith(
            f"| {label} | {a['good_token_logp']:.3f} | {a['bad_token_logp']:.3f} |"
        )
    base = data["base"]["all"]
    assert f"| base model (the reference) | {base['good_token_logp']:.3f} |" in text
    assert data["settings"]["split_scale"] == SMOKE["per_task_scale"]
    png = (out / "results.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000
