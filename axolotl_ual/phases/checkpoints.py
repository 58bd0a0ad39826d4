"""The checkpoints a phase left: which are complete, which one it hands on, what it measured.

A Hugging Face checkpoint `checkpoint-N` is complete once its `trainer_state.json` (written
last, after the weights, optimizer and scheduler) parses and says `global_step` N. A folder
without one is what a kill during a save leaves: it is moved aside (never deleted) before the
phase resumes, so that axolotl resumes from the last complete checkpoint.

A phase has finished when its last complete checkpoint has reached the run's `max_steps`
(axolotl exits 0 after a Ctrl-C too, having saved the model, so the exit status alone does not
say it).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError
from .configs import BEST

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
STATE = "trainer_state.json"


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int
    state: dict[str, Any] | None  # None: incomplete

    @property
    def complete(self) -> bool:
        return self.state is not None

    def eval_loss(self) -> float | None:
        """The eval_loss logged at this checkpoint's own step."""
        for record in (self.state or {}).get("log_history", []):
            if record.get("step") == self.step and "eval_loss" in record:
                return float(record["eval_loss"])
        return None


def _state(path: Path, step: int) -> dict[str, Any] | None:
    try:
        state = json.loads((path / STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and state.get("global_step") == step else None


def checkpoints(output_dir: Path) -> list[Checkpoint]:
    """The `checkpoint-N` folders of `output_dir`, by step."""
    found = []
    if Path(output_dir).is_dir():
        for path in Path(output_dir).iterdir():
            match = CHECKPOINT.match(path.name)
            if match and path.is_dir():
                step = int(match.group(1))
                found.append(Checkpoint(path, step, _state(path, step)))
    return sorted(found, key=lambda c: c.step)


def last_complete(output_dir: Path) -> Checkpoint | None:
    done = [c for c in checkpoints(output_dir) if c.complete]
    return done[-1] if done else None


def move_incomplete_aside(output_dir: Path, into: Path) -> list[tuple[Path, Path]]:
    """Move every incomplete checkpoint of `output_dir` into `into`; return (from, to) pairs."""
    moved = []
    for checkpoint in checkpoints(output_dir):
        if checkpoint.complete:
            continue
        into.mkdir(parents=True, exist_ok=True)
        target = into / checkpoint.path.name
        suffix = 1
        while target.exists():
            suffix += 1
            target = into / f"{checkpoint.path.name}.{suffix}"
        os.replace(checkpoint.path, target)
        moved.append((checkpoint.path, target))
    return moved


def finished(output_dir: Path) -> bool:
    last = last_complete(output_dir)
    return bool(last and last.state.get("max_steps") and last.step >= last.state["max_steps"])


@dataclass(frozen=True)
class Choice:
    checkpoint: Checkpoint
    rule: str  # best_eval_loss | last
    reason: str  # for the console and the journal
    candidates: dict[int, float | None]  # step -> eval_loss of every complete checkpoint


def choose(output_dir: Path, rule: str, where: str) -> Choice:
    """The checkpoint the phase hands on: lowest eval_loss (the earliest of equals) or the last."""
    done = [c for c in checkpoints(output_dir) if c.complete]
    if not done:
        raise DataError(f"{where}: no complete checkpoint in {output_dir}")
    losses = {c.step: c.eval_loss() for c in done}
    if rule != BEST:
        return Choice(done[-1], rule, f"last checkpoint, step {done[-1].step}", losses)
    missing = [step for step, loss in losses.items() if loss is None]
    if missing:
        raise DataError(
            f"{where}: checkpoint: best_eval_loss, but checkpoint(s) at step(s) {missing} have "
            f"no eval_loss logged at their step in {STATE}; evaluate at every save (remove "
            "eval_steps / evals_per_epoch / eval_strategy and let the runner set them)"
        )
    best = min(done, key=lambda c: (losses[c.step], c.step))
    return Choice(
        best,
        rule,
        f"lowest eval_loss {losses[best.step]:.6g} of {len(done)} checkpoint(s)",
        losses,
    )


def metrics(output_dir: Path) -> dict[str, Any]:
    """What the phase's last complete checkpoint logged: steps, losses, eval losses by step."""
    last = last_complete(output_dir)
    history = (last.state if last else {}).get("log_history", [])
    train = [r for r in history if "loss" in r and "eval_loss" not in r]
    return {
        "global_step": last.step if last else 0,
        "max_steps": (last.state or {}).get("max_steps") if last else None,
        "train_loss_first": train[0]["loss"] if train else None,
        "train_loss_last": train[-1]["loss"] if train else None,
        "eval_loss_by_step": {str(r["step"]): r["eval_loss"] for r in history if "eval_loss" in r},
    }
