"""Run the point-wise preference experiment end to end: data, base model, arms x seeds, report.

    python -m experiments.pointwise_preference.run           # 4 arms x 3 seeds, CPU
    python -m experiments.pointwise_preference.run --smoke   # 1 seed, ULMA and KTO, few steps (CI)

Every training run is the real `axolotl train` (`--launcher python`: one process, whose peak
resident memory is the run's) on a generated config kept in the work folder. First the base
model is pretrained once; then every arm trains a LoRA adapter on it for every seed. Each
adapter is evaluated in this process (`evaluate.py`), and the runs are aggregated (`report.py`).

The likelihood metrics are reproducible (seeded data, `seed:` and `dataset_num_proc: 1` in
every config, one CPU thread per process, the GPU hidden); time and memory are measurements of
this machine at the time of the run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from axolotl_ual.toolkit import read_jsonl, write_jsonl

from ..harness import runner
from ..harness.report import axolotl_logs
from ..harness.runner import Arm
from . import data, prepare, report
from .prepare import ARMS

SMOKE = {
    "max_steps": 20,
    "base_steps": 40,
    "per_task_scale": 0.2,
    "seeds": [0],
    "arms": ["ulma", "kto"],
}


class Experiment(runner.Experiment):
    name = "pointwise_preference"
    arms = ARMS
    smoke = SMOKE
    marker = ".pointwise-preference-workdir"

    def __init__(self, *args, base_steps: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.base_steps = base_steps
        self.init = self.workdir / "init-model"
        self.base_dir = self.runs / "base"
        self.base = self.base_dir / "model"  # the reference model of every arm

    @classmethod
    def add_options(cls, p) -> None:
        p.add_argument("--base-steps", type=int, default=None, help="override the base's steps")

    @classmethod
    def from_args(cls, args, scale: float) -> Experiment:
        return cls(
            args.workdir.resolve(),
            args.seeds,
            args.arms,
            args.max_steps,
            scale,
            base_steps=args.base_steps,
        )

    def _scaled(self, per_task: dict[str, int]) -> dict[str, int]:
        return runner.scaled(per_task, self.scale, minimum=2)

    def prepare(self) -> None:
        """The data, the random init and the base model pretrained from it."""
        self.reset()
        prepare.build_base_model(self.init)
        test = data.test_prompts(self._scaled(data.TEST_PER_TASK))
        write_jsonl(self.data / "test.jsonl", test)
        pretrain = data.pretrain_rows(test, self._scaled(data.PRETRAIN_PER_TASK))
        write_jsonl(self.data / "pretrain.jsonl", [data.chat_row(r) for r in pretrain])
        for seed in self.seeds:
            rows = data.train_rows(seed, test, self._scaled(data.TRAIN_PER_TASK))
            write_jsonl(self.train_file(seed, "all"), [data.chat_row(r) for r in rows])
            write_jsonl(
                self.train_file(seed, "positives"), [data.chat_row(r) for r in rows if r["label"]]
            )
            write_jsonl(self.train_file(seed, "kto"), [data.kto_row(r) for r in rows])
        cfg = prepare.base_config(
            model=self.init,
            train_file=self.data / "pretrain.jsonl",
            run_dir=self.base_dir,
            max_steps=self.base_steps,
        )
        runner.train(cfg, self.base_dir, self.log, launcher="python")

    def train_file(self, seed: int, kind: str) -> Path:
        return self.data / f"train-{seed}.{kind}.jsonl"

    def job(self, arm: Arm, seed: int) -> dict:
        from .evaluate import evaluate_model

        run_dir = self.runs / f"{arm.name}-seed{seed}"
        train_file = self.train_file(seed, "kto" if prepare.is_kto(arm) else arm.data)
        cfg = prepare.arm_config(
            arm,
            base_model=self.base,
            train_file=train_file,
            run_dir=run_dir,
            seed=seed,
            max_steps=self.max_steps,
        )
        # one process (`--launcher python`): its peak resident memory is the run's
        seconds, peak = runner.train(cfg, run_dir, self.log, launcher="python")
        model = run_dir / "model"
        metrics = evaluate_model(model, self.base, read_jsonl(self.data / "test.jsonl"))
        probe = json.loads((model / "probe.json").read_text())
        metrics.update(
            arm=arm.name,
            seed=seed,
            cost=report.cost(probe, peak, seconds),
            axolotl=axolotl_logs(model),
        )
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
        return metrics

    def settings(self) -> dict:
        return report.settings(
            self.seeds,
            [arm.name for arm in self.arm_list],
            self.max_steps,
            self.base_steps,
            self.scale,
        )

    def report(self, out: Path, results: list[dict], settings: dict) -> str:
        """The results files, with the base model's own metrics (the reference)."""
        from .evaluate import evaluate_model

        base = evaluate_model(self.base, self.base, read_jsonl(self.data / "test.jsonl"))
        return report.write(out, results, base, settings)


def main(argv: list[str] | None = None) -> int:
    return runner.main(Experiment, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
