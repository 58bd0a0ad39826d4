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
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from axolotl_ual.toolkit import console_script, read_jsonl, write_jsonl
from experiments import common
from experiments.harness.report import axolotl_logs
from experiments.harness.runner import subprocess_env

from . import data, prepare, report
from .prepare import ARMS, Arm

HERE = Path(__file__).resolve().parent
MARKER = ".pointwise-preference-workdir"
SMOKE = {
    "max_steps": 20,
    "base_steps": 40,
    "per_task_scale": 0.2,
    "seeds": [0],
    "arms": ["ulma", "kto"],
}


def train_measured(config: Path, log_file: Path) -> tuple[float, float]:
    """`axolotl train config` in one process; its wall time (s) and peak RSS (MiB)."""
    started = time.monotonic()
    with open(log_file, "w") as handle:
        process = subprocess.Popen(
            [console_script("axolotl"), "train", str(config), "--launcher", "python"],
            cwd=config.parent,
            env=subprocess_env(),
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
        # wait4, not wait: it also returns the child's own resource usage (ru_maxrss in KiB)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(
            f"`axolotl train {config}` failed (exit {process.returncode}); log {log_file}:\n"
            + log_file.read_text()[-4000:]
        )
    return time.monotonic() - started, usage.ru_maxrss / 1024


class Experiment:
    def __init__(self, workdir: Path, seeds, arms, max_steps, base_steps, scale, log=print):
        self.workdir = workdir
        self.seeds = seeds
        self.arms = [ARMS[name] for name in arms]
        self.max_steps = max_steps
        self.base_steps = base_steps
        self.scale = scale
        self.log = log
        self.data = workdir / "data"
        self.init = workdir / "init-model"
        self.base_dir = workdir / "runs" / "base"

    @property
    def base(self) -> Path:
        return self.base_dir / "model"

    def _scaled(self, per_task: dict[str, int]) -> dict[str, int]:
        return {task: max(2, round(n * self.scale)) for task, n in per_task.items()}

    def prepare(self) -> None:
        common.reset_workdir(self.workdir, MARKER, "experiments.pointwise_preference.run")
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

    def train_file(self, seed: int, kind: str) -> Path:
        return self.data / f"train-{seed}.{kind}.jsonl"

    def pretrain_base(self) -> None:
        cfg = prepare.base_config(
            model=self.init,
            train_file=self.data / "pretrain.jsonl",
            run_dir=self.base_dir,
            max_steps=self.base_steps,
        )
        config = prepare.write_config(self.base_dir / "config.yml", cfg)
        seconds, _ = train_measured(config, self.base_dir / "train.log")
        self.log(f"  base model pretrained in {seconds:.0f} s")

    def arm_job(self, arm: Arm, seed: int) -> dict:
        from .evaluate import evaluate_model

        run_dir = self.workdir / "runs" / f"{arm.name}-seed{seed}"
        train_file = self.train_file(seed, "kto" if arm.path == "kto" else arm.rows)
        cfg = prepare.arm_config(
            arm,
            base_model=self.base,
            train_file=train_file,
            run_dir=run_dir,
            seed=seed,
            max_steps=self.max_steps,
        )
        config = prepare.write_config(run_dir / "config.yml", cfg)
        seconds, peak = train_measured(config, run_dir / "train.log")
        self.log(f"  {run_dir.name}: trained in {seconds:.0f} s")
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

    def run(self, jobs: int) -> list[dict]:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = [
                pool.submit(self.arm_job, arm, seed) for seed in self.seeds for arm in self.arms
            ]
            try:
                return [f.result() for f in futures]
            except BaseException:
                for future in futures:
                    future.cancel()
                raise


def main(argv: list[str] | None = None) -> int:
    parser = common.parser(__doc__, arms=list(ARMS), here=HERE, smoke=SMOKE)
    parser.add_argument("--base-steps", type=int, default=None, help="override the base's steps")
    args = parser.parse_args(argv)
    scale = common.apply_smoke(args, argv, SMOKE)
    if args.smoke:
        args.base_steps = args.base_steps or SMOKE["base_steps"]

    import torch

    torch.set_num_threads(1)
    started = time.monotonic()
    experiment = Experiment(
        args.workdir.resolve(), args.seeds, args.arms, args.max_steps, args.base_steps, scale
    )
    print(
        f"point-wise preference: arms {args.arms}, seeds {args.seeds}, {args.jobs} jobs, "
        f"work folder {experiment.workdir}",
        flush=True,
    )
    experiment.prepare()
    experiment.pretrain_base()
    results = experiment.run(args.jobs)

    from .evaluate import evaluate_model

    base = evaluate_model(
        experiment.base, experiment.base, read_jsonl(experiment.data / "test.jsonl")
    )
    settings = report.settings(args.seeds, args.arms, args.max_steps, args.base_steps, scale)
    table = report.write(args.out, results, base, settings)
    common.finish(args.out, table, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
