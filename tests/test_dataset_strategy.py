"""UAL dataset types tokenize exactly like axolotl's own, plus an aligned per-token uncertainty."""

from __future__ import annotations

import json
import math

import pytest
from axolotl.utils.data.wrappers import get_dataset_wrapper
from axolotl.utils.dict import DictDefault
from datasets import Dataset

from axolotl_ual.columns import INSTRUCTION, UNCERTAINTY
from axolotl_ual.errors import DataError
from axolotl_ual.rows import CHAT, content_fields, sample_key
from axolotl_ual.uncertainty import UncertaintyDataError, UncertaintySettings, resolve_uncertainties
from tests.reference import read_jsonl
from tests.support import SAMPLE_ALPACA, SAMPLE_CHAT


def _cfg(**overrides):
    return DictDefault(
        {
            "plugins": ["axolotl_ual.UALPlugin"],
            "sequence_len": 256,
            "train_on_inputs": False,
            "chat_template": "tokenizer_default",
            "dataset_num_proc": 1,
            **overrides,
        }
    )


def _tokenize(tokenizer, cfg, ds_type, rows, **ds_options):
    """Tokenize `rows` through axolotl's real dispatch (`get_dataset_wrapper`)."""
    ds_cfg = DictDefault({"path": "rows.jsonl", "type": ds_type, **ds_options})
    dataset, _ = get_dataset_wrapper(ds_cfg, tokenizer, cfg, ds_type, Dataset.from_list(rows))
    return dataset


CHAT_OPTIONS = [
    {},
    {"roles_to_train": ["user", "assistant"]},
    {"train_on_eos": "all"},
    {"train_on_eos": "last"},
    {"roles_to_train": ["assistant"], "train_on_eos": "none"},
]


@pytest.mark.parametrize("options", CHAT_OPTIONS, ids=lambda o: json.dumps(o) if o else "defaults")
@pytest.mark.parametrize("train_on_inputs", [False, True])
def test_chat_template_equals_axolotl(tiny_tokenizer, options, train_on_inputs):
    rows = read_jsonl(SAMPLE_CHAT)
    cfg = _cfg(train_on_inputs=train_on_inputs)
    ours = _tokenize(
        tiny_tokenizer, cfg, "axolotl_ual.chat_template", rows, field_messages="messages", **options
    )
    theirs = _tokenize(
        tiny_tokenizer, cfg, "chat_template", rows, field_messages="messages", **options
    )
    # the response tokens: what axolotl trains with only the assistant turns trained
    response_only = _tokenize(
        tiny_tokenizer,
        _cfg(train_on_inputs=False),
        "chat_template",
        rows,
        field_messages="messages",
        **{**options, "roles_to_train": ["assistant"]},
    )
    _assert_same_plus_side_columns(ours, theirs, [r["uncertainty"] for r in rows], response_only)
    trains_user_turns = train_on_inputs or "user" in options.get("roles_to_train", [])
    assert any(any(flags) for flags in ours[INSTRUCTION.name]) == trains_user_turns


@pytest.mark.parametrize("train_on_inputs", [False, True])
def test_alpaca_equals_axolotl(tiny_tokenizer, train_on_inputs):
    rows = read_jsonl(SAMPLE_ALPACA)
    cfg = _cfg(train_on_inputs=train_on_inputs)
    ours = _tokenize(tiny_tokenizer, cfg, "axolotl_ual.alpaca", rows)
    theirs = _tokenize(tiny_tokenizer, cfg, "alpaca", rows)
    response_only = _tokenize(tiny_tokenizer, _cfg(train_on_inputs=False), "alpaca", rows)
    _assert_same_plus_side_columns(ours, theirs, [r["uncertainty"] for r in rows], response_only)
    assert any(any(flags) for flags in ours[INSTRUCTION.name]) == train_on_inputs


def _assert_same_plus_side_columns(ours, theirs, uncertainties, response_only):
    """axolotl's own columns unchanged; the row's uncertainty; instruction tokens = trained by
    axolotl here but not when only the assistant turns are trained."""
    assert set(ours.column_names) == set(theirs.column_names) | {UNCERTAINTY.name, INSTRUCTION.name}
    for column in theirs.column_names:
        assert ours[column] == theirs[column], column
    assert any(any(label != -100 for label in labels) for labels in ours["labels"])
    assert ours[UNCERTAINTY.name] == pytest.approx(uncertainties)
    for flags, labels, reference, ids in zip(
        ours[INSTRUCTION.name],
        ours["labels"],
        response_only["labels"],
        ours["input_ids"],
        strict=True,
    ):
        assert len(flags) == len(ids)
        assert flags == [
            lab != -100 and ref == -100 for lab, ref in zip(labels, reference, strict=True)
        ]


# --- resolving and validating each row's uncertainty ----------------------------------


def _resolve(rows, **settings):
    """The resolved values, with `settings` as the `ual_*` keys (without the prefix)."""
    return resolve_uncertainties(
        Dataset.from_list(rows),
        UncertaintySettings.from_cfg({f"ual_{key}": value for key, value in settings.items()}),
        dataset_name="data.jsonl",
        content_fields=content_fields(CHAT),
    ).values


MSG = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]


@pytest.mark.parametrize(
    "value, fragment",
    [
        (1.5, "row 1: 1.5 is outside [0, 1]"),
        (-0.2, "row 1: -0.2 is outside [0, 1]"),
        (math.nan, "row 1: NaN is not a valid uncertainty"),
        (None, "row 1: missing (null)"),
    ],
)
def test_bad_values_name_dataset_row_and_value(value, fragment):
    rows = [{"messages": MSG, "uncertainty": 0.2}, {"messages": MSG, "uncertainty": value}]
    with pytest.raises(UncertaintyDataError) as error:
        _resolve(rows)
    assert "dataset 'data.jsonl'" in str(error.value) and fragment in str(error.value)


def test_text_that_is_not_a_number_is_refused_numbers_as_text_are_read():
    rows = [{"messages": MSG, "uncertainty": "0.3"}, {"messages": MSG, "uncertainty": "high"}]
    with pytest.raises(UncertaintyDataError, match=r"1 row\(s\) .*row 1: 'high' is not a number"):
        _resolve(rows)
    assert _resolve(rows[:1]) == [0.3]


def test_every_bad_row_is_counted_and_the_first_five_shown():
    rows = [{"messages": MSG, "uncertainty": 2.0} for _ in range(8)]
    with pytest.raises(
        UncertaintyDataError, match=r"8 row\(s\) .*row 4: 2 is outside .*and 3 more"
    ):
        _resolve(rows)


def test_missing_values_use_the_default_when_asked():
    rows = [{"messages": MSG, "uncertainty": 0.3}, {"messages": MSG, "uncertainty": None}]
    assert _resolve(rows, missing_uncertainty="default", default_uncertainty=0.6) == [0.3, 0.6]
    # invalid values are still errors
    with pytest.raises(UncertaintyDataError, match="outside"):
        _resolve([*rows, {"messages": MSG, "uncertainty": 3.0}], missing_uncertainty="default")


def test_missing_column():
    rows = [{"messages": MSG}]
    with pytest.raises(
        UncertaintyDataError, match=r"has no column 'uncertainty'.*columns are \['messages'\]"
    ):
        _resolve(rows)
    assert _resolve(rows, missing_uncertainty="default", default_uncertainty=0.4) == [0.4]


def test_sidecar_joins_by_content(tmp_path):
    other = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    rows = [{"messages": MSG, "id": 1}, {"messages": other, "id": 2}]
    sidecar = tmp_path / "scores.jsonl"
    sidecar.write_text(
        json.dumps(
            {"sample_key": sample_key({"messages": other}, ["messages"]), "uncertainty": 0.05}
        )
        + "\n"
        + json.dumps(
            {"sample_key": sample_key({"messages": MSG}, ["messages"]), "uncertainty": 0.8}
        )
        + "\n"
    )
    assert _resolve(rows, uncertainty_source="sidecar", uncertainty_file=str(sidecar)) == [
        0.8,
        0.05,
    ]

    unknown = [*rows, {"messages": [{"role": "user", "content": "new"}], "id": 3}]
    with pytest.raises(
        UncertaintyDataError, match=r"sidecar file .*row 2: no annotation for this sample"
    ):
        _resolve(unknown, uncertainty_source="sidecar", uncertainty_file=str(sidecar))


def test_sidecar_conflicting_duplicates(tmp_path):
    key = sample_key({"messages": MSG}, ["messages"])
    sidecar = tmp_path / "scores.jsonl"
    sidecar.write_text(
        "".join(json.dumps({"sample_key": key, "uncertainty": u}) + "\n" for u in (0.1, 0.2))
    )
    with pytest.raises(UncertaintyDataError, match=r"line 2: sample .* appears twice"):
        _resolve([{"messages": MSG}], uncertainty_source="sidecar", uncertainty_file=str(sidecar))


def test_constant_source_keeps_usable_values_for_metrics_only():
    rows = [{"messages": MSG, "uncertainty": u} for u in (0.3, None, 1.5)]
    got = _resolve(rows, uncertainty_source="constant")
    assert got[0] == 0.3 and math.isnan(got[1]) and math.isnan(got[2])
    assert all(math.isnan(v) for v in _resolve([{"messages": MSG}], uncertainty_source="constant"))


def test_bad_rows_fail_through_axolotls_dispatch(tiny_tokenizer):
    rows = read_jsonl(SAMPLE_CHAT)[:5]
    rows[3]["uncertainty"] = 7
    with pytest.raises(UncertaintyDataError, match=r"dataset 'rows.jsonl'.*row 3: 7 is outside"):
        _tokenize(tiny_tokenizer, _cfg(), "axolotl_ual.chat_template", rows)


def test_rows_that_fall_back_to_the_default_are_counted_and_most_of_them_is_loud():
    def report(rows, **settings):
        resolved = resolve_uncertainties(
            Dataset.from_list(rows),
            UncertaintySettings.from_cfg({"ual_missing_uncertainty": "default", **settings}),
            dataset_name="d.jsonl",
            content_fields=content_fields(CHAT),
        )
        return resolved.default_report("d.jsonl", 0.5)

    scored = [{"messages": MSG, "uncertainty": 0.1}] * 3
    assert report(scored) is None
    message, loud = report([*scored, {"messages": MSG, "uncertainty": None}])
    assert "1 of 4 rows (25%) have no uncertainty in field 'uncertainty'" in message and not loud
    message, loud = report([{"messages": MSG, "uncertainty": None}] * 4)
    assert "4 of 4 rows (100%)" in message and "constant smoothing" in message and loud
    message, loud = report([{"messages": MSG}] * 2, ual_uncertainty_field="score")
    assert "2 of 2 rows" in message and "no such column" in message and loud


# --- preference labels (ual_objective: ulma / pointwise_dpo) -------------------------------


def test_preference_labels_ride_along_as_a_sample_column(tiny_tokenizer):
    rows = [dict(r, label=i % 2) for i, r in enumerate(read_jsonl(SAMPLE_CHAT)[:6])]
    ours = _tokenize(tiny_tokenizer, _cfg(ual_objective="ulma"), "axolotl_ual.chat_template", rows)
    assert ours["ual_preference"] == [0.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    plain = _tokenize(tiny_tokenizer, _cfg(), "axolotl_ual.chat_template", rows)
    assert "ual_preference" not in plain.column_names  # only where the objective needs it


@pytest.mark.parametrize(
    "kind, values, fragments",
    [
        (
            "binary",
            [1, 0.5, None, math.nan, 2],
            [
                "4 row(s) have no valid preference label in field 'label'",
                "each label must be 1 (good) or 0 (bad)",
                "row 1: 0.5 is neither 0 nor 1 (for scores in [0, 1] set ual_preference_labels: continuous)",
                "row 2: missing (null)",
                "row 3: NaN",
                "row 4: 2 is outside [0, 1]",
            ],
        ),
        ("binary", ["good", "1", "0"], ["1 row(s)", "row 0: 'good' is not a number"]),
        ("continuous", [1, 0.5, -0.1, True], ["1 row(s)", "row 2: -0.1 is outside [0, 1]"]),
    ],
)
def test_bad_preference_labels_name_dataset_row_and_value(tiny_tokenizer, kind, values, fragments):
    rows = [dict(r, label=v) for r, v in zip(read_jsonl(SAMPLE_CHAT), values, strict=False)]
    cfg = _cfg(ual_objective="ulma", ual_preference_labels=kind)
    with pytest.raises(DataError) as error:
        _tokenize(tiny_tokenizer, cfg, "axolotl_ual.chat_template", rows)
    assert "dataset 'rows.jsonl'" in str(error.value)
    for fragment in fragments:
        assert fragment in str(error.value), fragment


def test_a_missing_label_column_names_the_key(tiny_tokenizer):
    rows = read_jsonl(SAMPLE_CHAT)[:3]
    cfg = _cfg(ual_objective="ulma", ual_preference_field="thumbs")
    with pytest.raises(DataError, match=r"no column 'thumbs' \(ual_preference_field\)"):
        _tokenize(tiny_tokenizer, cfg, "axolotl_ual.chat_template", rows)
