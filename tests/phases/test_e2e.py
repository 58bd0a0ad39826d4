"""`axolotl-ual phases` end to end: the tiny CPU recipe, three real `axolotl train` runs.

One flow checks, on example_configs/lab/tiny_cpu_recipe.yml (phase 1 full fine-tuning, phases
2-3 LoRA):

- chaining: each phase's eval at step 0 (the weights it starts from, on the shared eval split)
  equals the eval_loss the journal recorded for the previous phase's chosen checkpoint, and
  that differs from what the phase before it handed on, so starting from the wrong weights or
  without the adapter would fail;
- replay: the exact row counts, rows drawn from the right files, entries keeping their options;
- kill -9 of the runner while phase 2 waits just after saving checkpoint-2: a re-run refuses
  while the orphaned training lives; once it is dead (and a half-written checkpoint-3 lies
  there), the same command skips phase 1 (one attempt, files untouched), resumes phase 2 from
  checkpoint-2 (its second attempt trains steps 3-4 only) and runs phase 3;
- a re-run after the end redoes nothing; a changed data file is refused.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from axolotl_ual.cli import main as cli
from axolotl_ual.compat import logged_metrics
from axolotl_ual.elicit.io import read_rows
from axolotl_ual.phases import tiny
from axolotl_ual.phases.journal import process_group_alive
from axolotl_ual.toolkit import console_script
from tests.support import REPO, axolotl_env

pytestmark = pytest.mark.e2e

LAB = REPO / "example_configs" / "lab"
HEADER = "===== axolotl-ual phases:"


def copy_lab(folder):
    for name in ("tiny_cpu_recipe.yml", "tiny_cpu_base.yml"):
        shutil.copy(LAB / name, folder / name)
    shutil.copytree(LAB / "data", folder / "data")
    base = yaml.safe_load((folder / "tiny_cpu_base.yml").read_text())
    base["plugins"].append("tests.phases.gate_plugin.GatePlugin")
    (folder / "tiny_cpu_base.yml").write_text(yaml.safe_dump(base, sort_keys=False))
    tiny.build(folder / "tiny-model", folder / "data")
    return folder / "tiny_cpu_recipe.yml"


def wait_for(condition, what, process=None, timeout=900):
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            pytest.fail(f"the run ended (exit {process.returncode}) before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.5)


def journal_of(work):
    return json.loads((work / "journal.json").read_text())["phases"]


def attempts_logged(log):
    """The train losses each attempt's section of a phase's train.log shows."""
    sections = log.read_text(errors="replace").split(HEADER)[1:]
    return [[r["loss"] for r in logged_metrics(s) if "loss" in r] for s in sections]


def phases(recipe, work, capsys):
    code = cli(["phases", str(recipe), "--work-dir", str(work)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_three_phases_chain_replay_and_resume_after_kill(tmp_path, capsys):
    started = time.monotonic()
    recipe = copy_lab(tmp_path)
    work = tmp_path / "run"
    gate = tmp_path / "gate"
    gate.mkdir()

    # 1. the runner, killed with SIGKILL once phase 2 has saved checkpoint-2
    env = axolotl_env()
    env.update(
        PHASES_TEST_GATE=str(gate),
        PHASES_TEST_GATE_PHASE="02-knowledge-long",
        PHASES_TEST_GATE_STEP="2",
    )
    with open(tmp_path / "first-run.txt", "wb") as out:
        first = subprocess.Popen(
            [console_script("axolotl-ual"), "phases", str(recipe), "--work-dir", str(work)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for((gate / "waiting").exists, "phase 2 saved checkpoint-2", first)
    finally:
        first.kill()
        first.wait()
    assert first.returncode == -signal.SIGKILL
    record = journal_of(work)
    assert record["knowledge"]["status"] == "done"
    assert record["knowledge-long"]["status"] == "running"
    pgid = record["knowledge-long"]["attempts"][-1]["process_group"]

    # 2. its `axolotl train` lives on: a re-run refuses to start a second one
    code, _, err = phases(recipe, work, capsys)
    assert code == 2, err
    assert f"phase 'knowledge-long' of the run in {work} is still training" in err
    assert f"kill -- -{pgid}" in err

    # 3. as after a crash: the training is dead and a half-written checkpoint lies there
    os.killpg(pgid, signal.SIGKILL)
    wait_for(lambda: not process_group_alive(pgid), "the killed training to end", timeout=60)
    partial = work / "02-knowledge-long" / "output" / "checkpoint-3"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"half")
    phase1 = work / "01-knowledge"
    before = {p: p.stat().st_mtime_ns for p in phase1.rglob("*") if p.is_file()}

    # 4. the same command finishes the run
    code, out, err = phases(recipe, work, capsys)
    assert code == 0, out + err
    assert "phase 1/3 'knowledge': done in an earlier run" in out
    assert "incomplete checkpoint-3 (killed while saving) moved to" in out
    assert "phase 2/3 'knowledge-long': resumes from its checkpoint-2 (steps 1-2" in out
    assert "step 3/4: loss" in out  # progress is streamed, counted from the resumed step
    record = journal_of(work)
    assert [r["status"] for r in record.values()] == ["done"] * 3

    # nothing finished was redone or lost
    assert len(record["knowledge"]["attempts"]) == 1
    assert {p: p.stat().st_mtime_ns for p in phase1.rglob("*") if p.is_file()} == before
    assert (work / "02-knowledge-long" / "incomplete-checkpoints" / "checkpoint-3").is_dir()
    second = record["knowledge-long"]["attempts"]
    assert len(second) == 2 and second[1]["resumed_from"].endswith("/output/checkpoint-2")
    losses = attempts_logged(work / "02-knowledge-long" / "train.log")
    assert [len(a) for a in losses] == [2, 2]  # steps 1-2, then only 3-4
    state = json.loads(
        (work / "02-knowledge-long/output/checkpoint-4/trainer_state.json").read_text()
    )
    assert [r["step"] for r in state["log_history"] if "loss" in r] == [1, 2, 3, 4]

    # each phase starts from the previous phase's chosen checkpoint
    configs = {name: r["config"] for name, r in record.items()}
    chosen = {name: r["checkpoint"] for name, r in record.items()}
    assert configs["knowledge-long"]["base_model"] == chosen["knowledge"]
    assert "lora_model_dir" not in configs["knowledge-long"]  # a new adapter on phase 1's weights
    assert configs["skills"]["base_model"] == chosen["knowledge"]
    assert configs["skills"]["lora_model_dir"] == chosen["knowledge-long"]
    evals = {name: r["metrics"]["eval_loss_by_step"] for name, r in record.items()}
    for earlier, later in [("knowledge", "knowledge-long"), ("knowledge-long", "skills")]:
        assert evals[later]["0"] == pytest.approx(record[earlier]["eval_loss"], rel=1e-6)
    # ... and each phase changed the model, so a broken chain would show
    assert abs(evals["knowledge"]["0"] - record["knowledge"]["eval_loss"]) > 1e-3
    assert abs(record["knowledge-long"]["eval_loss"] - record["knowledge"]["eval_loss"]) > 1e-3
    # the rule: lowest eval_loss (phases 1-2), the last checkpoint (phase 3)
    for name in ("knowledge", "knowledge-long"):
        by_checkpoint = record[name]["eval_loss_by_checkpoint"]
        assert record[name]["eval_loss"] == min(by_checkpoint.values())
    assert record["skills"]["step"] == 4 and record["skills"]["rule"] == "last"

    # replay: exact counts, drawn from the right files, with the entries' options
    source = {
        name: read_rows(tmp_path / "data" / f"{name}.jsonl")
        for name in ("knowledge_short", "knowledge_long", "foundational_skills")
    }
    replayed = {
        (phase, Path(entry["path"]).name): read_rows(entry["path"])
        for phase in ("knowledge-long", "skills")
        for entry in configs[phase]["datasets"]
        if "/data/replay-" in entry["path"]
    }
    counts = {key: len(rows) for key, rows in replayed.items()}
    assert counts == {
        ("knowledge-long", "replay-knowledge-00-knowledge_short.jsonl"): 6,
        ("skills", "replay-knowledge-00-knowledge_short.jsonl"): 6,
        ("skills", "replay-knowledge-long-00-knowledge_long.jsonl"): 2,
        ("skills", "replay-knowledge-long-01-foundational_skills.jsonl"): 2,
    }
    for (_, name), rows in replayed.items():
        origin = name.rsplit("-", 1)[-1].removesuffix(".jsonl")
        assert all(row in source[origin] for row in rows)
    for entry in configs["skills"]["datasets"]:
        assert (
            entry["type"] == "axolotl_ual.chat_template" and entry["field_messages"] == "messages"
        )
    assert record["skills"]["data"]["replay"][1] == {
        **record["skills"]["data"]["replay"][1],
        "from": "knowledge-long",
        "rows": 4,
        "of": 32,
    }

    # 5. a re-run after the end redoes nothing; a changed data file is refused
    code, out, _ = phases(recipe, work, capsys)
    assert code == 0 and out.count("done in an earlier run") == 3
    assert [len(r["attempts"]) for r in journal_of(work).values()] == [1, 2, 1]
    with open(tmp_path / "data" / "compositional_skills.jsonl", "a") as handle:
        handle.write(json.dumps({"messages": [], "uncertainty": 0.5}) + "\n")
    code, _, err = phases(recipe, work, capsys)
    assert code == 2
    assert f"changed: data {tmp_path / 'data' / 'compositional_skills.jsonl'}" in err
    assert "--restart" in err
    print(f"e2e phases flow: {time.monotonic() - started:.0f} s")
