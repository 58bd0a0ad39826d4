"""`axolotl preprocess` end to end: bad uncertainties are refused up front; the cache is honest."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from datasets import load_from_disk

from tests.reference import read_jsonl
from tests.support import SAMPLE_CHAT, run_axolotl, ual_config, write_config

pytestmark = pytest.mark.e2e


def _write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _prepared(prepared_root: Path):
    """The one prepared dataset under `prepared_root` (axolotl nests it under a hash)."""
    infos = list(prepared_root.rglob("dataset_info.json"))
    assert len(infos) == 1, infos
    return load_from_disk(str(infos[0].parent)), infos[0].parent


def test_bad_uncertainties_are_refused_with_dataset_row_and_value(tiny_model, tmp_path):
    rows = read_jsonl(SAMPLE_CHAT)[:12]
    rows[2]["uncertainty"] = 1.7
    rows[4]["uncertainty"] = None
    del rows[5]["uncertainty"]
    rows[7]["uncertainty"] = "high"
    rows[9]["uncertainty"] = -0.1
    data = tmp_path / "bad.jsonl"
    # NaN is not JSON; Python's json writes the NaN literal that readers accept
    text = "".join(json.dumps(r) + "\n" for r in rows).replace(
        json.dumps(rows[11]), json.dumps({**rows[11], "uncertainty": math.nan})
    )
    data.write_text(text)
    cfg = ual_config(
        tiny_model, tmp_path, datasets=[{"path": str(data), "type": "axolotl_ual.chat_template"}]
    )
    result = run_axolotl("preprocess", write_config(tmp_path / "cfg.yml", cfg))

    assert result.returncode != 0
    log = result.stdout
    assert "bad.jsonl" in log and "6 row(s) have no valid uncertainty" in log
    for fragment in (
        "row 2: 1.7 is outside [0, 1]",
        "row 4: missing (null)",
        "row 5: missing (null)",
        "row 7: 'high' is not a number",
        "row 9: -0.1 is outside [0, 1]",
        "and 1 more",
        "ual_missing_uncertainty: default",
    ):
        assert fragment in log, fragment
    # our message, plainly: not at the bottom of a traceback through axolotl's data loading
    assert "axolotl-ual: UncertaintyDataError: dataset" in log
    assert "Traceback" not in log
    assert not list((tmp_path / "prepared").rglob("dataset_info.json"))  # nothing half-written


def test_changing_a_ual_key_reprocesses_instead_of_reusing(tiny_model, tmp_path):
    rows = read_jsonl(SAMPLE_CHAT)[:10]
    for i, row in enumerate(rows):
        row["judge_b"] = None if i % 3 == 0 else round(0.1 * i, 2)  # some rows unscored
    data = _write_rows(tmp_path / "two_scores.jsonl", rows)
    base = {"datasets": [{"path": str(data), "type": "axolotl_ual.chat_template"}]}

    first = ual_config(tiny_model, tmp_path / "a", **base)
    (tmp_path / "a").mkdir()
    assert (
        run_axolotl("preprocess", write_config(tmp_path / "a" / "cfg.yml", first)).returncode == 0
    )
    prepared_a, dir_a = _prepared(tmp_path / "a" / "prepared")

    # same prepared root, other uncertainty column (with nulls -> the default)
    second = dict(
        first,
        ual_uncertainty_field="judge_b",
        ual_missing_uncertainty="default",
        ual_default_uncertainty=0.5,
    )
    result = run_axolotl("preprocess", write_config(tmp_path / "a" / "cfg2.yml", second))
    assert result.returncode == 0, result.stdout[-4000:]
    assert "4 of 10 rows (40%) have no uncertainty in field 'judge_b'" in result.stdout
    dirs = sorted({p.parent for p in (tmp_path / "a" / "prepared").rglob("dataset_info.json")})
    assert len(dirs) == 2 and dir_a in dirs
    prepared_b, _ = load_from_disk(str(next(d for d in dirs if d != dir_a))), None

    expected_a = sorted(r["uncertainty"] for r in rows)
    expected_b = sorted(0.5 if r["judge_b"] is None else r["judge_b"] for r in rows)
    for prepared, expected in ((prepared_a, expected_a), (prepared_b, expected_b)):
        assert sorted(prepared["ual_uncertainty"]) == pytest.approx(expected)  # one per sample
        assert [len(v) for v in prepared["ual_instruction"]] == [
            len(i) for i in prepared["input_ids"]
        ]
