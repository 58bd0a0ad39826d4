"""Each phase's data: exact, reproducible replay counts; uncertainty buckets; entries' options."""

from __future__ import annotations

import pytest

from axolotl_ual.elicit.io import read_rows, write_rows
from axolotl_ual.errors import DataError
from axolotl_ual.phases.data import DataPlanner, allocate, replay_count
from axolotl_ual.phases.recipe import Share
from tests.phases.support import chat_rows, entry, load, write_data, write_recipe


def plan_all(recipe):
    planner = DataPlanner(recipe)
    return {p.name: planner.plan(p, recipe.work_dir / p.dirname) for p in recipe.plans}


def keys_of(rows):
    return [r["messages"][0]["content"] for r in rows]


def test_allocation_is_proportional_and_exact():
    assert allocate([10, 30], 8) == [2, 6]
    assert allocate([1, 1, 1], 2) == [1, 1, 0]  # equal remainders: the earlier entry first
    assert allocate([5, 0, 5], 5) == [3, 0, 2]
    assert sum(allocate([7, 13, 29], 17)) == 17
    assert replay_count(Share(fraction=0.25), 24) == 6
    assert replay_count(Share(fraction=0.01), 24) == 1  # at least one row
    assert replay_count(Share(fraction=0.125), 4) == 1  # round half up: 0.5 -> 1
    assert replay_count(Share(count=5), 24) == 5


def recipe_with_replay(tmp_path, seed=42, **replay):
    write_data(
        tmp_path,
        **{
            "a.jsonl": chat_rows(10),
            "b.jsonl": chat_rows(30, start=100),
            "s.jsonl": chat_rows(5, start=500),
            "t.jsonl": chat_rows(4, start=900),
        },
    )
    phases = [
        {
            "name": "knowledge",
            "datasets": [
                entry("a.jsonl", roles_to_train=["assistant"], split="train"),
                entry("b.jsonl", ds_type="json"),
            ],
        },
        {"name": "skills", "datasets": [entry("s.jsonl")], "replay": replay},
        {
            "name": "final",
            "datasets": [entry("t.jsonl")],
            "replay": {"skills": {"count": 5}, "knowledge": {"count": 1}},
        },
    ]
    return load(write_recipe(tmp_path, phases, replay_seed=seed))


def test_replay_counts_are_exact_and_keep_each_entrys_options(tmp_path):
    recipe = recipe_with_replay(tmp_path, knowledge={"count": 8})
    data = plan_all(recipe)
    skills = data["skills"]
    assert skills.report["replay"] == [
        {
            "from": "knowledge",
            "share": "count 8",
            "rows": 8,
            "of": 40,
            "files": [
                {"file": str(p), "rows": n, "of": of, "source": str(tmp_path / src)}
                for p, n, of, src in [
                    (
                        recipe.work_dir / "02-skills/data/replay-knowledge-00-a.jsonl",
                        2,
                        10,
                        "a.jsonl",
                    ),
                    (
                        recipe.work_dir / "02-skills/data/replay-knowledge-01-b.jsonl",
                        6,
                        30,
                        "b.jsonl",
                    ),
                ]
            ],
        }
    ]
    own, first, second = skills.entries
    assert own["path"] == str(tmp_path / "s.jsonl")
    # the replayed entries copy the original options; where the rows come from is replaced
    assert first == {
        "path": skills.report["replay"][0]["files"][0]["file"],
        "type": "axolotl_ual.chat_template",
        "field_messages": "messages",
        "roles_to_train": ["assistant"],
    }
    assert "ds_type" not in second and second["type"] == "axolotl_ual.chat_template"
    skills.write()
    replayed = read_rows(first["path"])
    assert len(replayed) == 2 and all(r in read_rows(tmp_path / "a.jsonl") for r in replayed)
    # a phase's data is what it introduces: `final` replays skills' own 5 rows, not its replay
    assert data["final"].report["replay"][0]["of"] == 5


def test_replay_is_reproducible_from_the_seed(tmp_path):
    def drawn(folder, seed):
        data = plan_all(recipe_with_replay(folder, seed=seed, knowledge={"fraction": 0.5}))
        return [keys_of(rows) for _, rows in data["skills"].files]

    first = drawn(tmp_path / "one", 42)
    assert first == drawn(tmp_path / "two", 42)
    assert [len(rows) for rows in first] == [5, 15]
    assert first != drawn(tmp_path / "three", 43)


def test_asking_for_more_rows_than_a_phase_has_names_the_phase_and_key(tmp_path):
    recipe = recipe_with_replay(tmp_path, knowledge={"count": 41})
    with pytest.raises(DataError, match=r"phase 'skills': replay.knowledge.count: 41 rows asked"):
        plan_all(recipe)


def test_replay_keeps_the_file_format(tmp_path):
    rows = [
        {"instruction": f"q{i}", "input": "", "output": f"a{i}", "uncertainty": 0.1}
        for i in range(6)
    ]
    write_rows(rows, tmp_path / "k.parquet")
    write_rows(rows, tmp_path / "k.csv")
    write_data(tmp_path, **{"s.jsonl": chat_rows(2)})
    phases = [
        {
            "name": "k",
            "datasets": [
                {"path": "k.parquet", "type": "axolotl_ual.alpaca"},
                {"path": "k.csv", "type": "axolotl_ual.alpaca"},
            ],
        },
        {"name": "s", "datasets": [entry("s.jsonl")], "replay": {"k": {"count": 4}}},
    ]
    data = plan_all(load(write_recipe(tmp_path, phases)))["s"]
    data.write()
    parquet, csv = (path for path, _ in data.files)
    assert parquet.suffix == ".parquet" and csv.suffix == ".csv"
    assert read_rows(parquet) == [r for r in rows if r in read_rows(parquet)]
    assert len(read_rows(csv)) == 2


def split_recipe(tmp_path, rows, **split):
    write_data(tmp_path, **{"c.jsonl": rows, "d.jsonl": chat_rows(3, start=50, u=lambda i: 0.9)})
    phases = [
        {
            "name": "curriculum",
            "datasets": [entry("c.jsonl"), entry("d.jsonl")],
            "split_by_uncertainty": split,
        },
        {"name": "after", "datasets": [entry("d.jsonl")], "replay": {"curriculum": {"count": 4}}},
    ]
    return load(write_recipe(tmp_path, phases))


def test_split_by_boundaries_orders_rows_by_uncertainty(tmp_path):
    values = [0.0, 0.1, 0.3, 0.29, 0.6, 0.59, 1.0, 0.7]
    rows = chat_rows(len(values), u=lambda i: values[i])
    data = plan_all(split_recipe(tmp_path, rows, boundaries=[0.3, 0.6], replay={"count": 1}))
    buckets = {n: [keys_of(r) for _, r in data[n].files[:2]] for n in data if n != "after"}
    # a u equal to a boundary goes up; every entry keeps its own file
    assert buckets["curriculum-1"] == [["question 0", "question 1", "question 3"]]
    assert buckets["curriculum-2"][0] == ["question 2", "question 5"]
    assert buckets["curriculum-3"] == [
        ["question 4", "question 6", "question 7"],
        ["question 50", "question 51", "question 52"],
    ]
    assert data["curriculum-2"].report["bucket"] == {
        "number": 2,
        "of": 3,
        "field": "uncertainty",
        "low": 0.3,
        "high": 0.6,
        "boundaries": [0.3, 0.6],
        "rows": 2,
    }
    # split.replay: each later bucket replays every earlier one
    assert [r["from"] for r in data["curriculum-3"].report["replay"]] == [
        "curriculum-1",
        "curriculum-2",
    ]
    # replaying the split phase by its name draws from the union of its buckets (14 rows)
    assert data["after"].report["replay"][0]["of"] == 11


def test_split_by_quantiles(tmp_path):
    rows = chat_rows(12, u=lambda i: i / 11)
    data = plan_all(split_recipe(tmp_path, rows, quantiles=3))
    sizes = [data[f"curriculum-{i}"].report["bucket"]["rows"] for i in (1, 2, 3)]
    assert sizes == [5, 5, 5]  # 15 rows (12, plus d.jsonl's 3 at u = 0.9) in thirds


def test_missing_uncertainty_is_an_error_naming_the_rows_unless_placed(tmp_path):
    rows = chat_rows(6)
    rows[2].pop("uncertainty")
    rows[4]["uncertainty"] = None
    with pytest.raises(DataError) as caught:
        plan_all(split_recipe(tmp_path / "a", rows, boundaries=[0.5]))
    message = str(caught.value)
    assert (
        "phase 'curriculum': split_by_uncertainty.field 'uncertainty': 2 row(s) have no" in message
    )
    assert "c.jsonl row 2, " in message and "c.jsonl row 4." in message
    assert "split_by_uncertainty.missing: first | last" in message
    first = plan_all(split_recipe(tmp_path / "b", rows, boundaries=[0.5], missing="first"))
    assert first["curriculum-1"].report["bucket"]["rows"] == 6
    last = plan_all(split_recipe(tmp_path / "c", rows, boundaries=[0.5], missing="last"))
    assert last["curriculum-2"].report["bucket"]["rows"] == 5


def test_invalid_uncertainty_is_always_an_error(tmp_path):
    rows = chat_rows(3)
    rows[1]["uncertainty"] = 1.5
    with pytest.raises(DataError, match=r"c.jsonl row 1: 1.5 is outside \[0, 1\]"):
        plan_all(split_recipe(tmp_path, rows, boundaries=[0.5], missing="first"))


def test_an_empty_bucket_is_an_error(tmp_path):
    with pytest.raises(DataError, match=r"uncertainty bucket 1 of 2 \(0 <= u < 0.05\) has no rows"):
        plan_all(split_recipe(tmp_path, chat_rows(3, start=10), boundaries=[0.05]))
