"""Run the Instruction Modelling experiment end to end: data, every arm and seed, report.

    python -m experiments.instruction_modelling.run            # 3 arms x 3 seeds, CPU
    python -m experiments.instruction_modelling.run --smoke    # 1 seed, 2 arms, a few steps (CI)

SFT against Instruction Modelling (the loss over the instruction tokens too, through the
plugin's `ual_instruction_weight` with axolotl's `train_on_inputs`) and IM with label-smoothed
instruction tokens, on long structured instructions with short answers and few training rows
(`tasks.py`). Every training run is the real `axolotl train` in a subprocess on a generated
config (kept in the work folder, runnable on its own); each trained model is evaluated on the
held-out RESPONSES in this process (`experiments/harness/evaluate.py`: token level and
generated answers) and the results are aggregated over seeds (`report.py`).

Reproducible like the uncertainty mixture: seeded data, `seed:` and `dataset_num_proc: 1` in
every config, one CPU thread per process, the GPU hidden, evaluation batched in a fixed order
and generation sampled from seeded generators of its own. `--jobs` changes only the wall time.
"""

from __future__ import annotations

import sys

from ..harness import runner
from . import prepare, report
from .prepare import ARMS

SMOKE = {"max_steps": 40, "per_task_scale": 0.2, "seeds": [0], "arms": ["sft", "im_smooth"]}


class Experiment(runner.TruthExperiment):
    name = "instruction_modelling"
    arms = ARMS
    smoke = SMOKE
    setup = prepare
    reporting = report


def main(argv: list[str] | None = None) -> int:
    return runner.main(Experiment, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
