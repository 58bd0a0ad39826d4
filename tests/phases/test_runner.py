"""What the console shows of a growing `axolotl train` log."""

from __future__ import annotations

import io

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
