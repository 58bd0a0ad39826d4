"""The READMEs show exactly the committed results of the default commands."""

from __future__ import annotations

import json

import pytest

from experiments.instruction_modelling.prepare import ARMS as IM_ARMS
from experiments.pointwise_preference import prepare as pointwise
from experiments.uncertainty_mixture.prepare import ARMS
from tests.support import REPO

EXPERIMENTS = REPO / "experiments"
RESULTS = EXPERIMENTS / "uncertainty_mixture" / "results"
IM_RESULTS = EXPERIMENTS / "instruction_modelling" / "results"
POINTWISE = EXPERIMENTS / "pointwise_preference" / "results"


def block(text: str, name: str) -> str:
    """What stands between `<!-- name:begin -->` and `<!-- name:end -->` (exactly once)."""
    begin, end = f"<!-- {name}:begin -->\n", f"<!-- {name}:end -->"
    assert text.count(begin) == 1 and text.count(end) == 1, name
    return text.split(begin, 1)[1].split(end, 1)[0].strip()


@pytest.mark.parametrize(
    "name, results",
    [("results", RESULTS), ("im-results", IM_RESULTS), ("pointwise-results", POINTWISE)],
)
def test_readme_tables_are_the_committed_results(name, results):
    readme = (EXPERIMENTS / "README.md").read_text()
    assert block(readme, name) == (results / "results.md").read_text().strip()


def test_committed_results_are_the_default_command():
    data = json.loads((RESULTS / "results.json").read_text())
    assert data["settings"]["seeds"] == [0, 1, 2]
    assert set(data["settings"]["arms"]) == set(ARMS)
    assert data["settings"]["split_scale"] == 1.0
    assert sorted((r["arm"], r["seed"]) for r in data["runs"]) == sorted(
        (arm, seed) for arm in ARMS for seed in (0, 1, 2)
    )
    assert (RESULTS / "results.png").read_bytes().startswith(b"\x89PNG")


def test_committed_im_results_are_the_default_command():
    data = json.loads((IM_RESULTS / "results.json").read_text())
    assert data["settings"]["seeds"] == [0, 1, 2]
    assert data["settings"]["arms"] == {name: arm.keys for name, arm in IM_ARMS.items()}
    assert data["settings"]["split_scale"] == 1.0 and data["settings"]["max_steps"] == 400
    assert sorted((r["arm"], r["seed"]) for r in data["runs"]) == sorted(
        (arm, seed) for arm in IM_ARMS for seed in (0, 1, 2)
    )
    assert all(r["axolotl"]["steps"] == 400 for r in data["runs"])
    assert (IM_RESULTS / "results.png").read_bytes().startswith(b"\x89PNG")


def test_committed_pointwise_results_are_the_default_command():
    data = json.loads((POINTWISE / "results.json").read_text())
    settings = data["settings"]
    assert settings["seeds"] == [0, 1, 2] and settings["split_scale"] == 1.0
    assert settings["arms"] == {name: arm.keys for name, arm in pointwise.ARMS.items()}
    assert settings["training"]["max_steps"] == pointwise.COMMON["max_steps"]
    assert settings["base_pretraining"]["max_steps"] == pointwise.BASE["max_steps"]
    assert sorted((r["arm"], r["seed"]) for r in data["runs"]) == sorted(
        (arm, seed) for arm in pointwise.ARMS for seed in (0, 1, 2)
    )
    assert (POINTWISE / "results.png").read_bytes().startswith(b"\x89PNG")


LIKELIHOODS = "**Held-out likelihood of the good and the bad responses**"


@pytest.mark.parametrize(
    "name, results, headings, row",
    [
        ("evidence", RESULTS, ["**Main metrics**"], "| UAL, known u |"),
        ("evidence-generation", RESULTS, ["**Generated answers**"], "| UAL, known u |"),
        ("im-evidence", IM_RESULTS, ["**Main metrics**"], "| IM |"),
        ("im-evidence-generation", IM_RESULTS, ["**Generated answers**"], "| IM |"),
        ("pointwise-evidence", POINTWISE, [LIKELIHOODS, "**Cost**"], "| KTO (rl: kto) |"),
    ],
)
def test_top_readme_shows_committed_tables(name, results, headings, row):
    tables = block((REPO / "README.md").read_text(), name).split("\n\n")
    assert len(tables) == len(headings), name
    text = (results / "results.md").read_text()
    for heading, table in zip(headings, tables, strict=True):
        assert table.startswith("| arm |") and row in table
        # the table right under `heading` in results.md, row for row
        assert text[text.index(heading) :].split("\n\n", 2)[1] == table
