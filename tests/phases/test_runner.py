"""What the console shows of a growing `axolotl train` log; the environment `axolotl train`
gets."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

from axolotl_ual.phases.runner import Console, LogFollower


def test_losses_are_shown_with_their_step_counted_from_the_resumed_one(tmp_path):
    log = tmp_path / "train.log"
    log.write_text("loading...\n")
    out = io.StringIO()
    follower = LogFollower(
        log, log.stat().st_size, Console(out, out), first_step=2, logging_steps=1, max_steps=4
    )
    with open(log, "a") as handle:
        handle.write(" 50%|#####     | 2/4 [00:01<00:01]\r")
        handle.write("{'loss': '1.5', 'learning_rate': '2e-05', 'epoch': '0.5'}\n")
        handle.write("{'eval_loss': '1.25', 'epoch': '0.5'}\n{'loss': '1.")  # a line half-written
    follower.pump()
    with open(log, "a") as handle:
        handle.write("4', 'epoch': '1.0'}\n{'train_runtime': '3.0', 'train_loss': '1.45'}\n")
    follower.pump(final=True)
    assert out.getvalue().splitlines() == [
        "    step 3/4: loss 1.5, learning_rate 2e-05, epoch 0.5",
        "    step 3/4: eval_loss 1.25, epoch 0.5",
        "    step 4/4: loss 1.4, epoch 1",
    ]


def test_axolotl_train_gets_the_users_environment(tmp_path, monkeypatch):
    """A user's real run downloads its base model and logs to W&B as their environment says:
    the runner adds only what finds the right executables and code (tests are offline because
    their own environment says so, not because the runner forces it)."""
    from axolotl_ual.phases import runner
    from axolotl_ual.phases.journal import Journal, fingerprint
    from axolotl_ual.toolkit import REPO
    from tests.phases.support import chat_rows, entry, load, write_data, write_recipe

    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "AXOLOTL_DO_NOT_TRACK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("PYTHONPATH", "/the/users/path")
    write_data(tmp_path, **{"k.jsonl": chat_rows(4), "eval.jsonl": chat_rows(2)})
    recipe = load(write_recipe(tmp_path, [{"name": "k", "datasets": [entry("k.jsonl")]}]))
    journal = Journal.open(recipe.work_dir, recipe, fingerprint(recipe))
    seen = {}

    def popen(argv, *, env, **kwargs):
        seen.update(env)
        raise OSError("not starting anything in this test")

    monkeypatch.setattr(runner.subprocess, "Popen", popen)
    out = io.StringIO()
    code = runner.Runner(recipe, journal, Console(out, out), verbose=False).run()
    assert code == runner.ExitCode.STOPPED and "cannot start" in out.getvalue()
    assert "HF_HUB_OFFLINE" not in seen and "HF_DATASETS_OFFLINE" not in seen
    assert "AXOLOTL_DO_NOT_TRACK" not in seen
    assert seen["WANDB_MODE"] == "online"
    assert seen["PYTHONPATH"].split(os.pathsep) == [str(REPO), "/the/users/path"]
    assert seen["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
