"""The README's path on the bundled taxonomy: generate (split by branch) -> elicit each branch
file -> the example phases recipe loads them, LAB's order, with its replay, and validates."""

from __future__ import annotations

import shutil

from axolotl_ual.phases.data import DataPlanner
from axolotl_ual.phases.recipe import load_recipe
from axolotl_ual.toolkit import REPO

from .support import TAXONOMY, read_jsonl

LAB = REPO / "example_configs" / "lab"
BRANCHES = ("knowledge", "foundational_skill", "compositional_skill")


def test_taxonomy_to_generate_to_elicit_to_the_phases_recipe(tmp_path, teacher_server, run_cli):
    server = (
        teacher_server()
    )  # the loopback server's default: teacher for generate, judge for elicit
    for name in ("generated_recipe.yml", "tiny_cpu_base.yml"):
        shutil.copy(LAB / name, tmp_path / name)
    shutil.copytree(LAB / "data", tmp_path / "data")
    generated = tmp_path / "generated"
    code, _, err = run_cli(
        f"generate {TAXONOMY} -o {generated}/generated.jsonl --split-by-branch --chunk-words 200 "
        f"--num-samples 8 --base-url {server.base_url} --model teacher --no-progress",
        cwd=tmp_path,
    )
    assert code == 0, err
    for branch in BRANCHES:
        code, _, err = run_cli(
            f"elicit {generated}/generated.{branch}.jsonl -o {generated}/scored.{branch}.jsonl "
            f"--base-url {server.base_url} --model judge --no-progress"
        )
        assert code == 0, err
        scored = read_jsonl(generated / f"scored.{branch}.jsonl")
        assert scored and all(row["branch"] == branch for row in scored)
        assert all(0 <= row["uncertainty"] <= 1 for row in scored)

    recipe = load_recipe(tmp_path / "generated_recipe.yml")
    assert [plan.name for plan in recipe.plans] == [
        "knowledge",
        "foundational-skills",
        "compositional-skills",
    ]
    planner = DataPlanner(recipe)
    sizes = {b: len(read_jsonl(generated / f"scored.{b}.jsonl")) for b in BRANCHES}
    replayed = []
    for plan in recipe.plans:
        data = planner.plan(plan, tmp_path / plan.dirname)
        replayed.append(sum(len(rows) for _, rows in data.files))
        assert data.entries[0]["path"].endswith(f"scored.{BRANCHES[plan.index - 1]}.jsonl")
    k, f = sizes["knowledge"], sizes["foundational_skill"]
    assert replayed == [0, max(1, round(0.2 * k)), max(1, round(0.2 * k)) + max(1, round(0.2 * f))]
