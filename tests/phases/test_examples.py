"""The example recipes of example_configs/lab: they load, split and validate as documented."""

from __future__ import annotations

import shutil

import pytest
import yaml

from axolotl_ual.phases import tiny
from axolotl_ual.phases.configs import phase_config
from axolotl_ual.phases.data import DataPlanner
from axolotl_ual.phases.recipe import load_recipe
from tests.phases.support import chat_rows, write_data
from tests.support import REPO

LAB = REPO / "example_configs" / "lab"


@pytest.mark.parametrize("name", ["tiny_cpu_recipe.yml", "uncertainty_curriculum_recipe.yml"])
def test_the_tiny_example_recipes_load(name):
    recipe = load_recipe(LAB / name)
    assert len(recipe.plans) == 3 and not recipe.warnings


def test_the_curriculum_example_splits_into_low_mid_high():
    recipe = load_recipe(LAB / "uncertainty_curriculum_recipe.yml")
    planner = DataPlanner(recipe)
    data = {p.name: planner.plan(p, recipe.work_dir / p.dirname) for p in recipe.plans}
    rows = [data[p.name].report["bucket"]["rows"] for p in recipe.plans]
    assert rows == [40, 16, 16]  # short knowledge + arithmetic; long knowledge; writing


def test_the_paper_recipes_configs_pass_axolotls_validation(tmp_path):
    """LAB's recipe is not run here (a 7B model, a GPU); its phase configs must validate."""
    from tests.test_config import validate

    for name in ("paper_lab_recipe.yml", "paper_lab_base.yml"):
        shutil.copy(LAB / name, tmp_path / name)
    names = ["knowledge_simple", "knowledge_complex", "foundational_skills"]
    write_data(
        tmp_path / "data",
        **{f"{n}.jsonl": chat_rows(20) for n in [*names, "compositional_skills", "eval"]},
    )
    tiny_model = tiny.build(tmp_path / "tiny-model", LAB / "data")  # stands in for Mistral-7B
    recipe = load_recipe(tmp_path / "paper_lab_recipe.yml")
    assert [p.name for p in recipe.plans] == ["knowledge", "knowledge-complex", "skills"]
    base = yaml.safe_load((LAB / "paper_lab_base.yml").read_text())
    assert base["micro_batch_size"] * base["gradient_accumulation_steps"] == 3840  # one GPU
    assert base["lr_scheduler"] == "constant_with_warmup" and "lr_scheduler" not in (
        recipe.spec.phases[1].overrides
    )
    planner, previous = DataPlanner(recipe), None
    for plan in recipe.plans:
        data = planner.plan(plan, tmp_path / plan.dirname)
        cfg = phase_config(
            plan.config,
            checkpoint_choice=plan.checkpoint,
            datasets=data.entries,
            phase_dir=tmp_path / plan.dirname,
            previous=previous,
        )
        data.write()
        assert cfg["evals_per_epoch"] == cfg["saves_per_epoch"] == 2
        for key in ("base_model", "base_model_config", "tokenizer_config"):
            cfg.pop(key, None)  # no hub here
        validated = validate(tiny_model, **cfg, plugins=None)
        assert validated.learning_rate == 2e-5
        previous = (cfg, str(tiny_model))
