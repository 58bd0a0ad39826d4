"""Which checkpoints are complete, which one a phase hands on, when a phase has finished."""

from __future__ import annotations

import json

import pytest

from axolotl_ual.errors import DataError
from axolotl_ual.phases import checkpoints as ckpt


def save(output, step, evals=None, max_steps=6, state=True):
    folder = output / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights")
    if state:
        history = [{"step": s, "eval_loss": v} for s, v in (evals or {}).items()]
        history.insert(0, {"step": 1, "loss": 9.0})
        (folder / "trainer_state.json").write_text(
            json.dumps({"global_step": step, "max_steps": max_steps, "log_history": history})
        )
    return folder


def test_complete_checkpoints_and_the_moving_aside_of_the_others(tmp_path):
    out = tmp_path / "output"
    save(out, 2, {2: 1.5})
    save(out, 4, state=False)  # killed while saving: no trainer_state.json
    bad = save(out, 6, state=False)
    (bad / "trainer_state.json").write_text('{"global_st')  # killed while writing it
    (out / "checkpoint-x").mkdir()
    assert [(c.step, c.complete) for c in ckpt.checkpoints(out)] == [
        (2, True),
        (4, False),
        (6, False),
    ]
    moved = ckpt.move_incomplete_aside(out, tmp_path / "aside")
    assert [(a.name, b.name) for a, b in moved] == [
        ("checkpoint-4", "checkpoint-4"),
        ("checkpoint-6", "checkpoint-6"),
    ]
    assert (tmp_path / "aside" / "checkpoint-6" / "model.safetensors").read_bytes() == b"weights"
    save(out, 4, state=False)
    ckpt.move_incomplete_aside(out, tmp_path / "aside")
    assert (tmp_path / "aside" / "checkpoint-4.2").is_dir()  # nothing is overwritten
    assert ckpt.last_complete(out).step == 2 and not ckpt.finished(out)


def test_choice_by_lowest_eval_loss_or_the_last(tmp_path):
    out = tmp_path / "output"
    evals = {0: 2.0, 2: 1.4, 4: 1.2, 6: 1.2}
    for step in (2, 4, 6):
        save(out, step, {s: v for s, v in evals.items() if s <= step})
    best = ckpt.choose(out, "best_eval_loss", "phase 'p'")
    assert best.checkpoint.step == 4  # the earliest of equals
    assert best.candidates == {2: 1.4, 4: 1.2, 6: 1.2}
    assert best.reason == "lowest eval_loss 1.2 of 3 checkpoint(s)"
    assert ckpt.choose(out, "last", "phase 'p'").checkpoint.step == 6
    assert ckpt.finished(out)
    metrics = ckpt.metrics(out)
    assert metrics["global_step"] == 6 and metrics["eval_loss_by_step"]["0"] == 2.0


def test_a_checkpoint_without_its_eval_loss_is_an_error(tmp_path):
    out = tmp_path / "output"
    save(out, 2, {1: 1.0})
    with pytest.raises(DataError, match=r"phase 'p': checkpoint: best_eval_loss, but checkpoint"):
        ckpt.choose(out, "best_eval_loss", "phase 'p'")
    with pytest.raises(DataError, match="no complete checkpoint"):
        ckpt.choose(tmp_path / "none", "last", "phase 'p'")
