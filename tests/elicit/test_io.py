"""Dataset reading/writing, row validation, sample keys."""

import json
import os

import pytest

from axolotl_ual import rows as rowlib
from axolotl_ual.elicit import io
from axolotl_ual.elicit.io import DataError
from axolotl_ual.elicit.samples import prepare_samples, resolve_format, sidecar_rows
from axolotl_ual.errors import UsageError

from .support import alpaca_rows, chat_rows, write_jsonl

FILE_SUFFIXES = [".jsonl", ".json", ".parquet", ".csv", ""]


@pytest.mark.parametrize("suffix", FILE_SUFFIXES)
def test_alpaca_rows_round_trip_in_every_format(tmp_path, suffix):
    rows = [{**row, "uncertainty": (0.25 if row["id"] % 3 else None)} for row in alpaca_rows(6)]
    target = tmp_path / f"data{suffix}"
    io.write_rows(rows, target)
    back = io.read_rows(target)
    if suffix == ".csv":  # CSV has no types: empty strings come back as missing values
        rows = [{k: (None if v == "" else v) for k, v in row.items()} for row in rows]
    assert back == rows
    assert sorted(os.listdir(tmp_path)) == [target.name]  # no temporary file left behind


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet", ""])
def test_chat_rows_round_trip(tmp_path, suffix):
    rows = chat_rows(4)
    target = tmp_path / f"data{suffix}"
    io.write_rows(rows, target)
    assert io.read_rows(target) == rows


def test_chat_rows_through_csv_keep_their_sample_keys(tmp_path):
    rows = chat_rows(3)
    io.write_rows(rows, tmp_path / "chat.csv")
    back = io.read_rows(tmp_path / "chat.csv")
    assert isinstance(back[0]["messages"], str)  # stored as JSON text
    fields = rowlib.content_fields("chat")
    keys = [s.key for s in prepare_samples(back, "chat")]
    assert keys == [rowlib.sample_key(row, fields) for row in rows]


def test_writing_replaces_a_folder_atomically(tmp_path):
    target = tmp_path / "scored"
    io.write_rows(chat_rows(2), target)
    io.write_rows(chat_rows(3), target)
    assert len(io.read_rows(target)) == 3
    assert sorted(os.listdir(tmp_path)) == ["scored"]


@pytest.mark.parametrize("restore_fails", [False, True], ids=["put-back", "kept-aside"])
def test_a_folder_swap_that_fails_keeps_the_old_output(tmp_path, monkeypatch, restore_fails):
    """The old folder is moved aside before the new one is renamed in: if that rename fails,
    the old one goes back (or, if even that fails, stays aside and the error says where)."""
    target = tmp_path / "scored"
    io.write_rows(chat_rows(2), target)
    real_replace, calls = os.replace, []

    def replace(source, destination):
        calls.append(os.path.basename(source))
        if len(calls) == 2 or (restore_fails and len(calls) == 3):
            raise OSError(28, "No space left on device")
        real_replace(source, destination)

    monkeypatch.setattr(io.os, "replace", replace)
    with pytest.raises(OSError, match="No space left") as caught:
        io.write_rows(chat_rows(3), target)
    monkeypatch.undo()
    [aside] = [name for name in os.listdir(tmp_path) if ".old-" in name] or [None]
    if restore_fails:
        assert f"the previous scored is kept at {tmp_path / aside}" in str(caught.value)
        assert io.read_rows(tmp_path / aside) == chat_rows(2)
    else:
        assert aside is None and io.read_rows(target) == chat_rows(2)
    assert not [name for name in os.listdir(tmp_path) if ".tmp-" in name]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "out.jsonl"
    io.write_rows([{"a": 1}], target)
    with pytest.raises(TypeError):
        io.write_rows([{"a": object()}], target)
    assert io.read_rows(target) == [{"a": 1}]
    assert sorted(os.listdir(tmp_path)) == ["out.jsonl"]


def test_json_lines_in_a_json_file_and_a_data_wrapper(tmp_path):
    write_jsonl(tmp_path / "lines.json", [{"a": 1}, {"a": 2}])
    assert io.read_rows(tmp_path / "lines.json") == [{"a": 1}, {"a": 2}]
    (tmp_path / "wrapped.json").write_text(json.dumps({"data": [{"a": 3}]}))
    assert io.read_rows(tmp_path / "wrapped.json") == [{"a": 3}]


def test_read_errors_name_the_place(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(DataError, match=r"bad.jsonl, line 2: not valid JSON"):
        io.read_rows(tmp_path / "bad.jsonl")
    (tmp_path / "list.jsonl").write_text("[1, 2]\n")
    with pytest.raises(DataError, match=r"line 1: expected a JSON object per line, got list"):
        io.read_rows(tmp_path / "list.jsonl")
    with pytest.raises(UsageError, match=r"'\.txt'"):  # an output path is an argument
        io.write_rows([], tmp_path / "out.txt")
    os.environ["HF_HUB_OFFLINE"] = "1"
    with pytest.raises(DataError, match="not a file or folder here"):
        io.read_rows(tmp_path / "missing" / "data.jsonl")


def test_detect_format_and_clear_errors():
    assert resolve_format(chat_rows(1), None, "messages") == "chat"
    assert resolve_format(alpaca_rows(1), None, "messages") == "alpaca"
    assert resolve_format([{"conversation": []}], "chat", "conversation") == "chat"
    with pytest.raises(DataError, match="row 0: cannot tell the row format"):
        resolve_format([{"text": "hello"}], None, "messages")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            {"messages": "hello"},
            r"row 1: field 'messages' must be a list of messages, got str: 'hello'",
        ),
        (
            {"messages": [{"role": "user", "content": 3}]},
            r"row 1, messages\[0\]: 'content' must be a string, got int: 3",
        ),
        (
            {"messages": [{"content": "hi"}]},
            r"row 1, messages\[0\]: 'role' must be a non-empty string, got None",
        ),
        ({"messages": ["hi"]}, r"row 1, messages\[0\]: a message must be an object"),
        ({"messages": []}, r"row 1: field 'messages' is an empty list"),
    ],
)
def test_bad_chat_rows_are_named(row, message):
    with pytest.raises(DataError, match=message):
        prepare_samples([chat_rows(1)[0], row], "chat")


def test_bad_alpaca_rows_are_named():
    with pytest.raises(
        DataError, match=r"row 0: field 'output' must be a non-empty string, got int: 5"
    ):
        prepare_samples([{"instruction": "x", "output": 5}], "alpaca")
    with pytest.raises(
        DataError, match=r"row 0: field 'instruction' must be a non-empty string, got NoneType"
    ):
        prepare_samples([{"output": "y"}], "alpaca")


def test_sample_keys_are_the_shared_row_keys():
    rows = chat_rows(3) + alpaca_rows(0)
    samples = prepare_samples(rows, "chat")
    assert [s.key for s in samples] == [rowlib.sample_key(r, ("messages",)) for r in rows]
    arows = alpaca_rows(3)
    asamples = prepare_samples(arows, "alpaca")
    assert [s.key for s in asamples] == [rowlib.sample_key(r, rowlib.ALPACA_FIELDS) for r in arows]
    # the alpaca input joins the instruction; the response is the output
    assert [m.role for m in asamples[0].messages] == ["user", "assistant"]
    assert asamples[0].messages[0].content == "Q0: name a colour\n\ncontext 0"
    assert asamples[1].messages[0].content == "Q1: name a colour"


def test_sharegpt_messages_are_read_as_roles():
    row = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}
    (sample,) = prepare_samples([row], "chat", "conversations")
    assert [(m.role, m.content) for m in sample.messages] == [
        ("user", "hi"),
        ("assistant", "hello"),
    ]


def test_sidecar_rows_skip_nulls_and_repeats():
    samples = prepare_samples(chat_rows(2) + chat_rows(1), "chat")
    assert sidecar_rows(samples, [0.5, None, 0.5]) == [
        {"sample_key": samples[0].key, "uncertainty": 0.5}
    ]
