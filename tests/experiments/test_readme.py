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
