"""The recipe is checked before anything trains: every problem, naming the phase and the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from axolotl_ual.errors import UsageError
from axolotl_ual.phases.recipe import KNOWN_PLUGIN_ARGS, axolotl_keys, load_recipe
from tests.phases.support import entry, load, write_recipe


def problems_of(path: Path, **kwargs) -> str:
    with pytest.raises(UsageError) as caught:
        load(path, **kwargs)
    return str(caught.value)


def two_phases(**second) -> list[dict]:
    return [
        {"name": "knowledge", "datasets": [entry("k.jsonl")]},
        {"name": "skills", "datasets": [entry("s.jsonl")], **second},
    ]


@pytest.mark.parametrize(
    "second, expected",
    [
        (
            {"learning_rat": 1e-5},
            "phase 2 'skills': unknown key 'learning_rat': neither a phase key",
        ),
        ({"learning_rat": 1e-5}, "did you mean 'learning_rate'?"),
        (
            {"replay": {"knowledge": {"fraction": 1.5}}},
            "phase 2 'skills': replay.knowledge.fraction",
        ),
        (
            {"replay": {"knowledge": {"count": 0}}},
            "replay.knowledge.count: input should be greater",
        ),
        (
            {"replay": {"knowledge": {"count": 2.5}}},
            "replay.knowledge.count: input should be a valid integer",
        ),
        (
            {"replay": {"knowledge": {"count": 2, "fraction": 0.1}}},
            "phase 2 'skills': replay.knowledge: give exactly one of fraction",
        ),
        ({"replay": {"knowledge": {"share": 2}}}, "replay.knowledge.share: unknown key"),
        ({"replay": {"skills": {"count": 1}}}, "replay.skills: a phase cannot replay itself"),
        ({"replay": {"nope": {"count": 1}}}, "replay.nope: no earlier phase is called 'nope'"),
        (
            {"checkpoint": "best"},
            "phase 2 'skills': checkpoint: input should be 'best_eval_loss' or 'last'",
        ),
        (
            {"base_model": "other"},
            "phase 2 'skills': base_model: every phase after the first starts",
        ),
        ({"lora_model_dir": "x"}, "phase 2 'skills': lora_model_dir: every phase after the first"),
        ({"output_dir": "out"}, "phase 2 'skills': output_dir: set by the phases runner"),
        ({"save_strategy": "no"}, "phase 'skills': save_strategy: 'no': every phase must save"),
        (
            {"save_steps": 3, "eval_steps": 2},
            "phase 'skills': checkpoint: best_eval_loss: save_steps (3) must be a multiple of eval_steps (2)",
        ),
        (
            {"saves_per_epoch": 2, "evals_per_epoch": 4},
            "saves_per_epoch (2) and evals_per_epoch (4) must be equal",
        ),
        (
            {"split_by_uncertainty": {"boundaries": [0.6, 0.3]}},
            "phase 2 'skills': split_by_uncertainty.boundaries: boundaries must increase strictly",
        ),
        (
            {"split_by_uncertainty": {"boundaries": [0.5], "quantiles": 2}},
            "split_by_uncertainty: give exactly one of boundaries",
        ),
        (
            {"split_by_uncertainty": {"quantiles": 1}},
            "split_by_uncertainty.quantiles: input should be",
        ),
        (
            {"split_by_uncertainty": {"quantiles": 2, "missing": "drop"}},
            "split_by_uncertainty.missing",
        ),
    ],
)
def test_a_bad_phase_is_named_with_its_key(tmp_path, second, expected):
    assert expected in problems_of(write_recipe(tmp_path, two_phases(**second)))


def test_recipe_level_errors(tmp_path):
    message = problems_of(write_recipe(tmp_path, two_phases(), phasez=[]))
    assert "recipe: phasez: unknown key (recipe keys: base_config, work_dir" in message
    path = write_recipe(tmp_path, [{"datasets": []}])
    assert "phase 1: name: required" in problems_of(path)
    path = write_recipe(tmp_path, [{"name": "has space"}])
    assert "phase 1 'has space': name: string should match pattern" in problems_of(path)
    path = write_recipe(tmp_path, [])
    assert "recipe: phases: list should have at least 1 item" in problems_of(path)
    (tmp_path / "recipe.yml").write_text("base_config: missing.yml\nphases: [{name: a}]\n")
    with pytest.raises(UsageError, match=r"cannot read the base config \(base_config\)"):
        load(tmp_path / "recipe.yml")


def test_every_problem_is_reported_at_once(tmp_path):
    phases = [
        {"name": "knowledge", "datasets": [entry("k.jsonl")], "learning_rat": 1},
        {"name": "skills", "datasets": [entry("s.jsonl")], "replay": {"later": {"count": 1}}},
        {"name": "later", "datasets": [entry("l.jsonl")], "output_dir": "x"},
    ]
    message = problems_of(write_recipe(tmp_path, phases))
    assert "3 problem(s)" in message
    assert "phase 1 'knowledge': unknown key 'learning_rat'" in message
    assert "phase 2 'skills': replay.later: that phase comes later" in message
    assert "phase 3 'later': output_dir: set by the phases runner" in message


def test_a_missing_data_file_is_named(tmp_path):
    path = write_recipe(tmp_path, two_phases())
    (tmp_path / "s.jsonl").unlink()
    assert "phase 'skills': datasets[0].path: no file " in problems_of(path)


def test_choosing_by_eval_loss_needs_an_eval_split(tmp_path):
    path = write_recipe(tmp_path, two_phases(), base={"test_datasets": None})
    message = problems_of(path)
    assert "phase 'knowledge': checkpoint: best_eval_loss needs an evaluation split" in message
    assert "phase 'skills': checkpoint: best_eval_loss needs" in message
    load(write_recipe(tmp_path, two_phases(), base={"test_datasets": None}, checkpoint="last"))
    load(write_recipe(tmp_path, two_phases(), base={"test_datasets": None, "val_set_size": 0.1}))


def test_full_fine_tuning_cannot_follow_a_lora_phase(tmp_path):
    phases = two_phases()
    phases[0]["adapter"] = "lora"
    message = problems_of(write_recipe(tmp_path, phases))
    assert "phase 'skills': adapter: this phase fine-tunes all weights but the previous" in message
    phases[1]["adapter"] = "qlora"
    load(write_recipe(tmp_path, phases))


def test_paths_are_resolved_against_the_file_that_holds_them(tmp_path):
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "model").mkdir()
    (tmp_path / "k.jsonl").write_text("")
    (tmp_path / "cfg" / "eval.jsonl").write_text("")
    (tmp_path / "recipe.yml").write_text(
        yaml.safe_dump(
            {
                "base_config": "cfg/base.yml",
                "phases": [{"name": "a", "datasets": [entry("k.jsonl")]}],
            }
        )
    )
    (tmp_path / "cfg" / "base.yml").write_text(
        yaml.safe_dump(
            {
                "base_model": "model",
                "tokenizer_config": "org/tokenizer",  # not a local path: a hub name, kept
                "test_datasets": [entry("eval.jsonl")],
                "learning_rate": 1e-4,
            }
        )
    )
    recipe = load(tmp_path / "recipe.yml")
    cfg = recipe.plans[0].config
    assert cfg["base_model"] == str(tmp_path / "cfg" / "model")
    assert cfg["tokenizer_config"] == "org/tokenizer"
    assert cfg["datasets"][0]["path"] == str(tmp_path / "k.jsonl")
    assert cfg["test_datasets"][0]["path"] == str(tmp_path / "cfg" / "eval.jsonl")
    assert recipe.work_dir == tmp_path / "recipe-run"
    assert load(tmp_path / "recipe.yml", work_dir=tmp_path / "w").work_dir == tmp_path / "w"


def test_a_phase_key_replaces_the_base_value_and_null_removes_it(tmp_path):
    phases = two_phases(learning_rate=None, lr_scheduler="constant")
    recipe = load(write_recipe(tmp_path, phases, base={"learning_rate": 1e-4, "warmup_steps": 3}))
    first, second = recipe.plans
    assert first.config["learning_rate"] == 1e-4 and "learning_rate" not in second.config
    assert second.config["lr_scheduler"] == "constant" and second.config["warmup_steps"] == 3
    assert [p.dirname for p in recipe.plans] == ["01-knowledge", "02-skills"]


def test_a_split_phase_becomes_one_phase_per_bucket(tmp_path):
    phases = [
        {"name": "warmup", "datasets": [entry("w.jsonl")]},
        {
            "name": "curriculum",
            "datasets": [entry("c.jsonl")],
            "split_by_uncertainty": {"boundaries": [0.3, 0.6], "replay": {"fraction": 0.5}},
            "replay": {"warmup": {"count": 2}},
        },
        {"name": "final", "datasets": [entry("f.jsonl")], "replay": {"curriculum": {"count": 3}}},
    ]
    recipe = load(write_recipe(tmp_path, phases))
    assert [p.name for p in recipe.plans] == [
        "warmup",
        "curriculum-1",
        "curriculum-2",
        "curriculum-3",
        "final",
    ]
    third = recipe.plan("curriculum-3")
    assert [(r.written, r.plans) for r in third.replay] == [
        ("warmup", ("warmup",)),
        ("curriculum-1", ("curriculum-1",)),
        ("curriculum-2", ("curriculum-2",)),
    ]
    assert third.bucket.number == 3 and third.source == "curriculum"
    final = recipe.plan("final")
    assert final.replay[0].plans == ("curriculum-1", "curriculum-2", "curriculum-3")
    clash = [*phases, {"name": "curriculum-2", "datasets": [entry("x.jsonl")]}]
    assert "the name is used twice" in problems_of(write_recipe(tmp_path, clash))


def test_keys_come_from_axolotls_schema_and_the_plugins():
    keys = axolotl_keys(["axolotl_ual.UALPlugin"])
    assert {"learning_rate", "lora_model_dir", "datasets", "ual_smoothing_max"} <= keys
    assert "learning_rat" not in keys
    # the plugin's keys are known without importing it: the shortcut must stay true
    from axolotl_ual import UALPlugin

    assert KNOWN_PLUGIN_ARGS["axolotl_ual.UALPlugin"] == UALPlugin().get_input_args()
    with pytest.raises(UsageError, match=r"plugins: cannot load 'no_such\.Plugin'"):
        axolotl_keys(["no_such.Plugin"])


def test_with_axolotls_keys_a_typo_is_named(tmp_path):
    path = write_recipe(
        tmp_path,
        two_phases(ual_smoothing_maxx=0.1),
        base={"plugins": ["axolotl_ual.UALPlugin"], "ual_smoothing_max": 0.2},
    )
    with pytest.raises(UsageError) as caught:
        load_recipe(path)
    assert "phase 2 'skills': unknown key 'ual_smoothing_maxx'" in str(caught.value)
    assert "did you mean 'ual_smoothing_max'?" in str(caught.value)
