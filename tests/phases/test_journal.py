"""The journal: atomic, refuses changed inputs, sees a training left running; the lock; restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from axolotl_ual.errors import UsageError
from axolotl_ual.phases.journal import Journal, fingerprint, locked, move_aside
from axolotl_ual.phases.runner import _refuse_if_training
from tests.phases.support import chat_rows, entry, load, write_data, write_recipe


def small_recipe(tmp_path, comment=""):
    write_data(tmp_path, **{"k.jsonl": chat_rows(4), "eval.jsonl": chat_rows(2)})
    path = write_recipe(tmp_path, [{"name": "k", "datasets": [entry("k.jsonl")]}])
    path.write_text(comment + path.read_text())
    return load(path)


def test_the_fingerprint_covers_recipe_base_and_data_but_not_comments(tmp_path):
    recipe = small_recipe(tmp_path)
    inputs = fingerprint(recipe)
    assert sorted(label.split()[0] for label in inputs) == ["base", "data", "data", "recipe"]
    assert fingerprint(small_recipe(tmp_path, comment="# a comment\n")) == inputs
    journal = Journal.open(recipe.work_dir, recipe, inputs)
    journal.update("k", status="done")
    assert not list(recipe.work_dir.glob(".*tmp*"))  # written atomically, nothing left over
    assert json.loads(journal.path.read_text())["phases"]["k"]["status"] == "done"
    assert Journal.open(recipe.work_dir, recipe, inputs).phase("k")["status"] == "done"

    write_data(tmp_path, **{"k.jsonl": chat_rows(5)})
    with pytest.raises(UsageError) as caught:
        Journal.open(recipe.work_dir, recipe, fingerprint(recipe))
    message = str(caught.value)
    assert f"changed: data {tmp_path / 'k.jsonl'}" in message
    assert (
        "re-run with --restart (the old run folder is moved aside, nothing is deleted)" in message
    )


def test_one_runner_per_work_folder_and_restart_moves_the_old_one_aside(tmp_path):
    work = tmp_path / "run"
    holder = rf"another `axolotl-ual phases` \(pid {os.getpid()}\)"
    with locked(work), pytest.raises(UsageError, match=holder), locked(work):
        pass
    (work / "keep.txt").write_text("results")
    moved = move_aside(work)
    assert not work.exists() and (moved / "keep.txt").read_text() == "results"
    assert moved.name.startswith("run.old-")
    assert move_aside(work) is None


def test_a_training_left_running_by_a_killed_runner_is_seen(tmp_path):
    recipe = small_recipe(tmp_path)
    journal = Journal.open(recipe.work_dir, recipe, fingerprint(recipe))
    sleeper = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    try:
        journal.start_attempt("k", process_group=sleeper.pid)
        with pytest.raises(UsageError) as caught:
            _refuse_if_training(recipe.work_dir)
        assert f"phase 'k' of the run in {recipe.work_dir} is still training" in str(caught.value)
        assert f"kill -- -{sleeper.pid}" in str(caught.value)
    finally:
        os.killpg(sleeper.pid, signal.SIGKILL)
        sleeper.wait()
    time.sleep(0.1)
    _refuse_if_training(recipe.work_dir)  # gone: nothing to refuse
