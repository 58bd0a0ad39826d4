"""`axolotl train` end to end: the logged loss is the per-sample label-smoothed CE.

Each run here puts every sample in the first optimizer step, so its first logged loss must equal
an independent reference: axolotl's own tokenization, `F.cross_entropy(label_smoothing=eps_i)`
per sample in float64 on the initial weights, summed over trained tokens and divided by their
count.
"""

from __future__ import annotations

import json

import pytest

from axolotl_ual.rows import ALPACA, CHAT, content_fields, sample_key
from tests.reference import axolotl_tokenized, read_jsonl, smoothed_loss_reference
from tests.support import SAMPLE_ALPACA, SAMPLE_CHAT, log_history, train, ual_config, write_config

pytestmark = pytest.mark.e2e

# 54 rows of 23-53 tokens (about 2200 in all): one micro-batch of 64 rows, or one pack
PADDED = {"micro_batch_size": 64, "sample_packing": False}
PACKED = {"micro_batch_size": 1, "sample_packing": True, "sequence_len": 4096}


def _one_step(tiny_model, tmp_path, layout=PADDED, **overrides) -> dict:
    """A config of one optimizer step, which holds every sample (`layout`)."""
    return ual_config(tiny_model, tmp_path, max_steps=1, **layout, **overrides)


def _check(tiny_model, tmp_path, cfg, tokenized, epsilons, loss_path="fused", **train_options):
    records = train(write_config(tmp_path / "cfg.yml", cfg), **train_options)
    printed = next(r for r in records if "loss" in r)
    logged = next(r for r in log_history(tmp_path / "out") if "loss" in r)
    expected_loss, expected_eps = smoothed_loss_reference(tiny_model, tokenized, epsilons)
    assert logged["loss"] == pytest.approx(expected_loss, rel=1e-6)
    assert printed["loss"] == pytest.approx(expected_loss, rel=2e-4)  # the console's 4 digits
    assert logged["ual_epsilon_mean"] == pytest.approx(expected_eps, abs=1e-6)
    run = json.loads((tmp_path / "out" / "ual_run.json").read_text())
    assert run["loss_path"] == loss_path


@pytest.mark.parametrize("layout", [PADDED, PACKED], ids=["padded", "packed"])
def test_field_uncertainty(tiny_model, tiny_tokenizer, tmp_path, layout):
    cfg = _one_step(tiny_model, tmp_path, layout)
    rows = read_jsonl(SAMPLE_CHAT)
    tokenized = axolotl_tokenized(tiny_tokenizer, rows, sequence_len=cfg["sequence_len"])
    # through `accelerate launch`, as a plain `axolotl train` runs (the others skip it)
    epsilons = [0.2 * r["uncertainty"] for r in rows]
    _check(tiny_model, tmp_path, cfg, tokenized, epsilons, launcher="accelerate")


def test_rank_mapping_and_logits_path(tiny_model, tiny_tokenizer, tmp_path):
    rows = read_jsonl(SAMPLE_CHAT)
    cfg = _one_step(
        tiny_model, tmp_path, ual_mapping="rank", ual_smoothing_min=0.05, ual_fused_loss=False
    )
    tokenized = axolotl_tokenized(tiny_tokenizer, rows)
    # each sample's mean 0-based rank among all samples' uncertainties, over (n - 1)
    values = sorted(r["uncertainty"] for r in rows)
    assert len(set(values)) < len(values)  # the sample data has ties: they share their mean rank

    def quantile(u):
        positions = [i for i, v in enumerate(values) if v == u]
        return sum(positions) / len(positions) / (len(values) - 1)

    epsilons = [0.05 + 0.15 * quantile(r["uncertainty"]) for r in rows]
    _check(tiny_model, tmp_path, cfg, tokenized, epsilons, loss_path="logits")


def test_constant_source_is_plain_label_smoothing(tiny_model, tiny_tokenizer, tmp_path):
    rows = read_jsonl(SAMPLE_CHAT)
    cfg = _one_step(tiny_model, tmp_path, ual_uncertainty_source="constant", ual_smoothing_max=0.1)
    tokenized = axolotl_tokenized(tiny_tokenizer, rows)
    _check(tiny_model, tmp_path, cfg, tokenized, [0.1] * len(rows))


def test_sidecar_annotations(tiny_model, tiny_tokenizer, tmp_path):
    rows = read_jsonl(SAMPLE_CHAT)
    unscored = tmp_path / "unscored.jsonl"
    unscored.write_text("".join(json.dumps({"messages": r["messages"]}) + "\n" for r in rows))
    sidecar = tmp_path / "scores.jsonl"
    # deliberately different from the data's own values, in reverse order
    scores = [round(1.0 - r["uncertainty"], 3) for r in rows]
    sidecar.write_text(
        "".join(
            json.dumps({"sample_key": sample_key(r, content_fields(CHAT)), "uncertainty": s}) + "\n"
            for r, s in reversed(list(zip(rows, scores, strict=True)))
        )
    )
    cfg = _one_step(
        tiny_model,
        tmp_path,
        ual_uncertainty_source="sidecar",
        ual_uncertainty_file=str(sidecar),
        datasets=[{"path": str(unscored), "type": "axolotl_ual.chat_template"}],
    )
    tokenized = axolotl_tokenized(tiny_tokenizer, rows)
    _check(tiny_model, tmp_path, cfg, tokenized, [0.2 * s for s in scores])


def test_two_datasets_chat_and_alpaca(tiny_model, tiny_tokenizer, tmp_path):
    chat, alpaca = read_jsonl(SAMPLE_CHAT)[:30], read_jsonl(SAMPLE_ALPACA)[30:]
    (tmp_path / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chat))
    (tmp_path / "alpaca.jsonl").write_text("".join(json.dumps(r) + "\n" for r in alpaca))
    cfg = _one_step(
        tiny_model,
        tmp_path,
        datasets=[
            {"path": str(tmp_path / "chat.jsonl"), "type": "axolotl_ual.chat_template"},
            {"path": str(tmp_path / "alpaca.jsonl"), "type": "axolotl_ual.alpaca"},
        ],
    )
    tokenized = axolotl_tokenized(tiny_tokenizer, chat) + axolotl_tokenized(
        tiny_tokenizer, alpaca, ds_type="alpaca"
    )
    assert content_fields(ALPACA) == ("instruction", "input", "output")
    _check(tiny_model, tmp_path, cfg, tokenized, [0.2 * r["uncertainty"] for r in chat + alpaca])
