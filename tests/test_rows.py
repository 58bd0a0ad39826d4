"""What a sample is, whatever loaded it: content keys and uncertainty values through the
loaders training and `elicit` use (Python's `json`, `datasets` over JSON and Parquet)."""

from __future__ import annotations

import json

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from axolotl_ual.rows import (
    CHAT,
    InvalidLabel,
    InvalidUncertainty,
    content_fields,
    parse_preference,
    parse_uncertainty,
    sample_key,
)
from axolotl_ual.uncertainty import UncertaintyDataError, UncertaintySettings, resolve_uncertainties

FIELDS = content_fields(CHAT)

# Rows that Arrow reads back differently from Python's json: an int where the column also
# holds floats (JSON and Parquet), keys only some messages have (Parquet fills them with None),
# keys in another order, a nested dict whose member is an int in one row and a float in another.
SAME_KEYS = [
    {"messages": [{"role": "user", "content": "a", "weight": 1, "meta": {"turn": 2}}]},
    {"messages": [{"content": "b", "role": "user", "weight": 1.5, "meta": {"turn": 3.5}}]},
]
SOME_KEYS = [*SAME_KEYS, {"messages": [{"role": "user", "content": "c", "name": "alice"}]}]


def _json_keys(rows):
    return [sample_key(json.loads(json.dumps(row)), FIELDS) for row in rows]


def _dataset_keys(dataset):
    return [sample_key(row, FIELDS) for row in dataset]


def test_keys_do_not_depend_on_how_a_loader_typed_the_values(tmp_path):
    from axolotl_ual.elicit import io

    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(row) + "\n" for row in SAME_KEYS))
    io.write_rows(SOME_KEYS, tmp_path / "rows.parquet")
    from_json = datasets.load_dataset(
        "json", data_files=str(tmp_path / "rows.jsonl"), split="train"
    )
    from_parquet = datasets.load_dataset(
        "parquet", data_files=str(tmp_path / "rows.parquet"), split="train"
    )
    for loaded in (from_json, from_parquet):
        first = loaded[0]["messages"][0]
        assert type(first["weight"]) is float and type(first["meta"]["turn"]) is float  # re-typed
    assert from_parquet[0]["messages"][0]["name"] is None  # a key the row never had
    assert _dataset_keys(from_json) == _json_keys(SAME_KEYS)
    assert _dataset_keys(from_parquet) == _json_keys(SOME_KEYS)


def test_keys_do_not_depend_on_the_integer_width(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "a", "n": 7}]}]
    for width in (pa.int32(), pa.int64()):
        message = pa.struct([("role", pa.string()), ("content", pa.string()), ("n", width)])
        table = pa.table({"messages": pa.array([r["messages"] for r in rows], pa.list_(message))})
        pq.write_table(table, tmp_path / f"{width}.parquet")
        loaded = datasets.load_dataset(
            "parquet", data_files=str(tmp_path / f"{width}.parquet"), split="train"
        )
        assert _dataset_keys(loaded) == _json_keys(rows), width


def test_float_content_that_is_not_integral_keeps_its_value():
    assert sample_key({"messages": [{"x": 1.5}]}, FIELDS) != sample_key(
        {"messages": [{"x": 1}]}, FIELDS
    )
    assert sample_key({"messages": [{"x": 2.0}]}, FIELDS) == sample_key(
        {"messages": [{"x": 2}]}, FIELDS
    )


def _resolve_file(path):
    loaded = datasets.load_dataset("json", data_files=str(path), split="train")
    settings = UncertaintySettings.from_cfg({})
    return resolve_uncertainties(loaded, settings, dataset_name="d", content_fields=FIELDS).values


@pytest.mark.parametrize(
    "values",
    [[0.2, "0.5", 0.7], ["0.2", "0.5", "0.7"]],
    ids=["number-as-text-among-numbers", "all-numbers-as-text"],
)
def test_numbers_written_as_text_read_the_same_whatever_the_column(tmp_path, values):
    """Arrow casts "0.5" to 0.5 when the rest of the column is numeric; all-text columns stay
    text: both must give the same uncertainties."""
    path = tmp_path / "d.jsonl"
    path.write_text(
        "".join(
            json.dumps({"messages": [{"role": "user", "content": str(i)}], "uncertainty": v}) + "\n"
            for i, v in enumerate(values)
        )
    )
    assert _resolve_file(path) == pytest.approx([0.2, 0.5, 0.7])


def test_text_among_numbers_is_still_an_error_naming_the_row(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(
        "".join(
            json.dumps({"messages": [{"role": "user", "content": str(i)}], "uncertainty": v}) + "\n"
            for i, v in enumerate([0.2, "high", 0.7])
        )
    )
    with pytest.raises(UncertaintyDataError, match=r"row 1: 'high' is not a number"):
        _resolve_file(path)


# The README's key table (ual_missing_uncertainty) and its point-wise preference section.
ACCEPTED = {0.5: 0.5, 1: 1.0, 0: 0.0, "0.5": 0.5, " 1e-1 ": 0.1, "1": 1.0}
REFUSED = ["high", "", "nan", float("nan"), True, False, [0.5], 1.5, -0.1, "inf", "2"]


def test_what_counts_as_a_value_is_what_the_readme_says():
    for value, expected in ACCEPTED.items():
        assert parse_uncertainty(value) == expected
        assert parse_preference(value, binary=False) == expected
    assert parse_uncertainty(None) is None  # missing: ual_missing_uncertainty decides
    for value in REFUSED:
        with pytest.raises(InvalidUncertainty):
            parse_uncertainty(value)
    labels = [(True, 1.0), (False, 0.0), ("1", 1.0), ("0", 0.0), ("1.0", 1.0), (1, 1.0), (0, 0.0)]
    for value, expected in labels:
        assert parse_preference(value, binary=True) == expected
    for value in [None, "good", "", float("nan"), 1.5, "0.5", 0.5, [1]]:
        with pytest.raises(InvalidLabel):
            parse_preference(value, binary=True)
