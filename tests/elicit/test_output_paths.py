"""No command deletes or overwrites what it did not write, and a path that cannot be written is
refused before any request is sent (issue 10).

Every refusal is checked the same way: exit 2, one line naming the path, the judge never asked,
and every file that was there before byte for byte unchanged.
"""

from __future__ import annotations

import os
import stat

import pytest

from axolotl_ual.elicit import io

from .support import ScriptedJudge, chat_rows, read_jsonl, run_cli_subprocess, write_jsonl


def snapshot(root) -> dict[str, bytes]:
    """Every file under `root` and its bytes."""
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


def assert_refused(result, tmp_path, before, *needles):
    code, _, stderr = result
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for needle in needles:
        assert str(needle) in lines[0], lines[0]
    assert snapshot(tmp_path) == before  # nothing deleted, changed or added


@pytest.fixture
def judge(judge_server):
    judge = ScriptedJudge()
    server = judge_server(judge)
    yield server
    assert server.requests == [], "a request was sent before the paths were checked"


def elicit(run_elicit, server, arguments: str):
    return run_elicit(f"elicit {arguments} --base-url {server.base_url} --model judge")


def test_an_output_folder_holding_the_input_is_refused(tmp_path, judge, run_elicit):
    data = tmp_path / "data"
    write_jsonl(data / "train.jsonl", chat_rows(3))
    before = snapshot(tmp_path)
    result = elicit(run_elicit, judge, f"{data / 'train.jsonl'} -o {data}")
    assert_refused(result, tmp_path, before, f"--output {data}", "holding the input")


def test_an_existing_folder_that_elicit_did_not_write_is_refused(tmp_path, judge, run_elicit):
    write_jsonl(tmp_path / "train.jsonl", chat_rows(3))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    before = snapshot(tmp_path)
    result = elicit(run_elicit, judge, f"{tmp_path / 'train.jsonl'} -o {tmp_path / 'mine'}")
    assert_refused(result, tmp_path, before, "mine", "notes.txt", "remove it or choose another")


@pytest.mark.parametrize(
    ("flags", "needles"),
    [
        ("--cache {data}", ["--cache", "is the input"]),
        ("-o {out} --sidecar {out}", ["--output", "is --sidecar"]),
        ("-o {out} --cache {out}", ["--output", "is --cache"]),
        ("--sidecar {side} --cache {side}", ["--sidecar", "is --cache"]),
        ("-o {link}", ["--output", "is the input"]),  # a symlink to the input
        ("-o {hard}", ["--output", "is the input"]),  # a hard link to the input
    ],
)
def test_two_outputs_or_an_output_and_the_input_never_share_a_path(
    tmp_path, judge, run_elicit, flags, needles
):
    data = write_jsonl(tmp_path / "data.jsonl", chat_rows(3))
    (tmp_path / "link.jsonl").symlink_to(data)
    os.link(data, tmp_path / "hard.jsonl")
    paths = {
        "data": data,
        "out": tmp_path / "out.jsonl",
        "side": tmp_path / "side.jsonl",
        "link": tmp_path / "link.jsonl",
        "hard": tmp_path / "hard.jsonl",
    }
    if "--cache" in flags and "-o" not in flags and "--sidecar" not in flags:
        flags += " -o {out}"
    before = snapshot(tmp_path)
    result = elicit(run_elicit, judge, f"{data} " + flags.format(**paths))
    assert_refused(result, tmp_path, before, *needles)


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("out.jsonl", '{"text": "my notes"}\n', "no columns 'uncertainty', 'uncertainty_score'"),
        ("out.csv", "a,b\n1,2\n", "no columns 'uncertainty'"),
        ("out.json", '[{"uncertainty": 0.5}]', "no column 'uncertainty_score'"),
        ("out.parquet", "not parquet at all", "not Parquet"),
    ],
)
def test_an_existing_output_file_that_is_not_ours_is_refused(
    tmp_path, judge, run_elicit, name, content, needle
):
    data = write_jsonl(tmp_path / "data.jsonl", chat_rows(3))
    (tmp_path / name).write_text(content)
    before = snapshot(tmp_path)
    result = elicit(run_elicit, judge, f"{data} -o {tmp_path / name}")
    assert_refused(result, tmp_path, before, f"--output {tmp_path / name}", needle)


def test_a_sidecar_or_cache_path_holding_something_else_is_refused(tmp_path, judge, run_elicit):
    data = write_jsonl(tmp_path / "data.jsonl", chat_rows(3))
    write_jsonl(tmp_path / "side.jsonl", [{"sample_key": "k", "uncertainty": 0.1, "x": 1}])
    write_jsonl(tmp_path / "other.jsonl", chat_rows(1))
    before = snapshot(tmp_path)
    result = elicit(run_elicit, judge, f"{data} --sidecar {tmp_path / 'side.jsonl'}")
    assert_refused(result, tmp_path, before, "--sidecar", "exactly")
    result = elicit(
        run_elicit, judge, f"{data} -o {tmp_path / 'o.jsonl'} --cache {tmp_path / 'other.jsonl'}"
    )
    assert_refused(result, tmp_path, before, "--cache", "not a cache record")


def read_only_folder(tmp_path):
    if os.geteuid() == 0:  # root writes through permissions; /sys is a read-only mount
        return "/sys/ual-test"
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    return str(folder)


@pytest.mark.parametrize("where", ["current folder", "under a file", "read-only folder"])
def test_an_output_that_cannot_be_written_is_found_before_any_request(
    tmp_path, judge, run_elicit, monkeypatch, where
):
    data = write_jsonl(tmp_path / "in" / "data.jsonl", chat_rows(3))
    (tmp_path / "notes.txt").write_text("a file")
    monkeypatch.chdir(tmp_path)
    output = {
        "current folder": ".",
        "under a file": "notes.txt/scored.jsonl",
        "read-only folder": f"{read_only_folder(tmp_path)}/scored.jsonl",
    }[where]
    before = snapshot(tmp_path)
    result = elicit(run_elicit, judge, f"{data} -o {output}")
    assert_refused(result, tmp_path, before, f"--output {output}")


def test_unwritable_output_as_a_subprocess_is_one_line_and_exit_2(tmp_path, judge_server):
    server = judge_server(ScriptedJudge())
    write_jsonl(tmp_path / "data.jsonl", chat_rows(3))
    (tmp_path / "notes.txt").write_text("a file")
    result = run_cli_subprocess(
        f"elicit data.jsonl -o notes.txt/out.jsonl --base-url {server.base_url} --model j",
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: --output notes.txt/out.jsonl: {tmp_path / 'notes.txt'} is a file, so nothing "
        "can be written under it"
    ]
    assert server.requests == []


def test_outputs_elicit_wrote_are_replaced_on_a_rerun(tmp_path, judge_server, run_elicit):
    """Folders, files, sidecar and manifest from an earlier run are ours: re-running works."""
    server = judge_server(ScriptedJudge())
    data = write_jsonl(tmp_path / "data.jsonl", chat_rows(4))
    for output in ("scored", "scored.csv", "scored.parquet", "scored.json"):
        command = (
            f"elicit {data} -o {tmp_path / output} --sidecar {tmp_path / 'side.jsonl'} "
            f"--shard 0/1 --base-url {server.base_url} --model judge"
        )
        for _ in range(2):
            code, _, stderr = run_elicit(command)
            assert code == 0, stderr
        assert len(io.read_rows(tmp_path / output)) == 4


def test_merge_refuses_a_target_it_did_not_write(tmp_path, judge_server, run_elicit):
    server = judge_server(ScriptedJudge())
    data = write_jsonl(tmp_path / "data.jsonl", chat_rows(4))
    for index in range(2):
        code, _, stderr = run_elicit(
            f"elicit {data} -o {tmp_path / f'part{index}.jsonl'} --shard {index}/2 "
            f"--base-url {server.base_url} --model judge"
        )
        assert code == 0, stderr
    (tmp_path / "merged").mkdir()
    (tmp_path / "merged" / "keep.txt").write_text("mine")
    shards = f"{tmp_path / 'part0.jsonl'} {tmp_path / 'part1.jsonl'}"
    before = snapshot(tmp_path)
    assert_refused(
        run_elicit(f"merge {shards} -o {tmp_path / 'merged'}"), tmp_path, before, "keep.txt"
    )
    assert_refused(
        run_elicit(f"merge {shards} -o {tmp_path}"), tmp_path, before, "holding the input"
    )
    assert_refused(
        run_elicit(f"merge {shards} -o {tmp_path / 'part1.jsonl'}"),
        tmp_path,
        before,
        "is the input",
    )
    code, _, stderr = run_elicit(f"merge {shards} -o {tmp_path / 'all'}")  # a new folder
    assert code == 0, stderr
    code, _, stderr = run_elicit(f"merge {shards} -o {tmp_path / 'all'}")  # ours: replaced
    assert code == 0, stderr
    assert [row["id"] for row in io.read_rows(tmp_path / "all")] == [0, 1, 2, 3]


def test_inspect_never_writes_its_png_over_the_input(tmp_path, run_elicit):
    scored = write_jsonl(tmp_path / "scored.jsonl", [{"uncertainty": 0.5}])
    before = snapshot(tmp_path)
    assert_refused(
        run_elicit(f"inspect {scored} --png {scored}"), tmp_path, before, "--png", "is the input"
    )
    (tmp_path / "plot.png").write_text("not an image")
    before = snapshot(tmp_path)
    assert_refused(
        run_elicit(f"inspect {scored} --png {tmp_path / 'plot.png'}"),
        tmp_path,
        before,
        "no PNG signature",
    )
    (tmp_path / "plot.png").unlink()
    for _ in range(2):  # a PNG inspect wrote is replaced
        code, _, stderr = run_elicit(f"inspect {scored} --png {tmp_path / 'plot.png'}")
        assert code == 0, stderr
    assert read_jsonl(scored) == [{"uncertainty": 0.5}]
