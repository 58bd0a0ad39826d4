"""The base model and every arm's axolotl config.

Fixed before any held-out result was seen (see experiments/README.md, "Protocol"):

- one base model for every arm and seed: the uncertainty-mixture experiment's tiny Llama
  (random init, seed 0, its tokenizer), fully fine-tuned once with plain SFT on an unfiltered
  pretraining split where half the responses are bad (`BASE`);
- every arm trains a LoRA adapter on that base with the same LoRA, batch, steps, learning rate,
  schedule and seed (`COMMON`), so the reference model of ULMA, point-wise DPO and KTO is the
  same frozen base (the model with its adapter disabled);
- the arms' own keys (`ARMS`): each objective at its default beta, 0.1, no other tuning.
"""

from __future__ import annotations

from pathlib import Path

from ..harness.runner import Arm
from ..uncertainty_mixture.prepare import build_base_model  # noqa: F401

CPU = {
    "bf16": False,
    "fp16": False,
    "tf32": False,
    "attn_implementation": "sdpa",
    "dataset_num_proc": 1,  # deterministic data preparation
}

# the base model's pretraining: full fine-tuning, plain SFT (the plugin at epsilon 0)
BASE = {
    "max_steps": 300,
    "micro_batch_size": 32,
    "learning_rate": 0.002,
    "lr_scheduler": "cosine",
    "warmup_steps": 20,
    "seed": 0,
}

COMMON = {
    "adapter": "lora",
    "lora_r": 8,
    "lora_alpha": 16,
    "lora_dropout": 0.0,  # the reference is the adapter-free model: keep the policy deterministic
    "lora_target_linear": True,
    # axolotl's fused LoRA kernels are CUDA-only
    "lora_mlp_kernel": False,
    "lora_qkv_kernel": False,
    "lora_o_kernel": False,
    "sequence_len": 64,
    "sample_packing": False,  # KTO refuses packing; no arm packs, so steps compare
    "micro_batch_size": 32,
    "gradient_accumulation_steps": 1,
    "max_steps": 150,
    "learning_rate": 0.001,
    "optimizer": "adamw_torch",
    "weight_decay": 0.0,
    "lr_scheduler": "cosine",
    "warmup_steps": 10,
    "logging_steps": 10,
    "val_set_size": 0,
    "save_strategy": "steps",
    "save_only_model": True,
}

PROBE = "experiments.pointwise_preference.probe.ProbePlugin"
UAL = "axolotl_ual.UALPlugin"


def _ual(objective: str, **keys) -> dict:
    # epsilon 0 on every row: no label smoothing, so `ulma` is ULMA exactly
    return {
        "ual_uncertainty_source": "constant",
        "ual_smoothing_max": 0.0,
        "ual_objective": objective,
        **keys,
    }


# an arm's `data`: "positives", the label-1 rows only; "all", every row with its label
ARMS = {
    arm.name: arm
    for arm in (
        Arm("sft", "SFT on positives", _ual("sft"), data="positives"),
        Arm("ulma", "ULMA", _ual("ulma", ual_preference_beta=0.1), data="all"),
        Arm(
            "kto",
            "KTO (rl: kto)",
            {
                "rl": "kto",
                "rl_beta": 0.1,
                "kto_desirable_weight": 1.0,
                "kto_undesirable_weight": 1.0,
            },
            data="all",
        ),
        Arm(
            "pointwise_dpo",
            "point-wise DPO",
            _ual("pointwise_dpo", ual_preference_beta=0.1),
            data="all",
        ),
    )
}


def is_kto(arm: Arm) -> bool:
    """Whether the arm trains on axolotl's `rl: kto` path (TRL's KTOTrainer) rather than the
    UAL plugin's SFT path."""
    return arm.keys.get("rl") == "kto"


def _dataset(kto: bool, train_file: Path) -> dict:
    if kto:
        # prompt / completion / label rows, written in chatml like the tiny model's template
        return {"path": str(train_file), "type": "chatml.prompt_pairs", "split": "train"}
    return {
        "path": str(train_file),
        "type": "axolotl_ual.chat_template",
        "field_messages": "messages",
    }


def base_config(*, model: Path, train_file: Path, run_dir: Path, max_steps: int | None) -> dict:
    """The pretraining run that turns the random init into the base (reference) model."""
    cfg = {
        "base_model": str(model),
        "plugins": [UAL],
        **_ual("sft"),
        "datasets": [_dataset(False, train_file)],
        "chat_template": "tokenizer_default",
        "sequence_len": 64,
        "gradient_accumulation_steps": 1,
        "optimizer": "adamw_torch",
        "weight_decay": 0.0,
        "logging_steps": 20,
        "val_set_size": 0,
        "save_strategy": "no",
        **BASE,
        **CPU,
    }
    if max_steps is not None:
        cfg["max_steps"] = max_steps
    return _paths(cfg, run_dir)


def arm_config(
    arm: Arm, *, base_model: Path, train_file: Path, run_dir: Path, seed: int, max_steps=None
) -> dict:
    """One arm and seed: the common keys, the arm's path and keys, the probe plugin."""
    cfg = {"base_model": str(base_model), **COMMON, **CPU, "seed": seed}
    if is_kto(arm):
        cfg.update(plugins=[PROBE], remove_unused_columns=False)
    else:
        cfg.update(
            plugins=[UAL, PROBE],
            chat_template="tokenizer_default",
            # axolotl's SFT path pads every batch to a multiple of 64 tokens by default, KTO's
            # collator to its longest row: rows are 26-31 tokens, so 8 gives 32 and every arm
            # computes on about the same number of tokens a step
            pad_to_multiple_of=8,
        )
    cfg.update(arm.keys)
    cfg["datasets"] = [_dataset(is_kto(arm), train_file)]
    if max_steps is not None:
        cfg["max_steps"] = max_steps
    cfg["save_steps"] = cfg["max_steps"]  # one checkpoint, at the end: its trainer_state.json
    return _paths(cfg, run_dir)


def _paths(cfg: dict, run_dir: Path) -> dict:
    cfg["dataset_prepared_path"] = str(run_dir / "prepared")
    cfg["output_dir"] = str(run_dir / "model")
    return cfg
