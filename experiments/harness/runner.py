"""Running an experiment: its work folder, arms and configs, `axolotl train` in subprocesses
(timed, with their peak memory), parallel runs and the command line every experiment shares.

Reproducible by construction: `seed:` and `dataset_num_proc: 1` in every config, one CPU
thread per process (so float reductions do not depend on the core count), the GPU hidden.
Runs overlap in `--jobs` processes; that changes only the wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

import yaml

from axolotl_ual.toolkit import console_script, offline_env

from .truth import training_split


@dataclass(frozen=True)
class Arm:
    """A training arm: its name, the axolotl / ual_* keys it sets, and which data it trains on."""

    name: str
    label: str
    keys: dict
    # which training rows the experiment feeds it, e.g. "known" / "elicited" (the judge's u) in
    # the uncertainty mixture, "positives" / "all" in the point-wise preference experiment
    data: str = "known"


def subprocess_env() -> dict[str, str]:
    return offline_env(
        TRL_EXPERIMENTAL_SILENCE="1",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        CUDA_VISIBLE_DEVICES="",  # the README's numbers are CPU numbers
    )


def reset_workdir(workdir: Path, marker: str, owner: str) -> None:
    """Empty `workdir` for a new run; refuse a folder without this experiment's `marker` file."""
    if workdir.exists():
        if not (workdir / marker).exists():
            raise SystemExit(
                f"{workdir} exists and was not made by this experiment: pick another --workdir"
            )
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    (workdir / marker).write_text(f"made by {owner}\n")


def arm_config(
    template: Path,
    arm: Arm,
    *,
    base_model: Path,
    train_file: Path,
    test_file: Path,
    run_dir: Path,
    seed: int,
    max_steps: int | None = None,
) -> dict:
    """The axolotl config of one arm and seed: the template plus the arm's keys."""
    cfg = yaml.safe_load(template.read_text())
    cfg.update(arm.keys)
    cfg["base_model"] = str(base_model)
    cfg["datasets"][0]["path"] = str(train_file)
    cfg["test_datasets"][0]["path"] = str(test_file)
    cfg["dataset_prepared_path"] = str(run_dir / "prepared")
    cfg["output_dir"] = str(run_dir / "model")
    cfg["seed"] = seed
    if max_steps is not None:
        cfg["max_steps"] = max_steps
    steps = cfg["max_steps"]
    # evaluate (the plugin's eval metrics) and keep trainer_state.json once, at the end
    cfg["eval_steps"] = steps
    cfg["save_steps"] = steps
    return cfg


def write_config(path: Path, cfg: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


class Usage(NamedTuple):
    """What a subprocess took: its wall time and its own peak resident memory."""

    seconds: float
    peak_rss_mib: float


def run_logged(argv: list[str], log_file: Path, cwd: Path, log=print) -> Usage:
    """Run `argv` with its output in `log_file`; its tail in the error if it fails."""
    started = time.monotonic()
    with open(log_file, "w") as handle:
        process = subprocess.Popen(
            argv, cwd=cwd, env=subprocess_env(), stdout=handle, stderr=subprocess.STDOUT
        )
        # wait4, not wait: it also returns the child's own resource usage (ru_maxrss in KiB)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.monotonic() - started
    if process.returncode != 0:
        tail = log_file.read_text()[-4000:]
        raise RuntimeError(
            f"`{' '.join(argv)}` failed (exit {process.returncode}); log {log_file}:\n{tail}"
        )
    log(f"  {log_file.parent.name}: {argv[1]} done in {seconds:.0f} s")
    return Usage(seconds, usage.ru_maxrss / 1024)


def train(cfg: dict, run_dir: Path, log=print, launcher: str | None = None) -> Usage:
    """`axolotl train` on `cfg` (written to run_dir/config.yml, runnable on its own). With
    `launcher="python"` training runs in that one process, so its peak memory is the run's."""
    config = write_config(run_dir / "config.yml", cfg)
    argv = [console_script("axolotl"), "train", str(config)]
    if launcher is not None:
        argv += ["--launcher", launcher]
    return run_logged(argv, run_dir / "train.log", run_dir, log)


def gather(futures: list[Future], also: list[Future] = ()) -> list:
    """The results of `futures`, in order; the first failure (of them or of `also`) cancels
    what has not started and is raised."""
    done, _ = wait([*futures, *also], return_when=FIRST_EXCEPTION)
    for future in done:
        if future.exception() is not None:
            for other in futures:
                other.cancel()
            raise future.exception()
    return [f.result() for f in futures]


def parser(doc: str, arms: list[str], results: Path, workdir: Path, smoke: dict):
    """The command line of an experiment's `run` module."""
    p = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--arms", nargs="+", choices=arms, default=arms)
    p.add_argument(
        "--out",
        type=Path,
        default=results,
        help="where results.md, results.json and results.png go",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=workdir,
        help="data, configs, models and logs (emptied first)",
    )
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel (1 thread each)")
    p.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="override the arms' max_steps (changes the results)",
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help=f"CI version: {smoke} (where the command line says otherwise, it wins)",
    )
    return p


def parse(p: argparse.ArgumentParser, argv: list[str] | None, smoke: dict) -> tuple:
    """(args, split scale): with --smoke, the smoke settings where the command line has none
    (`seeds`, `arms`, `per_task_scale`, and any other option of `smoke` left unset, such as
    `max_steps`)."""
    args = p.parse_args(argv)
    if not args.smoke:
        return args, 1.0
    given = set(argv if argv is not None else sys.argv[1:])
    args.seeds = args.seeds if "--seeds" in given else smoke["seeds"]
    args.arms = args.arms if "--arms" in given else smoke["arms"]
    for option, value in smoke.items():
        if option not in ("seeds", "arms", "per_task_scale") and getattr(args, option) is None:
            setattr(args, option, value)
    return args, smoke["per_task_scale"]


def scaled(per_task: dict[str, int], scale: float, minimum: int = 1) -> dict[str, int]:
    """Rows per task at `scale` (--smoke), at least `minimum` each."""
    return {task: max(minimum, round(n * scale)) for task, n in per_task.items()}


class Experiment:
    """Arms x seeds, each an `axolotl train` run evaluated in this process, and the command that
    runs them all (`main`).

    A subclass names its module under experiments/ (`name`), its `arms`, `smoke` settings and
    work folder `marker`, and says how to `prepare` the work folder (data, base model), what one
    arm and seed's `job` is (train, evaluate: its metrics), what results.json records of the
    command (`settings`) and how to `report` the runs.
    """

    name: str
    arms: dict[str, Arm]
    smoke: dict
    marker = ".experiment-workdir"  # the file that marks a work folder as this experiment's

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
        self.arm_list = [self.arms[name] for name in arms]
        self.max_steps = max_steps
        self.scale = per_task_scale
        self.log = log
        self.data = workdir / "data"
        self.runs = workdir / "runs"

    # ------------------------------------------------------------------ the command line

    @classmethod
    def add_options(cls, p: argparse.ArgumentParser) -> None:
        """Options of this experiment beyond the shared ones (`parser`)."""

    @classmethod
    def from_args(cls, args: argparse.Namespace, scale: float) -> Experiment:
        return cls(args.workdir.resolve(), args.seeds, args.arms, args.max_steps, scale)

    # ------------------------------------------------------------------ the steps

    def reset(self) -> None:
        """An empty work folder, marked as this experiment's."""
        reset_workdir(self.workdir, self.marker, f"experiments.{self.name}.run")

    def prepare(self) -> None:
        raise NotImplementedError

    def job(self, arm: Arm, seed: int) -> dict:
        raise NotImplementedError

    def run(self, jobs: int) -> list[dict]:
        """Train and evaluate every arm x seed, `jobs` at a time."""
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            return gather(
                [pool.submit(self.job, arm, seed) for seed in self.seeds for arm in self.arm_list]
            )

    def settings(self) -> dict:
        raise NotImplementedError

    def report(self, out: Path, results: list[dict], settings: dict) -> str:
        """Write the results files; returns the markdown."""
        raise NotImplementedError


class TruthExperiment(Experiment):
    """An experiment on prompts whose response distribution is known (`truth.py`): every arm
    trains a shared base model from a config template, and is evaluated against the truth
    (`evaluate.py`, token level and generated answers). The uncertainty mixture and Instruction
    Modelling.

    A subclass also names its `setup` module (TEMPLATE, TRAIN_PER_TASK, TEST_PER_TASK, MODEL,
    H_MAX, make_split, build_base_model) and its `reporting` module (`write`).
    """

    setup: ModuleType
    reporting: ModuleType

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.base = self.workdir / "base-model"

    # ------------------------------------------------------------------ preparation

    @classmethod
    def test_rows(cls, scale: float = 1.0) -> list[dict]:
        """The held-out split, the same for every seed."""
        return cls.setup.make_split("test", scaled(cls.setup.TEST_PER_TASK, scale))

    @classmethod
    def train_rows(cls, split, held_out: list[dict], scale: float = 1.0) -> list[dict]:
        """The training split `split` (a seed, or another name such as the uncertainty
        mixture's "judge"), no prompt of `held_out` among them."""
        per_task = scaled(cls.setup.TRAIN_PER_TASK, scale)
        return training_split(cls.setup.make_split, split, held_out, per_task)

    def splits(self) -> list:
        """The training splits to write: one per seed."""
        return list(self.seeds)

    def prepare(self) -> None:
        """An empty work folder, the base model, the test split and every training split."""
        from axolotl_ual.toolkit import write_jsonl

        self.reset()
        self.setup.build_base_model(self.base)
        test = self.test_rows(self.scale)
        write_jsonl(self.test_file, test)
        for split in self.splits():
            write_jsonl(self.train_file(split), self.train_rows(split, test, self.scale))

    def train_file(self, seed) -> Path:
        return self.data / f"train-{seed}.jsonl"

    @property
    def test_file(self) -> Path:
        return self.data / "test.jsonl"

    # ------------------------------------------------------------------ runs

    def train(self, arm: Arm, seed: int, train_file: Path) -> Path:
        run_dir = self.runs / f"{arm.name}-seed{seed}"
        cfg = arm_config(
            self.setup.TEMPLATE,
            arm,
            base_model=self.base,
            train_file=train_file,
            test_file=self.test_file,
            run_dir=run_dir,
            seed=seed,
            max_steps=self.max_steps,
        )
        train(cfg, run_dir, self.log)
        return run_dir

    def evaluate(self, arm: Arm, seed: int, run_dir: Path, train_file: Path) -> dict:
        """Every metric of the run's model (`harness.evaluate`) and what axolotl logged."""
        from axolotl_ual.toolkit import read_jsonl

        from .evaluate import evaluate_model
        from .report import axolotl_logs

        metrics = evaluate_model(
            run_dir / "model", read_jsonl(self.test_file), read_jsonl(train_file)
        )
        metrics["axolotl"] = axolotl_logs(run_dir / "model")
        metrics.update(arm=arm.name, seed=seed)
        return metrics

    def job(self, arm: Arm, seed: int) -> dict:
        """Train, evaluate, and run_dir/metrics.json with every metric."""
        run_dir = self.train(arm, seed, self.train_file(seed))
        metrics = self.evaluate(arm, seed, run_dir, self.train_file(seed))
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
        return metrics

    # ------------------------------------------------------------------ results

    def settings(self) -> dict:
        from .report import run_settings

        return run_settings(
            self.setup.TEMPLATE,
            {arm.name: arm.keys for arm in self.arm_list},
            self.seeds,
            self.max_steps,
            self.scale,
            train_rows_per_task=self.setup.TRAIN_PER_TASK,
            test_rows_per_task=self.setup.TEST_PER_TASK,
            model=self.setup.MODEL,
            H_MAX=self.setup.H_MAX,
        )

    def report(self, out: Path, results: list[dict], settings: dict) -> str:
        """The results files, with the truth's own metrics."""
        from axolotl_ual.toolkit import read_jsonl

        from .evaluate import oracle_metrics

        oracle = oracle_metrics(self.base, read_jsonl(self.test_file))
        return self.reporting.write(out, results, oracle, settings)


def main(cls: type[Experiment], doc: str, argv: list[str] | None) -> int:
    """An experiment's command: parse, prepare, run, report, print the tables and the time."""
    here = Path(sys.modules[cls.__module__].__file__).resolve().parent
    p = parser(doc, list(cls.arms), here / "results", here / "work", cls.smoke)
    cls.add_options(p)
    args, scale = parse(p, argv, cls.smoke)

    import torch

    torch.set_num_threads(1)
    started = time.monotonic()
    experiment = cls.from_args(args, scale)
    print(
        f"{cls.name.replace('_', ' ')}: arms {args.arms}, seeds {args.seeds}, {args.jobs} jobs, "
        f"work folder {experiment.workdir}",
        flush=True,
    )
    experiment.prepare()
    results = experiment.run(args.jobs)
    table = experiment.report(args.out, results, experiment.settings())
    elapsed = time.monotonic() - started
    print(table)
    print(
        f"\nwrote {args.out}/results.md, results.json, results.png; "
        f"elapsed {elapsed / 60:.1f} min ({elapsed:.0f} s)"
    )
    return 0
