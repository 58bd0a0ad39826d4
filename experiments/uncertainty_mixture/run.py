"""Run the uncertainty-mixture experiment end to end: data, judge, every arm and seed, report.

    python -m experiments.uncertainty_mixture.run            # 4 arms x 3 seeds + judge, CPU
    python -m experiments.uncertainty_mixture.run --smoke    # 1 seed, 2 arms, a few steps (CI)

Every training run is the real `axolotl train` in a subprocess on a generated config (kept in
the work folder, runnable on its own). The elicited arm's uncertainties come from
`axolotl-ual elicit --backend hf --method entropy` with the judge model: the same base model
first fitted with plain SFT on a separate split of the task mixture (no capable LLM is available
offline; see experiments/README.md). Each trained model is then evaluated in this process
(`evaluate.py`) and the results are aggregated over seeds (`report.py`).

Reproducible by construction: seeded data, `seed:` and `dataset_num_proc: 1` in every config,
one CPU thread per process (so float reductions do not depend on the core count), the GPU
hidden, and evaluation batched in a fixed order. Runs overlap in `--jobs` processes; that
changes only the wall time.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from pathlib import Path

from axolotl_ual.toolkit import console_script, offline_env, read_jsonl, write_jsonl
from experiments import common

from . import prepare, report
from .prepare import ARMS, JUDGE, Arm

HERE = Path(__file__).resolve().parent
MARKER = ".uncertainty-mixture-workdir"
JUDGE_SEED = 1000
SMOKE = {
    "max_steps": 40,
    "per_task_scale": 0.2,
    "seeds": [0],
    "arms": ["ual_known", "ual_elicited"],
}


def subprocess_env() -> dict[str, str]:
    return offline_env(
        TRL_EXPERIMENTAL_SILENCE="1",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        CUDA_VISIBLE_DEVICES="",  # the README's numbers are CPU numbers
    )


class Experiment:
    def __init__(
        self,
        workdir: Path,
        seeds: list[int],
        arms: list[str],
        max_steps: int | None,
        per_task_scale: float,
        log=print,
    ):
        self.workdir = workdir
        self.seeds = seeds
        self.arms = [ARMS[name] for name in arms]
        self.max_steps = max_steps
        self.scale = per_task_scale
        self.log = log
        self.lock = threading.Lock()
        self.data = workdir / "data"
        self.base = workdir / "base-model"
        self.runs = workdir / "runs"

    # ------------------------------------------------------------------ preparation

    def prepare(self) -> None:
        common.reset_workdir(self.workdir, MARKER, "experiments.uncertainty_mixture.run")
        prepare.build_base_model(self.base)
        test = prepare.test_rows(self._scaled(prepare.TEST_PER_TASK))
        write_jsonl(self.data / "test.jsonl", test)
        for seed in self.seeds:
            write_jsonl(
                self.train_file(seed),
                prepare.train_rows(seed, test, self._scaled(prepare.TRAIN_PER_TASK)),
            )
        if self.needs_judge:
            write_jsonl(
                self.train_file("judge"),
                prepare.train_rows("judge", test, self._scaled(prepare.TRAIN_PER_TASK)),
            )

    def _scaled(self, per_task: dict[str, int]) -> dict[str, int]:
        return {task: max(1, round(n * self.scale)) for task, n in per_task.items()}

    @property
    def needs_judge(self) -> bool:
        return any(arm.data == "elicited" for arm in self.arms)

    def train_file(self, seed) -> Path:
        return self.data / f"train-{seed}.jsonl"

    def elicited_file(self, seed) -> Path:
        return self.data / f"train-{seed}.elicited.jsonl"

    # ------------------------------------------------------------------ steps

    def _run(self, argv: list[str], log_file: Path, cwd: Path) -> None:
        started = time.monotonic()
        with open(log_file, "w") as handle:
            result = subprocess.run(
                argv,
                cwd=cwd,
                env=subprocess_env(),
                stdout=handle,
                stderr=subprocess.STDOUT,
                text=True,
                check=False,
            )
        if result.returncode != 0:
            tail = log_file.read_text()[-4000:]
            raise RuntimeError(
                f"`{' '.join(argv)}` failed (exit {result.returncode}); log {log_file}:\n{tail}"
            )
        self.log(f"  {log_file.parent.name}: {argv[1]} done in {time.monotonic() - started:.0f} s")

    def train(self, arm: Arm, seed: int, train_file: Path) -> Path:
        run_dir = self.runs / f"{arm.name}-seed{seed}"
        cfg = prepare.arm_config(
            arm,
            base_model=self.base,
            train_file=train_file,
            test_file=self.data / "test.jsonl",
            run_dir=run_dir,
            seed=seed,
            max_steps=self.max_steps,
        )
        config = prepare.write_config(run_dir / "config.yml", cfg)
        self._run([console_script("axolotl"), "train", str(config)], run_dir / "train.log", run_dir)
        return run_dir

    def elicit(self, seed: int, judge_dir: Path) -> Path:
        out = self.elicited_file(seed)
        self._run(
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
        )
        return out

    def evaluate(self, arm: Arm, seed: int, run_dir: Path, train_file: Path) -> dict:
        from .evaluate import evaluate_model

        metrics = evaluate_model(
            run_dir / "model", read_jsonl(self.data / "test.jsonl"), read_jsonl(train_file)
        )
        metrics["axolotl"] = report.axolotl_logs(run_dir / "model")
        metrics.update(arm=arm.name, seed=seed)
        if arm.data == "elicited":
            metrics["elicitation"] = report.elicitation_summary(read_jsonl(train_file))
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
        return metrics

    def arm_job(self, arm: Arm, seed: int, judge: Future | None) -> dict:
        train_file = self.train_file(seed)
        if arm.data == "elicited":
            train_file = self.elicit(seed, judge.result())
        run_dir = self.train(arm, seed, train_file)
        return self.evaluate(arm, seed, run_dir, train_file)

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
                ((arm, seed) for seed in self.seeds for arm in self.arms),
                key=lambda item: item[0].data == "elicited",
            )
            futures = [pool.submit(self.arm_job, arm, seed, judge) for arm, seed in order]
            done, _ = wait(futures + ([judge] if judge else []), return_when=FIRST_EXCEPTION)
            for future in done:
                if future.exception() is not None:
                    for other in futures:
                        other.cancel()
                    raise future.exception()
            return [f.result() for f in futures]


def main(argv: list[str] | None = None) -> int:
    args = common.parser(__doc__, arms=list(ARMS), here=HERE, smoke=SMOKE).parse_args(argv)
    scale = common.apply_smoke(args, argv, SMOKE)

    import torch

    torch.set_num_threads(1)
    started = time.monotonic()
    experiment = Experiment(args.workdir.resolve(), args.seeds, args.arms, args.max_steps, scale)
    print(
        f"uncertainty mixture: arms {args.arms}, seeds {args.seeds}, {args.jobs} jobs, "
        f"work folder {experiment.workdir}",
        flush=True,
    )
    experiment.prepare()
    results = experiment.run(args.jobs)
    oracle = report.oracle_metrics(experiment.base, read_jsonl(experiment.data / "test.jsonl"))
    settings = report.settings(args.seeds, args.arms, args.max_steps, scale)
    table = report.write(args.out, results, oracle, settings)
    common.finish(args.out, table, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
