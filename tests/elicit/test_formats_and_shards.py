"""Every input/output format through the CLI; `--shard` and `merge`."""

from __future__ import annotations

import json

import pytest

from axolotl_ual import rows as rowlib
from axolotl_ual.elicit import io

from .support import (
    ScriptedJudge,
    alpaca_rows,
    chat_rows,
    expected_score,
    expected_u,
    read_jsonl,
    write_jsonl,
)

CHAT_INPUTS = ["data.jsonl", "data.json", "data.parquet", "data_folder"]


@pytest.mark.parametrize("name", CHAT_INPUTS)
def test_every_chat_input_format(tmp_path, judge_server, run_elicit, name):
    server = judge_server(ScriptedJudge())
    rows = chat_rows(10)
    io.write_rows(rows, tmp_path / name)
    output = tmp_path / name.replace("data", "scored")  # same format out
    code, _, stderr = run_elicit(
        f"elicit {tmp_path / name} --output {output} --sidecar {tmp_path / 'side.jsonl'} --base-url {server.base_url} --model judge"
    )
    assert code == 0, stderr
    scored = io.read_rows(output)
    assert [{k: row[k] for k in rows[0]} for row in scored] == rows
    assert [row["uncertainty"] for row in scored] == pytest.approx(
        [expected_u(i) for i in range(10)]
    )
    assert [row["uncertainty_score"] for row in scored] == [expected_score(i) for i in range(10)]
    keys = [rowlib.sample_key(row, ("messages",)) for row in rows]
    assert [r["sample_key"] for r in read_jsonl(tmp_path / "side.jsonl")] == keys


def test_csv_alpaca_in_and_other_formats_out(tmp_path, judge_server, run_elicit):
    server = judge_server(ScriptedJudge())
    rows = alpaca_rows(8)
    io.write_rows(rows, tmp_path / "data.csv")
    for output in ("scored.csv", "scored.parquet", "scored.jsonl"):
        code, _, stderr = run_elicit(
            f"elicit {tmp_path / 'data.csv'} -o {tmp_path / output} --format alpaca --base-url {server.base_url} --model judge"
        )
        assert code == 0, stderr
        scored = io.read_rows(tmp_path / output)
        assert [row["uncertainty"] for row in scored] == pytest.approx(
            [expected_u(i) for i in range(8)]
        )
        assert [row["instruction"] for row in scored] == [row["instruction"] for row in rows]
    # the three runs share the cache of their own outputs; the csv input read its empty `input` as missing
    assert [r["input"] for r in io.read_rows(tmp_path / "scored.jsonl")][:2] == ["context 0", None]


def test_chat_rows_in_csv(tmp_path, judge_server, run_elicit):
    server = judge_server(ScriptedJudge())
    rows = chat_rows(5)
    io.write_rows(rows, tmp_path / "data.csv")  # messages stored as JSON text
    code, _, stderr = run_elicit(
        f"elicit {tmp_path / 'data.csv'} -o {tmp_path / 'scored.jsonl'} --sidecar {tmp_path / 'side.jsonl'} --format chat --base-url {server.base_url} --model judge"
    )
    assert code == 0, stderr
    assert [r["uncertainty"] for r in read_jsonl(tmp_path / "scored.jsonl")] == pytest.approx(
        [expected_u(i) for i in range(5)]
    )
    keys = [rowlib.sample_key(row, ("messages",)) for row in rows]
    assert [r["sample_key"] for r in read_jsonl(tmp_path / "side.jsonl")] == keys


def test_dataset_dict_folder_and_split(tmp_path, judge_server, run_elicit):
    import datasets

    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list(chat_rows(3)),
            "test": datasets.Dataset.from_list(chat_rows(2, start=10)),
        }
    ).save_to_disk(str(tmp_path / "dd"))
    server = judge_server(ScriptedJudge())
    code, _, stderr = run_elicit(
        f"elicit {tmp_path / 'dd'} -o {tmp_path / 'out.jsonl'} --split test --base-url {server.base_url} --model judge"
    )
    assert code == 0, stderr
    assert [r["id"] for r in read_jsonl(tmp_path / "out.jsonl")] == [10, 11]
    code, _, stderr = run_elicit(
        f"elicit {tmp_path / 'dd'} -o {tmp_path / 'out.jsonl'} --split dev --base-url {server.base_url} --model judge"
    )
    assert code == 2 and "no split 'dev'" in stderr


def run_shards(tmp_path, server, run_elicit, count, rows=11):
    write_jsonl(tmp_path / "data.jsonl", chat_rows(rows))
    outputs = []
    for index in range(count):
        output = tmp_path / f"part{index}.jsonl"
        code, _, stderr = run_elicit(
            f"elicit {tmp_path / 'data.jsonl'} -o {output} --shard {index}/{count} "
            f"--base-url {server.base_url} --model judge"
        )
        assert code == 0, stderr
        outputs.append(output)
    return outputs


def test_shards_are_contiguous_and_merge_back_in_order(tmp_path, judge_server, run_elicit):
    judge = ScriptedJudge()
    server = judge_server(judge)
    outputs = run_shards(tmp_path, server, run_elicit, 3)
    assert [[r["id"] for r in read_jsonl(path)] for path in outputs] == [
        [0, 1, 2],
        [3, 4, 5, 6],
        [7, 8, 9, 10],
    ]
    assert dict(judge.counts) == dict.fromkeys(range(11), 1)
    manifest = json.loads((tmp_path / "part1.jsonl.shard.json").read_text())
    assert (manifest["shard"], manifest["num_shards"], manifest["start"], manifest["stop"]) == (
        1,
        3,
        3,
        7,
    )

    shards = " ".join(map(str, reversed(outputs)))
    code, stdout, stderr = run_elicit(
        f"merge {shards} -o {tmp_path / 'merged.parquet'} --sidecar {tmp_path / 'side.jsonl'}"
    )
    assert code == 0, stderr
    merged = io.read_rows(tmp_path / "merged.parquet")
    assert [row["id"] for row in merged] == list(range(11))
    assert [row["uncertainty"] for row in merged] == pytest.approx(
        [expected_u(i) for i in range(11)]
    )
    assert len(read_jsonl(tmp_path / "side.jsonl")) == 11
    assert "merged 3 shards, 11 rows" in stdout


def test_merge_refuses_incomplete_or_mixed_shards(tmp_path, judge_server, run_elicit):
    server = judge_server(ScriptedJudge())
    outputs = run_shards(tmp_path, server, run_elicit, 3)

    code, _, stderr = run_elicit(f"merge {outputs[0]} {outputs[2]} -o {tmp_path / 'm.jsonl'}")
    assert code == 2 and "missing shard(s) 1/3" in stderr
    code, _, stderr = run_elicit(
        f"merge {outputs[0]} {outputs[1]} {outputs[1]} {outputs[2]} -o {tmp_path / 'm.jsonl'}"
    )
    assert code == 2 and "shard 1/3 given twice" in stderr
    assert not (tmp_path / "m.jsonl").exists()

    all_shards = " ".join(map(str, outputs))
    rows = read_jsonl(outputs[1])
    write_jsonl(outputs[1], rows[:-1])  # a truncated shard
    code, _, stderr = run_elicit(f"merge {all_shards} -o {tmp_path / 'm.jsonl'}")
    assert code == 2 and "part1.jsonl has 3 rows, its manifest says 4" in stderr
    rows[0]["messages"][0]["content"] = "Q3: edited"
    write_jsonl(outputs[1], rows)
    code, _, stderr = run_elicit(f"merge {all_shards} -o {tmp_path / 'm.jsonl'}")
    assert code == 2 and "not the ones its manifest records" in stderr

    (tmp_path / "part0.jsonl.shard.json").unlink()
    code, _, stderr = run_elicit(f"merge {all_shards} -o {tmp_path / 'm.jsonl'}")
    assert code == 2 and "no shard manifest part0.jsonl.shard.json" in stderr

    other = tmp_path / "other"
    other.mkdir()
    other_outputs = run_shards(other, server, run_elicit, 3, rows=12)  # a different dataset
    code, _, stderr = run_elicit(
        f"merge {other_outputs[0]} {outputs[1]} {outputs[2]} -o {tmp_path / 'm.jsonl'}"
    )
    assert code == 2 and "shards of different runs" in stderr


def test_the_training_side_joins_the_sidecar(tmp_path, judge_server, run_elicit):
    """The sidecar's keys are the ones training computes on rows loaded with `datasets`, from
    JSON or from Parquet (where Arrow fills keys missing from some messages with None)."""
    import datasets

    from axolotl_ual.uncertainty import UncertaintySettings, resolve_uncertainties

    rows = chat_rows(6)
    rows[2]["messages"][0]["name"] = "alice"  # only this message has a name
    write_jsonl(tmp_path / "data.jsonl", rows)
    io.write_rows(rows, tmp_path / "data.parquet")
    server = judge_server(ScriptedJudge())
    code, _, stderr = run_elicit(
        f"elicit {tmp_path / 'data.jsonl'} --sidecar {tmp_path / 'side.jsonl'} --base-url {server.base_url} --model judge"
    )
    assert code == 0, stderr
    settings = UncertaintySettings.from_cfg(
        {"ual_uncertainty_source": "sidecar", "ual_uncertainty_file": str(tmp_path / "side.jsonl")}
    )
    from_parquet = datasets.load_dataset(
        "parquet", data_files=str(tmp_path / "data.parquet"), split="train"
    )
    assert from_parquet[0]["messages"][0]["name"] is None  # the filled-in key the join must ignore
    from_json = datasets.load_dataset(
        "json", data_files=str(tmp_path / "data.jsonl"), split="train"
    )
    for loaded in (from_json, from_parquet):
        values = resolve_uncertainties(
            loaded, settings, dataset_name="data", content_fields=("messages",)
        ).values
        assert values == pytest.approx([expected_u(i) for i in range(6)])
