"""`inspect`: the u distribution and the epsilon it becomes under a config's ual_* keys."""

from __future__ import annotations

import re

import pytest

from axolotl_ual.elicit.inspect import default_png_path
from axolotl_ual.elicit.report import quantile

from .support import write_jsonl

U_VALUES = [0.0, 0.1, 0.2, 0.2, 0.5, 0.9, 1.0]


def table_row(stdout: str, label: str) -> list[float]:
    line = next(line for line in stdout.splitlines() if re.match(rf"^{label}\s", line))
    return [float(cell) for cell in line.split()[1:]]


def write_scored(tmp_path, values, field="uncertainty"):
    return write_jsonl(
        tmp_path / "scored.jsonl", [{"id": i, field: u} for i, u in enumerate(values)]
    )


def expected_row(values):
    ordered = sorted(values)
    quantiles = [quantile(ordered, q) for q in (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)]
    return [len(values), sum(values) / len(values), *quantiles]


def test_power_mapping_quantiles_and_png(tmp_path, run_elicit):
    scored = write_scored(tmp_path, U_VALUES)
    config = tmp_path / "config.yml"
    config.write_text(
        "base_model: x\nual_smoothing_min: 0.05\nual_smoothing_max: 0.25\n"
        "ual_mapping: power\nual_mapping_power: 2\nlearning_rate: 0.1\n"
    )
    code, stdout, stderr = run_elicit(f"inspect {scored} --config {config}")
    assert code == 0, stderr
    eps = [0.05 + 0.2 * u**2 for u in U_VALUES]
    assert table_row(stdout, "u") == pytest.approx(expected_row(U_VALUES), abs=5e-5)
    assert table_row(stdout, "eps") == pytest.approx(expected_row(eps), abs=5e-5)
    assert f"mean eps {sum(eps) / len(eps):.4f}" in stdout
    assert "mapping power (power 2.0), eps from 0.05 (u=0) to 0.25 (u=1)" in stdout
    png = tmp_path / "scored.uncertainty.png"
    assert png == default_png_path(scored)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert f"wrote {png}" in stdout


def test_rank_mapping_spreads_epsilon_over_the_data(tmp_path, run_elicit):
    scored = write_scored(tmp_path, U_VALUES)
    config = tmp_path / "config.yml"
    config.write_text("ual_mapping: rank\nual_smoothing_max: 0.3\n")
    code, stdout, _ = run_elicit(f"inspect {scored} --config {config} --png {tmp_path / 'h.png'}")
    assert code == 0
    # mid-ranks of [0, .1, .2, .2, .5, .9, 1] over n-1 = 6: 0, 1/6, 2.5/6 (tied), 2.5/6, 4/6, 5/6, 1
    eps = [0.3 * r / 6 for r in (0, 1, 2.5, 2.5, 4, 5, 6)]
    assert table_row(stdout, "eps") == pytest.approx(expected_row(eps), abs=5e-5)
    assert (tmp_path / "h.png").exists()


def test_constant_source_and_missing_values(tmp_path, run_elicit):
    scored = write_scored(tmp_path, [0.2, None, 0.8])
    config = tmp_path / "config.yml"
    config.write_text(
        "ual_uncertainty_source: constant\nual_smoothing_max: 0.1\n"
        "ual_missing_uncertainty: default\nual_default_uncertainty: 0.5\n"
    )
    code, stdout, _ = run_elicit(f"inspect {scored} --config {config}")
    assert code == 0
    assert table_row(stdout, "eps") == pytest.approx(
        [3, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1], abs=5e-5
    )
    assert "1 rows have no uncertainty: training uses u=0.5 for them" in stdout


def test_missing_values_without_a_default_are_flagged(tmp_path, run_elicit):
    scored = write_scored(tmp_path, [0.2, None], field="u")
    config = tmp_path / "config.yml"
    config.write_text("ual_uncertainty_field: u\n")
    code, stdout, _ = run_elicit(f"inspect {scored} --config {config}")
    assert code == 0
    assert "1 rows have no uncertainty: training stops on them" in stdout
    assert table_row(stdout, "u")[0] == 1


def test_inspect_errors(tmp_path, run_elicit):
    scored = write_scored(tmp_path, [0.2, 1.5])
    code, _, stderr = run_elicit(f"inspect {scored}")
    assert code == 2 and "row 1: field 'uncertainty': 1.5 is outside [0, 1]" in stderr
    write_scored(tmp_path, [0.2])
    config = tmp_path / "config.yml"
    config.write_text("ual_smoothing_max: 1.5\n")
    code, _, stderr = run_elicit(f"inspect {scored} --config {config}")
    assert code == 2 and "invalid ual_* settings" in stderr and "ual_smoothing_max=1.5" in stderr
    config.write_text("ual_uncertainty_source: sidecar\nual_uncertainty_file: side.jsonl\n")
    code, _, stderr = run_elicit(f"inspect {scored} --config {config}")
    assert code == 2 and "side.jsonl" in stderr and "does not exist" in stderr
    (tmp_path / "side.jsonl").write_text("")  # found relative to the config's folder
    code, _, stderr = run_elicit(f"inspect {scored} --config {config}")
    assert code == 0, stderr


def test_a_file_without_scores_writes_no_png_and_says_so(tmp_path, run_elicit):
    scored = write_scored(tmp_path, [None, None])
    code, stdout, _ = run_elicit(f"inspect {scored}")
    assert code == 0
    assert "no PNG written: no row has a value in 'uncertainty'" in stdout
    assert not default_png_path(scored).exists()


def test_a_missing_column_is_an_error_naming_the_columns(tmp_path, run_elicit):
    scored = write_scored(tmp_path, [0.1, 0.2], field="u")
    code, _, stderr = run_elicit(f"inspect {scored}")
    assert code == 2
    assert f"{scored} has no column 'uncertainty' (its columns: 'id', 'u'); pass --field" in stderr


def test_the_plot_counts_whole_rows_and_its_title_the_null_ones(tmp_path, run_elicit, monkeypatch):
    from matplotlib.figure import Figure

    figures = []
    save = Figure.savefig

    def keep(figure, *args, **kwargs):
        figures.append(figure)
        return save(figure, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    scored = write_scored(tmp_path, [0.1, 0.5, 0.5, None])
    code, _, stderr = run_elicit(f"inspect {scored}")
    assert code == 0, stderr
    (figure,) = figures
    assert figure._suptitle.get_text() == "scored.jsonl: 3 scored rows, 1 null"
    for axis in figure.axes:
        ticks = [tick for tick in axis.get_yticks() if tick >= 0]
        assert ticks and all(float(tick).is_integer() for tick in ticks), ticks
