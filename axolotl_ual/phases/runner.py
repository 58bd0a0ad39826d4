"""Runs a recipe's phases, one `axolotl train` subprocess each, and keeps the journal.

Before any training: the recipe is checked, every phase's data is worked out (replay counts,
uncertainty buckets; errors here stop the run before anything trains) and the inputs'
fingerprint is compared with the journal's. Then, for each phase in order:

- done earlier (journal): skipped, its chosen checkpoint handed on;
- otherwise: its config is written to `<work>/<NN-name>/config.yml`, incomplete checkpoints
  are moved aside, and `axolotl train config.yml` runs (resuming from the last complete
  checkpoint if one is there), its whole output going to `train.log` while the console shows
  the losses; when it has reached its last step, a checkpoint is chosen (lowest eval_loss or
  the last) and the journal records the phase as done.

The `axolotl train` runs in its own process group, recorded in the journal: Ctrl-C / SIGTERM
stop it (SIGINT, then SIGKILL after a grace period) and mark the phase interrupted; a re-run
that finds the group of an earlier, killed runner still alive refuses to start a second one.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import yaml

from ..compat import PROGRESS_BAR, logged_metrics
from ..elicit.io import atomic_path
from ..errors import DataError, ExitCode, UsageError
from ..toolkit import child_env, console_script
from . import checkpoints as ckpt
from .configs import phase_config
from .data import DataPlanner, PhaseData
from .journal import Journal, file_digest, fingerprint, locked, move_aside
from .recipe import PhasePlan, Recipe, load_recipe

GRACE_SECONDS = 60  # after Ctrl-C, how long `axolotl train` may take to stop before SIGKILL
PROGRESS_SECONDS = 20  # how often the console repeats axolotl's progress bar
SHOWN = ("loss", "eval_loss", "learning_rate", "grad_norm", "epoch", "ual_epsilon_mean")


class Console:
    """Progress to stdout, problems to stderr (the streams of the moment, unless given)."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None):
        self.out, self.err = out, err

    def say(self, text: str = "") -> None:
        print(text, file=self.out or sys.stdout, flush=True)

    def error(self, text: str) -> None:
        print(text, file=self.err or sys.stderr, flush=True)


def main(args) -> int:
    console = Console()
    try:
        return run_recipe(
            args.recipe,
            work_dir=args.work_dir,
            restart=args.restart,
            dry_run=args.dry_run,
            verbose=args.verbose,
            console=console,
        )
    except (UsageError, DataError) as exc:
        console.error(f"error: {exc}")
        return ExitCode.USAGE
    except KeyboardInterrupt:  # before or between trainings: nothing is running
        console.error("interrupted; re-run the same command to go on")
        return ExitCode.INTERRUPTED


def run_recipe(
    recipe_path: str | Path,
    *,
    work_dir: str | Path | None = None,
    restart: bool = False,
    dry_run: bool = False,
    verbose: bool = False,
    console: Console | None = None,
) -> int:
    console = console or Console()
    recipe = load_recipe(recipe_path, work_dir=work_dir)
    for warning in recipe.warnings:
        console.error(f"warning: {warning}")
    if dry_run:
        planner = DataPlanner(recipe)
        for plan in recipe.plans:
            describe_plan(console, recipe, plan, planner.plan(plan, recipe.work_dir / plan.dirname))
        console.say(f"\n(dry run: nothing trained or written; work folder: {recipe.work_dir})")
        return ExitCode.OK
    if restart:
        _refuse_if_training(recipe.work_dir)
        moved = move_aside(recipe.work_dir)
        if moved:
            console.say(f"--restart: the previous run folder is now {moved} (nothing deleted)")
    inputs = fingerprint(recipe)
    with locked(recipe.work_dir):
        journal = Journal.open(recipe.work_dir, recipe, inputs)
        _refuse_if_training(recipe.work_dir, journal)
        return Runner(recipe, journal, console, verbose).run()


def _refuse_if_training(work_dir: Path, journal: Journal | None = None) -> None:
    if journal is None:
        path = work_dir / "journal.json"
        if not path.exists():
            return
        import json

        journal = Journal(path, json.loads(path.read_text(encoding="utf-8")))
    alive = journal.running_elsewhere()
    if alive:
        name, pgid = alive[0]
        raise UsageError(
            f"phase {name!r} of the run in {work_dir} is still training (process group {pgid}, "
            f"started by an earlier `axolotl-ual phases` that is gone): wait for it to end, or "
            f"stop it with `kill -- -{pgid}`, then re-run the same command to go on"
        )


def describe_plan(console: Console, recipe: Recipe, plan: PhasePlan, data: PhaseData) -> None:
    total = len(recipe.plans)
    kind = plan.adapter or "full fine-tuning"
    console.say(f"phase {plan.index}/{total} {plan.name!r} ({kind}; checkpoint: {plan.checkpoint})")
    bucket = data.report.get("bucket")
    if bucket:
        console.say(
            f"  uncertainty bucket {bucket['number']}/{bucket['of']}: "
            f"{bucket['low']:g} <= {bucket['field']} < {bucket['high']:g}, {bucket['rows']} rows"
        )
    for entry in data.entries:
        console.say(f"  dataset {entry['path']} (type: {entry.get('type')})")
    for replay in data.report.get("replay", []):
        console.say(
            f"  replay from {replay['from']!r}: {replay['rows']} of {replay['of']} rows "
            f"({replay['share']})"
        )


class Runner:
    def __init__(self, recipe: Recipe, journal: Journal, console: Console, verbose: bool):
        self.recipe, self.journal, self.console, self.verbose = recipe, journal, console, verbose

    def run(self) -> int:
        planner = DataPlanner(self.recipe)
        datas = [planner.plan(p, self.phase_dir(p)) for p in self.recipe.plans]
        for plan, data in zip(self.recipe.plans, datas, strict=True):
            if self.journal.phase(plan.name)["status"] != "done":
                data.write()
        total = len(self.recipe.plans)
        self.console.say(
            f"axolotl-ual phases: {total} phase(s) of {self.recipe.path.name}; work folder "
            f"{self.recipe.work_dir} (journal: {self.journal.path.name})"
        )
        previous: tuple[dict[str, Any], str] | None = None
        for plan, data in zip(self.recipe.plans, datas, strict=True):
            record = self.journal.phase(plan.name)
            if record["status"] == "done":
                self.console.say(
                    f"phase {plan.index}/{total} {plan.name!r}: done in an earlier run "
                    f"({Path(record['checkpoint']).name}, {record['reason']}); skipped"
                )
            else:
                status = self.run_phase(plan, data, previous)
                if status != ExitCode.OK:
                    return status
                record = self.journal.phase(plan.name)
            previous = (record["config"], record["checkpoint"])
        self.summary()
        return ExitCode.OK

    def phase_dir(self, plan: PhasePlan) -> Path:
        return self.recipe.work_dir / plan.dirname

    def run_phase(self, plan: PhasePlan, data: PhaseData, previous) -> int:
        total = len(self.recipe.plans)
        where = f"phase {plan.index}/{total} {plan.name!r}"
        phase_dir = self.phase_dir(plan)
        cfg = phase_config(
            plan.config,
            checkpoint_choice=plan.checkpoint,
            datasets=data.entries,
            phase_dir=phase_dir,
            previous=previous,
        )
        config_path = phase_dir / "config.yml"
        write_config(config_path, cfg, f"{where} of {self.recipe.path}")
        output = phase_dir / "output"
        moved = ckpt.move_incomplete_aside(output, phase_dir / "incomplete-checkpoints")
        for source, target in moved:
            self.console.say(
                f"{where}: incomplete {source.name} (killed while saving) moved to {target}"
            )
        resume = ckpt.last_complete(output)
        log = phase_dir / "train.log"
        start = "starts from " + (
            f"the previous phase's {Path(previous[1]).name}" if previous else "the base model"
        )
        if resume:
            start = f"resumes from its {resume.path.name} (steps 1-{resume.step} are not redone)"
        self.console.say(f"{where}: {start}; config {config_path}; full log {log}")
        attempt = {
            "resumed_from": str(resume.path) if resume else None,
            "config": str(config_path),
            "log": str(log),
            "moved_aside": [str(t) for _, t in moved],
        }
        started = time.monotonic()
        if resume and ckpt.finished(output):
            # an earlier attempt trained to the end but its runner died before recording it
            self.journal.start_attempt(plan.name, **attempt, note="already trained to the end")
            returncode, interrupted = 0, False
        else:
            self.journal.start_attempt(plan.name, **attempt)
            returncode, interrupted = self.train(plan, config_path, log, resume)
        if interrupted:
            self.journal.end_attempt(plan.name, "interrupted", exit=returncode)
            self.console.error(
                f"{where}: interrupted; its log is {log}. Re-run the same command to resume "
                "it from its last checkpoint (finished phases are not redone)."
            )
            return ExitCode.INTERRUPTED
        if returncode != 0:
            self.journal.end_attempt(plan.name, "failed", exit=returncode)
            self.console.error(tail(log))
            self.console.error(
                f"{where}: `axolotl train` failed (exit {returncode}); full log {log}. Fix the "
                "cause and re-run the same command: it resumes from the last checkpoint."
            )
            return ExitCode.STOPPED
        stopped_early = cfg.get("early_stopping_patience") is not None
        if not ckpt.finished(output) and not stopped_early:
            self.journal.end_attempt(plan.name, "interrupted", exit=returncode)
            self.console.error(
                f"{where}: `axolotl train` exited before its last step (was it interrupted?); "
                f"log {log}. Re-run the same command to resume it."
            )
            return ExitCode.INTERRUPTED
        choice = ckpt.choose(output, plan.checkpoint, where)
        self.journal.end_attempt(plan.name, "done", exit=returncode)
        self.journal.update(
            plan.name,
            index=plan.index,
            checkpoint=str(choice.checkpoint.path),
            step=choice.checkpoint.step,
            rule=choice.rule,
            reason=choice.reason,
            eval_loss=choice.checkpoint.eval_loss(),
            eval_loss_by_checkpoint={str(k): v for k, v in choice.candidates.items()},
            metrics=ckpt.metrics(output),
            data=data.report,
            config=cfg,
            config_file=str(config_path),
            config_sha256=file_digest(config_path),
            finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )
        self.console.say(
            f"{where}: done in {time.monotonic() - started:.0f} s; hands on "
            f"{choice.checkpoint.path.name} ({choice.reason})"
        )
        return ExitCode.OK

    def train(self, plan: PhasePlan, config: Path, log: Path, resume) -> tuple[int, bool]:
        """`axolotl train config` in its own process group; (exit status, interrupted)."""
        argv = [console_script("axolotl"), "train", str(config)]
        if self.recipe.spec.launcher == "python":
            argv += ["--launcher", "python"]
        with open(log, "ab") as handle:
            handle.write(
                f"\n===== axolotl-ual phases: {' '.join(argv)} (attempt "
                f"{len(self.journal.phase(plan.name)['attempts'])}, resuming from "
                f"{resume.path.name if resume else 'nothing'}) =====\n".encode()
            )
            offset = handle.tell()
            try:
                process = subprocess.Popen(
                    argv,
                    cwd=config.parent,
                    env=child_env(),  # the user's: hub access, W&B, telemetry as they set them
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                self.console.error(f"cannot start {argv[0]}: {exc} (is axolotl installed?)")
                return 127, False
        self.journal.phase(plan.name)["attempts"][-1]["process_group"] = process.pid
        self.journal.save()
        cfg = yaml.safe_load(config.read_text(encoding="utf-8"))
        follower = LogFollower(
            log,
            offset,
            self.console,
            verbose=self.verbose,
            first_step=resume.step if resume else 0,
            logging_steps=cfg.get("logging_steps"),
            max_steps=cfg.get("max_steps"),
        )
        stop = {"at": None}

        def on_signal(signum, _frame):
            if stop["at"] is None:
                stop["at"] = time.monotonic()
                self.console.error(
                    f"\n{signal.Signals(signum).name}: stopping `axolotl train` "
                    f"(process group {process.pid}) ..."
                )
                _signal_group(process.pid, signal.SIGINT)
            else:
                _signal_group(process.pid, signal.SIGKILL)

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while process.poll() is None:
                time.sleep(0.5)
                follower.pump()
                if stop["at"] is not None and time.monotonic() - stop["at"] > GRACE_SECONDS:
                    _signal_group(process.pid, signal.SIGKILL)
            follower.pump(final=True)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return process.returncode, stop["at"] is not None

    def summary(self) -> None:
        self.console.say("\nall phases done:")
        last = None
        for plan in self.recipe.plans:
            record = self.journal.phase(plan.name)
            loss = record.get("eval_loss")
            self.console.say(
                f"  {plan.index}. {plan.name}: {Path(record['checkpoint']).name}"
                + (f", eval_loss {loss:.6g}" if loss is not None else "")
                + f" ({record['reason']})"
            )
            last = record
        self.console.say(f"result: {last['checkpoint']}")
        if last["config"].get("adapter"):
            self.console.say(
                f"  (a {last['config']['adapter']} adapter on {last['config']['base_model']})"
            )
        self.console.say(f"journal: {self.journal.path}")


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass


def write_config(path: Path, cfg: dict[str, Any], what: str) -> None:
    header = (
        f"# Generated by `axolotl-ual phases` for {what}.\n"
        f"# Runnable on its own: axolotl train {path}\n"
        "# (it resumes from the last checkpoint in output_dir, if there is one)\n"
    )
    with atomic_path(path) as tmp:
        tmp.write_text(header + yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")


def tail(log: Path, lines: int = 40) -> str:
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.replace("\r", "\n").splitlines()[-lines:])


class LogFollower:
    """Shows what a growing `axolotl train` log says: the losses, and now and then its bar."""

    def __init__(
        self,
        path: Path,
        offset: int,
        console: Console,
        *,
        verbose: bool = False,
        first_step: int = 0,
        logging_steps: Any = None,
        max_steps: Any = None,
    ):
        self.path, self.offset, self.console, self.verbose = path, offset, console, verbose
        self.pending = ""
        self.bar = ""
        self.bar_shown_at = time.monotonic()
        self.bar_shown = ""
        # HF logs the train loss every `logging_steps` steps: the k-th log is at that step
        self.step = first_step
        self.every = logging_steps if isinstance(logging_steps, int) and logging_steps > 0 else None
        self.of = f"/{max_steps}" if isinstance(max_steps, int) and max_steps > 0 else ""

    def pump(self, final: bool = False) -> None:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
        except OSError:
            return
        self.offset += len(chunk)
        text = self.pending + chunk.decode("utf-8", errors="replace")
        pieces = re.split(r"[\r\n]", text)
        self.pending = "" if final else pieces.pop()
        for piece in pieces:
            self.piece(piece)
        due = time.monotonic() - self.bar_shown_at >= PROGRESS_SECONDS
        if self.bar and self.bar != self.bar_shown and due:
            self.console.say(f"    {self.bar.strip()[:120]}")
            self.bar_shown, self.bar_shown_at = self.bar, time.monotonic()

    def piece(self, piece: str) -> None:
        if not piece.strip():
            return
        if self.verbose:
            self.console.say(piece)
        if PROGRESS_BAR.search(piece):
            self.bar = piece
            return
        for record in logged_metrics(piece):
            if "loss" in record and "eval_loss" not in record and self.step is not None:
                self.step = self.step + self.every if self.every else None
            if not self.verbose and ("loss" in record or "eval_loss" in record):
                shown = ", ".join(
                    f"{k} {record[k]:.4g}" if isinstance(record[k], float) else f"{k} {record[k]}"
                    for k in SHOWN
                    if k in record
                )
                at = f"step {self.step}{self.of}" if self.step is not None else "log"
                self.console.say(f"    {at}: {shown}")
