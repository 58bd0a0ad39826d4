"""The config a phase runs: where it starts from, its folders, when it evaluates."""

from __future__ import annotations

from pathlib import Path

from axolotl_ual.phases.configs import (
    BEST,
    LAST,
    chained_keys,
    eval_at_every_save,
    eval_settings_problem,
    phase_config,
)

LORA = {"adapter": "lora", "base_model": "org/base", "tokenizer_config": "org/tok"}


def test_a_lora_phase_after_a_lora_phase_continues_the_adapter():
    keys = chained_keys(LORA, "/run/01/output/checkpoint-4", adapter=True)
    assert keys == {
        "base_model": "org/base",
        "base_model_config": None,
        "tokenizer_config": "org/tok",
        "lora_model_dir": "/run/01/output/checkpoint-4",
    }


def test_after_full_fine_tuning_a_phase_starts_from_the_weights(tmp_path):
    checkpoint = tmp_path / "checkpoint-4"
    checkpoint.mkdir()
    full = {"base_model": "org/base"}
    # no tokenizer saved with the checkpoint: the previous phase's tokenizer
    keys = chained_keys(full, str(checkpoint), adapter=False)
    assert keys["base_model"] == keys["base_model_config"] == str(checkpoint)
    assert keys["tokenizer_config"] == "org/base" and keys["lora_model_dir"] is None
    (checkpoint / "tokenizer_config.json").write_text("{}")
    # a LoRA phase after full fine-tuning starts a new adapter on the checkpoint's weights
    keys = chained_keys({**full, "lora_model_dir": "/old"}, str(checkpoint), adapter=True)
    assert keys["tokenizer_config"] == str(checkpoint) and keys["lora_model_dir"] is None


def test_the_runner_sets_folders_resume_and_evaluation(tmp_path):
    plan = {"base_model": "org/base", "test_datasets": [{"path": "e.jsonl"}], "save_steps": 5}
    cfg = phase_config(
        plan,
        checkpoint_choice=BEST,
        datasets=[{"path": "d.jsonl"}],
        phase_dir=tmp_path,
        previous=({**LORA, "lora_model_dir": "/old"}, "/prev/checkpoint-2"),
    )
    assert cfg["output_dir"] == str(tmp_path / "output")
    assert cfg["dataset_prepared_path"] == str(tmp_path / "prepared")
    assert cfg["auto_resume_from_checkpoints"] is True and cfg["datasets"] == [{"path": "d.jsonl"}]
    assert cfg["eval_steps"] == 5 and cfg["metric_for_best_model"] == "eval_loss"
    # full fine-tuning after a LoRA phase is refused by the recipe check; here: weights
    assert cfg["base_model"] == "/prev/checkpoint-2" and "lora_model_dir" not in cfg
    last = phase_config(
        {"save_steps": 5}, checkpoint_choice=LAST, datasets=[], phase_dir=Path("/p"), previous=None
    )
    assert "eval_steps" not in last and "metric_for_best_model" not in last


def test_evaluation_follows_the_saves():
    assert eval_at_every_save({"save_steps": 4}) == {"eval_steps": 4}
    assert eval_at_every_save({"saves_per_epoch": 2}) == {"evals_per_epoch": 2}
    assert eval_at_every_save({}) == {"eval_strategy": "epoch"}
    assert eval_at_every_save({"save_steps": 4, "eval_steps": 2}) == {}
    assert eval_settings_problem({"save_steps": 4, "eval_steps": 2}) is None
    assert eval_settings_problem({"save_steps": 4, "eval_steps": 3}).startswith("save_steps (4)")
    assert eval_settings_problem({"eval_strategy": "epoch"}) is None
    assert "do not match" in eval_settings_problem({"save_steps": 4, "evals_per_epoch": 2})
    assert (
        eval_settings_problem({"save_strategy": "steps"}) == "save_strategy: steps needs save_steps"
    )
