"""Instruction Modelling through `axolotl train`: instruction tokens with their own weight and
smoothing, against an independent float64 reference and against axolotl's own losses.

Tokenization of the references comes from axolotl's own `chat_template` strategy: with
`train_on_inputs: true` (what is trained) and without (what is a response), not from ours.
"""

from __future__ import annotations

import json

import pytest

from tests.reference import axolotl_tokenized, instruction_loss_reference, read_jsonl
from tests.support import (
    SAMPLE_CHAT,
    log_history,
    plain_axolotl,
    train,
    ual_config,
    write_config,
)

pytestmark = pytest.mark.e2e

PADDED = {"micro_batch_size": 64, "sample_packing": False}
PACKED = {"micro_batch_size": 1, "sample_packing": True, "sequence_len": 4096}


@pytest.mark.parametrize(
    "layout, fused",
    [(PADDED, True), (PACKED, False)],
    ids=["padded-fused", "packed-logits"],
)
def test_first_loss_equals_the_reference(tiny_model, tiny_tokenizer, tmp_path, layout, fused):
    rows = read_jsonl(SAMPLE_CHAT)
    cfg = ual_config(
        tiny_model,
        tmp_path,
        max_steps=1,
        train_on_inputs=True,
        ual_instruction_weight=0.4,
        ual_instruction_smoothing=0.05,
        ual_smoothing_max=0.2,
        ual_fused_loss=fused,
        **layout,
    )
    printed = next(r for r in train(write_config(tmp_path / "cfg.yml", cfg)) if "loss" in r)
    logged = next(r for r in log_history(tmp_path / "out") if "loss" in r)
    length = cfg["sequence_len"]
    expected, eps_mean, instruction_share = instruction_loss_reference(
        tiny_model,
        axolotl_tokenized(tiny_tokenizer, rows, sequence_len=length, train_on_inputs=True),
        axolotl_tokenized(tiny_tokenizer, rows, sequence_len=length, train_on_inputs=False),
        [r["uncertainty"] for r in rows],
        eps_max=0.2,
        instruction_weight=0.4,
        instruction_eps=0.05,
    )
    assert 0.2 < instruction_share < 0.9  # the sample data has long enough instructions
    assert logged["loss"] == pytest.approx(expected, rel=1e-6)
    assert printed["loss"] == pytest.approx(expected, rel=2e-4)
    assert logged["ual_epsilon_mean"] == pytest.approx(eps_mean, abs=1e-6)
    assert logged["ual_instruction_fraction"] == pytest.approx(instruction_share, abs=1e-6)
    run = json.loads((tmp_path / "out" / "ual_run.json").read_text())
    assert run["loss_path"] == ("fused" if fused else "logits")


def test_weight_one_without_smoothing_is_axolotls_train_on_inputs(losses_of):
    ual = losses_of("im", train_on_inputs=True, ual_smoothing_max=0.0, ual_instruction_weight=1.0)
    axolotl = losses_of("im_sft", **plain_axolotl(train_on_inputs=True))
    assert ual == pytest.approx(axolotl, rel=1e-5)


def test_weight_zero_is_axolotls_plain_sft(losses_of, plain_sft_losses):
    ual = losses_of("im0", train_on_inputs=True, ual_smoothing_max=0.0, ual_instruction_weight=0.0)
    assert ual == pytest.approx(plain_sft_losses, rel=1e-5)
