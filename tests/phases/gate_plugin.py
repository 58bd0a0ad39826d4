"""A test plugin that holds `axolotl train` right after it saved a chosen checkpoint.

With PHASES_TEST_GATE=<folder>, PHASES_TEST_GATE_PHASE=<text in output_dir> and
PHASES_TEST_GATE_STEP=<step> in the environment, the run whose output_dir contains that text
writes <folder>/waiting once checkpoint-<step> is complete and then waits forever, so that a
test can kill it at a known point however slow the machine is. Without them it does nothing.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from axolotl.integrations.base import BasePlugin
from transformers import TrainerCallback


class _Gate(TrainerCallback):
    def __init__(self, folder: Path, phase: str, step: int):
        self.folder, self.phase, self.step = folder, phase, step

    def on_save(self, args, state, control, **kwargs):
        if self.phase in str(args.output_dir) and state.global_step == self.step:
            (self.folder / "waiting").write_text(str(os.getpid()))
            while True:
                time.sleep(1)


class GatePlugin(BasePlugin):
    def add_callbacks_pre_trainer(self, cfg, model):
        folder = os.environ.get("PHASES_TEST_GATE")
        if not folder:
            return []
        phase, step = os.environ["PHASES_TEST_GATE_PHASE"], int(os.environ["PHASES_TEST_GATE_STEP"])
        return [_Gate(Path(folder), phase, step)]
