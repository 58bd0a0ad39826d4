"""The axolotl config each phase runs: its data, its folders, where it starts, when it evaluates.

Every generated config is complete and runnable on its own (`axolotl train config.yml` from
any folder: every path in it is absolute). What the runner adds to the phase's keys:

- `datasets`: the phase's own entries plus one entry per replayed file (`data`);
- `output_dir`, `dataset_prepared_path`: inside the phase's folder;
- `auto_resume_from_checkpoints: true`: axolotl resumes from the last checkpoint in
  `output_dir` when there is one, so a phase interrupted at step N goes on from there;
- the chain: a LoRA / QLoRA phase after a LoRA / QLoRA phase continues the adapter
  (`lora_model_dir` = the previous phase's chosen checkpoint, same base model); any phase after
  a full fine-tuning phase starts from its weights (`base_model` = the chosen checkpoint, the
  tokenizer saved with it);
- with an eval split: an evaluation at every save (`eval_steps` = `save_steps`, unless the
  config says when to evaluate), which also evaluates the starting weights (axolotl turns on
  `eval_on_start` with `eval_steps`); with `checkpoint: best_eval_loss` also
  `metric_for_best_model: eval_loss`, so that `save_total_limit` never deletes the best
  checkpoint.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

BEST, LAST = "best_eval_loss", "last"
ADAPTERS = ("lora", "qlora")
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json")


def _given(cfg: dict[str, Any], *keys: str) -> bool:
    return any(cfg.get(k) is not None for k in keys)


def eval_settings_problem(cfg: dict[str, Any]) -> str | None:
    """Why `cfg` would save a checkpoint without an eval_loss at its step, if it would."""
    save_steps, saves_per_epoch = cfg.get("save_steps"), cfg.get("saves_per_epoch")
    save_strategy = str(cfg.get("save_strategy") or "").lower()
    if save_strategy == "steps" and save_steps is None:
        return "save_strategy: steps needs save_steps"
    if not _given(cfg, "eval_steps", "evals_per_epoch", "eval_strategy"):
        return None  # the runner evaluates at every save
    eval_steps, evals_per_epoch = cfg.get("eval_steps"), cfg.get("evals_per_epoch")
    eval_strategy = str(cfg.get("eval_strategy") or "").lower()
    if save_steps is not None and eval_steps is not None:
        if save_steps == eval_steps or (
            isinstance(save_steps, int)
            and isinstance(eval_steps, int)
            and save_steps % eval_steps == 0
        ):
            return None
        return (
            f"save_steps ({save_steps}) must be a multiple of eval_steps ({eval_steps}), so "
            "that every checkpoint has an eval_loss"
        )
    if saves_per_epoch is not None and evals_per_epoch is not None:
        if saves_per_epoch == evals_per_epoch:
            return None
        return (
            f"saves_per_epoch ({saves_per_epoch}) and evals_per_epoch ({evals_per_epoch}) must "
            "be equal, so that every checkpoint has an eval_loss"
        )
    by_epoch = save_steps is None and saves_per_epoch is None and save_strategy in ("", "epoch")
    if by_epoch and eval_strategy == "epoch" and not _given(cfg, "eval_steps", "evals_per_epoch"):
        return None
    return (
        "the evaluation settings (eval_steps / evals_per_epoch / eval_strategy) do not match "
        "the save settings, so some checkpoints would have no eval_loss; remove them (the "
        "runner then evaluates at every save) or make them evaluate at every save"
    )


def has_eval_split(cfg: dict[str, Any]) -> bool:
    """An eval split (val_set_size > 0 or test_datasets) with evaluation not turned off."""
    split = bool(cfg.get("test_datasets")) or float(cfg.get("val_set_size") or 0) > 0
    return split and str(cfg.get("eval_strategy")).lower() != "no"


def eval_at_every_save(cfg: dict[str, Any]) -> dict[str, Any]:
    """The keys that make axolotl evaluate whenever it saves (none if the config says when)."""
    if _given(cfg, "eval_steps", "evals_per_epoch", "eval_strategy"):
        return {}
    if cfg.get("save_steps") is not None:
        return {"eval_steps": cfg["save_steps"]}
    if cfg.get("saves_per_epoch") is not None:
        return {"evals_per_epoch": cfg["saves_per_epoch"]}
    return {"eval_strategy": "epoch"}  # axolotl saves every epoch when told nothing


def tokenizer_source(cfg: dict[str, Any]) -> Any:
    return cfg.get("tokenizer_config") or cfg.get("base_model")


def chained_keys(previous_config: dict[str, Any], checkpoint: str, adapter: bool) -> dict:
    """The keys that make a phase start from the previous phase's chosen `checkpoint`.

    A value of None means "remove the key".
    """
    if adapter and previous_config.get("adapter") in ADAPTERS:
        keys = {k: previous_config.get(k) for k in ("base_model", "base_model_config")}
        keys["tokenizer_config"] = previous_config.get("tokenizer_config")
        keys["lora_model_dir"] = checkpoint
        return keys
    has_tokenizer = any((Path(checkpoint) / name).exists() for name in TOKENIZER_FILES)
    return {
        "base_model": checkpoint,
        "base_model_config": checkpoint,
        "tokenizer_config": checkpoint if has_tokenizer else tokenizer_source(previous_config),
        "lora_model_dir": None,  # a LoRA phase after full fine-tuning starts a new adapter
    }


def phase_config(
    plan_config: dict[str, Any],
    *,
    checkpoint_choice: str,
    datasets: list[dict[str, Any]],
    phase_dir: Path,
    previous: tuple[dict[str, Any], str] | None,
) -> dict[str, Any]:
    """The config one phase runs; `previous` = (the previous phase's config, its checkpoint)."""
    cfg = copy.deepcopy(plan_config)
    cfg["datasets"] = datasets
    cfg["output_dir"] = str(phase_dir / "output")
    cfg["dataset_prepared_path"] = str(phase_dir / "prepared")
    cfg["auto_resume_from_checkpoints"] = True
    if has_eval_split(cfg):
        cfg.update(eval_at_every_save(cfg))
    if checkpoint_choice == BEST:
        cfg.setdefault("metric_for_best_model", "eval_loss")
    if previous is not None:
        previous_config, checkpoint = previous
        adapter = cfg.get("adapter") in ADAPTERS
        for key, value in chained_keys(previous_config, checkpoint, adapter).items():
            if value is None:
                cfg.pop(key, None)
            else:
                cfg[key] = value
    return cfg
