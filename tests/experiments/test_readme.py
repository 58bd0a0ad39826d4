"""The READMEs show exactly the committed results of the default command."""

from __future__ import annotations

import json

from experiments.uncertainty_mixture.prepare import ARMS
from tests.support import REPO

EXPERIMENTS = REPO / "experiments"
RESULTS = EXPERIMENTS / "uncertainty_mixture" / "results"
BEGIN, END = "<!-- results:begin -->\n", "<!-- results:end -->"


def test_readme_tables_are_the_committed_results():
    readme = (EXPERIMENTS / "README.md").read_text()
    block = readme.split(BEGIN, 1)[1].split(END, 1)[0]
    assert block.strip() == (RESULTS / "results.md").read_text().strip()


def test_committed_results_are_the_default_command():
    data = json.loads((RESULTS / "results.json").read_text())
    assert data["settings"]["seeds"] == [0, 1, 2]
    assert set(data["settings"]["arms"]) == set(ARMS)
    assert data["settings"]["split_scale"] == 1.0
    assert sorted((r["arm"], r["seed"]) for r in data["runs"]) == sorted(
        (arm, seed) for arm in ARMS for seed in (0, 1, 2)
    )
    assert (RESULTS / "results.png").read_bytes().startswith(b"\x89PNG")


def test_top_readme_shows_the_committed_main_table():
    readme = (REPO / "README.md").read_text()
    block = readme.split("<!-- evidence:begin -->\n", 1)[1].split("<!-- evidence:end -->", 1)[0]
    table = block.strip()
    assert table.startswith("| arm |") and "| UAL, known u |" in table
    # the main-metrics table of results.md, row for row
    assert "**Main metrics**\n\n" + table + "\n\n" in (RESULTS / "results.md").read_text()


POINTWISE = EXPERIMENTS / "pointwise_preference" / "results"


def _block(text: str, name: str) -> str:
    return text.split(f"<!-- {name}:begin -->\n", 1)[1].split(f"<!-- {name}:end -->", 1)[0]


def test_pointwise_readme_tables_are_the_committed_results():
    block = _block((EXPERIMENTS / "README.md").read_text(), "pointwise-results")
    assert block.strip() == (POINTWISE / "results.md").read_text().strip()


def test_pointwise_committed_results_are_the_default_command():
    from experiments.pointwise_preference import prepare

    data = json.loads((POINTWISE / "results.json").read_text())
    settings = data["settings"]
    assert settings["seeds"] == [0, 1, 2] and settings["split_scale"] == 1.0
    assert settings["arms"] == {name: arm.keys for name, arm in prepare.ARMS.items()}
    assert settings["training"]["max_steps"] == prepare.COMMON["max_steps"]
    assert settings["base_pretraining"]["max_steps"] == prepare.BASE["max_steps"]
    assert sorted((r["arm"], r["seed"]) for r in data["runs"]) == sorted(
        (arm, seed) for arm in prepare.ARMS for seed in (0, 1, 2)
    )
    assert (POINTWISE / "results.png").read_bytes().startswith(b"\x89PNG")


def test_top_readme_shows_the_committed_pointwise_tables():
    block = _block((REPO / "README.md").read_text(), "pointwise-evidence").strip()
    tables = [t for t in block.split("\n\n") if t.startswith("| arm |")]
    assert len(tables) == 2, block
    assert "| ULMA |" in tables[0] and "| KTO (rl: kto) |" in tables[0]
    assert "CPU s / step" in tables[1]
    results = (POINTWISE / "results.md").read_text()
    for table in tables:  # each one whole, row for row, as results.md has it
        assert "\n\n" + table + "\n\n" in results
