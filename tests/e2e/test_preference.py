"""Point-wise preference (ULMA) through `axolotl train`, against a float64 reference.

At step 0 the policy is the reference (LoRA's B = 0; full fine-tuning's initial weights), so
Delta = 0 and the first loss checks only half of the objective. The second step's loss is
therefore checked too, against the reference computed from the checkpoint saved after step
1 (the policy) and the base model (the reference): a wrong reference, Delta or normalization
fails there. Every row is in every step (one micro-batch), so the batches are known.
"""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from axolotl_ual.toolkit import console_script
from tests.reference import axolotl_tokenized, pointwise_preference_reference, read_jsonl
from tests.support import DATA, LORA_ON_CPU, log_history, train, ual_config, write_config

pytestmark = pytest.mark.e2e

SAMPLE_POINTWISE = DATA / "sample_pointwise.jsonl"
BETA = 0.5
# all 108 rows in one pack: every step sees every row
LORA_PACKED = {
    "adapter": "lora",
    **LORA_ON_CPU,
    "learning_rate": 0.02,
    "micro_batch_size": 1,
    "sample_packing": True,
    "sequence_len": 4096,  # the 32 rows in one pack: every step sees every row
}
FULL_FINETUNE = {"learning_rate": 0.002, "micro_batch_size": 128}  # every row in each step's batch


def _models(tiny_model, checkpoint, *, adapter: bool):
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float64).eval()
    if adapter:
        from peft import PeftModel

        policy = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float64), checkpoint
        ).eval()
    else:
        policy = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float64).eval()
    return policy, base


def _run(tiny_model, tmp_path, rows, *, launcher=None, env=None, **overrides):
    data = tmp_path / "pointwise.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = ual_config(
        tiny_model,
        tmp_path,
        datasets=[{"path": str(data), "type": "axolotl_ual.chat_template"}],
        max_steps=2,
        save_steps=1,
        ual_objective="ulma",
        ual_preference_beta=BETA,
        **overrides,
    )
    records = train(write_config(tmp_path / "cfg.yml", cfg), launcher=launcher, env=env)
    losses = [r["loss"] for r in log_history(tmp_path / "out") if "loss" in r]
    run = json.loads((tmp_path / "out" / "ual_run.json").read_text())
    return cfg, records, losses, run


def _check_two_steps(tiny_model, tiny_tokenizer, tmp_path, rows, cfg, losses, adapter, **kwargs):
    """Step 1 against policy = reference = the initial model; step 2 against the policy saved
    after step 1 and the initial model as reference."""
    from transformers import AutoModelForCausalLM

    initial = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float64).eval()
    first = _expected(tiny_model, tiny_tokenizer, rows, cfg, initial, initial, **kwargs)
    assert losses[0] == pytest.approx(first, rel=1e-6)
    policy, reference = _models(tiny_model, tmp_path / "out" / "checkpoint-1", adapter=adapter)
    second = _expected(tiny_model, tiny_tokenizer, rows, cfg, policy, reference, **kwargs)
    assert abs(second - first) > 1e-3  # the check below can tell a wrong reference apart
    assert losses[1] == pytest.approx(second, rel=1e-5)


def _expected(tiny_model, tiny_tokenizer, rows, cfg, policy, reference, **kwargs):
    tokenized = axolotl_tokenized(tiny_tokenizer, rows, sequence_len=cfg["sequence_len"])
    return pointwise_preference_reference(
        policy,
        reference,
        tokenized,
        [r["label"] for r in rows],
        [r["uncertainty"] for r in rows],
        eps_max=cfg["ual_smoothing_max"],
        beta=BETA,
        **kwargs,
    )


def test_lora_packed_adapter_disabled_reference(tiny_model, tiny_tokenizer, tmp_path):
    rows = read_jsonl(SAMPLE_POINTWISE)[:32]  # 16 positives, 16 negatives: one 4k-token pack
    cfg, records, losses, run = _run(tiny_model, tmp_path, rows, **LORA_PACKED)
    assert run["objective"] == "ulma" and run["reference"] == "the model with its adapters disabled"
    assert run["loss_path"] == "fused"
    _check_two_steps(tiny_model, tiny_tokenizer, tmp_path, rows, cfg, losses, adapter=True)
    logged = [r for r in records if "loss" in r]
    assert logged[0]["ual_positive_fraction"] == pytest.approx(0.5)
    assert logged[0]["ual_rewards_margin"] == pytest.approx(0.0, abs=1e-6)  # policy == reference
    assert logged[1]["ual_rewards_margin"] != pytest.approx(0.0, abs=1e-6)


def test_full_finetune_precomputed_reference_continuous_labels(
    tiny_model, tiny_tokenizer, tmp_path
):
    rows = read_jsonl(SAMPLE_POINTWISE)
    for i, row in enumerate(rows):  # scores in [0, 1]; the positives stay demonstrations
        if row["label"] == 0:
            row["label"] = round(0.1 * (i % 7), 2)
    cfg, _, losses, run = _run(
        tiny_model, tmp_path, rows, ual_preference_labels="continuous", **FULL_FINETUNE
    )
    assert run["reference"] == "the initial weights"
    assert list((tmp_path / "prepared").rglob("ual-reference-*")), "reference not cached"
    _check_two_steps(
        tiny_model, tiny_tokenizer, tmp_path, rows, cfg, losses, adapter=False, continuous=True
    )


@pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None, reason="DeepSpeed is not installed"
)
def test_full_finetune_under_deepspeed_zero3(tiny_model, tiny_tokenizer, tmp_path):
    """ZeRO-3 partitions every weight across 2 processes when the model loads: the reference
    pass runs on both ranks together, and the loss inside the head's call, where its weight is
    gathered. (On CPU accelerate does not split the data across DeepSpeed's ranks: both train
    on every row, so the losses are one process's; the weights are partitioned all the same.)
    """
    rows = read_jsonl(SAMPLE_POINTWISE)
    zero3 = {
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "zero_optimization": {
            "stage": 3,
            "stage3_param_persistence_threshold": 0,  # partition even the tiny model's weights
            "stage3_gather_16bit_weights_on_model_save": True,
        },
        "zero_allow_untested_optimizer": True,
    }
    (tmp_path / "zero3.json").write_text(json.dumps(zero3))
    launcher = [
        console_script("accelerate"),
        *("launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"),
        *("--mixed_precision", "no", "--dynamo_backend", "no", "-m", "axolotl.cli.train"),
    ]
    cfg, _, losses, run = _run(
        tiny_model,
        tmp_path,
        rows,
        launcher=launcher,
        env={"DS_ACCELERATOR": "cpu"},
        deepspeed=str(tmp_path / "zero3.json"),
        **FULL_FINETUNE,
    )
    assert run["sharding"] == "deepspeed_zero3" and run["loss_path"] == "fused"
    assert run["head_sharded_outside_forward"] is True
    assert run["trainable_parameters"] > 100_000  # the whole tiny model, counted unpartitioned
    assert list((tmp_path / "prepared").rglob("ual-reference-*")), "reference not cached"
    _check_two_steps(tiny_model, tiny_tokenizer, tmp_path, rows, cfg, losses, adapter=False)
