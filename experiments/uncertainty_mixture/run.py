"""Run the uncertainty-mixture experiment end to end: data, judge, every arm and seed, report.

    python -m experiments.uncertainty_mixture.run            # 4 arms x 3 seeds + judge, CPU
    python -m experiments.uncertainty_mixture.run --smoke    # 1 seed, 2 arms, a few steps (CI)

Every training run is the real `axolotl train` in a subprocess on a generated config (kept in
the work folder, runnable on its own). The elicited arm's uncertainties come from
`axolotl-ual elicit --backend hf --method entropy` with the judge model: the same base model
first fitted with plain SFT on a separate split of the task mixture (no capable LLM is available
offline; see experiments/README.md). Each trained model is then evaluated in this process
(`experiments/harness/evaluate.py`, token level and generated answers) and the results are
aggregated over seeds (`report.py`).

Reproducible by construction: seeded data, `seed:` and `dataset_num_proc: 1` in every config,
one CPU thread per process (so float reductions do not depend on the core count), the GPU
hidden, evaluation batched in a fixed order and generation sampled from seeded generators of
its own. Runs overlap in `--jobs` processes; that changes only the wall time.
"""

from __future__ import annotations

import json
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from axolotl_ual.toolkit import console_script, read_jsonl

from ..harness import runner
from ..harness.runner import Arm
from . import prepare, report
from .prepare import ARMS, JUDGE

JUDGE_SEED = 1000
SMOKE = {
    "max_steps": 40,
    "per_task_scale": 0.2,
    "seeds": [0],
    "arms": ["ual_known", "ual_elicited"],
}


class Experiment(runner.TruthExperiment):
    name = "uncertainty_mixture"
    arms = ARMS
    smoke = SMOKE
    setup = prepare
    reporting = report
    marker = ".uncertainty-mixture-workdir"

    def splits(self) -> list:
        return [*self.seeds, "judge"] if self.needs_judge else list(self.seeds)

    @property
    def needs_judge(self) -> bool:
        return any(arm.data == "elicited" for arm in self.arm_list)

    def elicited_file(self, seed) -> Path:
        return self.data / f"train-{seed}.elicited.jsonl"

    def elicit(self, seed: int, judge_dir: Path) -> Path:
        out = self.elicited_file(seed)
        runner.run_logged(
            [
                console_script("axolotl-ual"),
                "elicit",
                str(self.train_file(seed)),
                "--output",
                str(out),
                "--backend",
                "hf",
                "--method",
                "entropy",
                "--model",
                str(judge_dir / "model"),
                "--device",
                "cpu",
                "--dtype",
                "float32",
                "--batch-size",
                "32",
                "--no-progress",
            ],
            self.data / f"elicit-{seed}.log",
            self.data,
            self.log,
        )
        return out

    def arm_job(self, arm: Arm, seed: int, judge: Future | None) -> dict:
        train_file = self.train_file(seed)
        if arm.data == "elicited":
            train_file = self.elicit(seed, judge.result())
        run_dir = self.train(arm, seed, train_file)
        metrics = self.evaluate(arm, seed, run_dir, train_file)
        if arm.data == "elicited":
            metrics["elicitation"] = report.elicitation_summary(read_jsonl(train_file))
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
        return metrics

    def run(self, jobs: int) -> list[dict]:
        """Train and evaluate every arm x seed; the judge first, elicited arms last."""
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            judge = (
                pool.submit(self.train, JUDGE, JUDGE_SEED, self.train_file("judge"))
                if self.needs_judge
                else None
            )
            # elicited arms wait for the judge, so they are queued after everything else
            order = sorted(
                ((arm, seed) for seed in self.seeds for arm in self.arm_list),
                key=lambda item: item[0].data == "elicited",
            )
            futures = [pool.submit(self.arm_job, arm, seed, judge) for arm, seed in order]
            return runner.gather(futures, [judge] if judge else [])


def main(argv: list[str] | None = None) -> int:
    return runner.main(Experiment, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
