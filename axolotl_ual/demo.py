"""`axolotl-ual demo`: the whole UAL training path on the embedded default, on CPU.

Builds a tiny Llama and tokenizer locally (no download), copies the bundled sample data (chat
rows already scored with an `uncertainty`) and the tiny CPU config into a work folder, and runs
the real `axolotl train` there. axolotl's own output goes to `<workdir>/train.log` as it
arrives; the console gets what is being trained, a line per logged training step and per
evaluation (read from the metric dicts the Hugging Face Trainer prints), a summary, and a plot
of the run (`<workdir>/ual_demo.png`).

The work folder is new, empty, or one the demo made: it replaces config.yml, sample_chat.jsonl,
train.log and ual_demo.png there, so (the rule of `elicit/output_paths.py`) a folder holding
anything else is refused, each of those files recognised by its contents.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import IO, Any

from . import compat
from .errors import ExitCode, UsageError
from .toolkit import console_script, offline_env, read_jsonl

CONFIG_NAME = "config.yml"
SAMPLE_NAME = "sample_chat.jsonl"
LOG_NAME = "train.log"
PLOT_NAME = "ual_demo.png"
TAIL_CHARS = 4000
# The first line of the bundled config (`data/tiny_cpu_demo.yml`), which the demo copies into
# its folder: how a folder the demo made is recognised. Keep it, or old folders are refused.
CONFIG_HEADER = "# UAL on a tiny model, on CPU: what `axolotl-ual demo` runs."
LOG_HEADER = "==== "  # + time + "axolotl-ual demo: ...", the first line `run` writes


def register(commands) -> None:
    parser = commands.add_parser(
        "demo",
        help="train a tiny model with UAL on the bundled sample data (CPU, no download)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--workdir", default="ual-demo", help="folder to build and train in")
    parser.add_argument(
        "--max-steps", type=int, default=None, help="stop after this many optimizer steps"
    )
    parser.set_defaults(func=run)


def prepare_workdir(workdir: Path, output: IO[bytes] | None = None) -> Path:
    """Write tiny-model/, sample_chat.jsonl and config.yml into `workdir`; return the config.

    With `output`, what building the model prints (import warnings, progress bars) goes there.
    """
    data = resources.files("axolotl_ual") / "data"
    workdir.mkdir(parents=True, exist_ok=True)
    sample = workdir / SAMPLE_NAME
    sample.write_text(data.joinpath("sample_chat.jsonl").read_text(encoding="utf-8"))
    config = workdir / CONFIG_NAME
    config.write_text(data.joinpath("tiny_cpu_demo.yml").read_text(encoding="utf-8"))
    model_dir = workdir / "tiny-model"
    if not (model_dir / "config.json").exists():
        with _output_to(output) if output else contextlib.nullcontext():
            from .tiny_model import build_tiny_model, corpus_from_jsonl

            build_tiny_model(model_dir, corpus_from_jsonl(sample))
    return config


def run(args) -> int:
    started = time.monotonic()

    def say(message: str) -> None:
        print(f"[{time.monotonic() - started:4.0f}s] {message}", flush=True)

    workdir = Path(args.workdir).resolve()
    try:
        check_workdir(workdir)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / LOG_NAME
    command = ["axolotl", "train", "config.yml", "--launcher", "python"]
    if args.max_steps:
        command.append(f"--max-steps={args.max_steps}")
    with open(log_path, "wb") as log:
        if not (workdir / "tiny-model" / "config.json").exists():
            say(f"building a tiny Llama and its tokenizer in {workdir / 'tiny-model'} (first run)")
        _log_header(log, "axolotl-ual demo: preparing the work folder")
        config = prepare_workdir(workdir, output=log)
        setup = DemoSetup.read(workdir, config)
        print(setup.describe(max_steps=args.max_steps), flush=True)
        print(f"Full log: {log_path} (`{' '.join(command)}`, run in {workdir})", flush=True)
        _log_header(log, f"$ {' '.join(command)}   (in {workdir})")
        say("axolotl: starting (loading torch, transformers and axolotl)")
        progress = Progress(logging_steps=setup.logging_steps)
        try:
            code = stream(
                [console_script("axolotl"), *command[1:]],
                cwd=workdir,
                env=offline_env(PYTHONUNBUFFERED="1"),  # lines as they happen, not at exit
                log=log,
                on_line=lambda line: [say(message) for message in progress.feed(line)],
            )
        except KeyboardInterrupt:
            print(f"\ninterrupted; the log so far: {log_path}", file=sys.stderr)
            return ExitCode.INTERRUPTED
        _log_header(log, f"exit status {code}")
    if code != 0:
        print(_tail(log_path), file=sys.stderr)
        print(f"axolotl train failed (exit {code}); full log: {log_path}", file=sys.stderr)
        return code
    from .demo_plot import plot_run

    png = plot_run(progress.train, progress.evals, workdir / PLOT_NAME, title=setup.title())
    print(summarize(progress, setup, png, time.monotonic() - started), flush=True)
    return 0


def stream(
    argv: list[str],
    *,
    cwd: Path,
    env: dict[str, str],
    log: IO[bytes],
    on_line: Callable[[str], Any],
) -> int:
    """Run `argv`; copy its output (stdout and stderr) to `log` as it arrives, flushing each
    line, and hand each line to `on_line`. Returns the exit status."""
    with subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    ) as process:
        for raw in process.stdout:
            log.write(raw)
            log.flush()
            on_line(raw.decode("utf-8", errors="replace"))
    return process.returncode


# --------------------------------------------------------------------------- the work folder


def check_workdir(workdir: Path) -> None:
    """Raise `UsageError` unless `workdir` is absent, empty, or a folder the demo made whose
    files it replaces are each what it writes there."""
    if not workdir.exists():
        return
    if not workdir.is_dir():
        raise UsageError(f"--workdir {workdir}: is a file: name a new folder")
    if not any(workdir.iterdir()):
        return
    if not _first_line(workdir / CONFIG_NAME).startswith(CONFIG_HEADER):
        raise UsageError(
            f"--workdir {workdir}: is not empty and not a folder `axolotl-ual demo` made (no "
            f"demo {CONFIG_NAME} in it), and the demo writes {CONFIG_NAME}, {SAMPLE_NAME}, "
            f"{LOG_NAME} and {PLOT_NAME} there: name a new or empty folder, or an earlier demo's"
        )
    for name, problem in ((SAMPLE_NAME, _not_sample), (LOG_NAME, _not_log), (PLOT_NAME, _not_png)):
        path = workdir / name
        why = None
        if path.is_dir():
            why = "a folder"
        elif path.exists() and path.stat().st_size:  # an empty file holds nothing to lose
            why = problem(path)
        if why:
            raise UsageError(
                f"--workdir {workdir}: {path} is not the {name} the demo writes ({why}) and "
                "would be replaced: move it, or name another folder"
            )


def _first_line(path: Path) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.readline(1 << 20)
    except OSError:  # absent, a folder, unreadable: not ours
        return ""


def _not_sample(path: Path) -> str | None:
    try:
        row = json.loads(_first_line(path))
    except ValueError:
        return "its first line is not JSON"
    ok = isinstance(row, dict) and {"messages", "uncertainty"} <= set(row)
    return None if ok else "its first row is not a scored chat row"


def _not_log(path: Path) -> str | None:
    line = _first_line(path)
    ok = line.startswith(LOG_HEADER) and "axolotl-ual demo:" in line
    return None if ok else "it does not start as the demo's log"


def _not_png(path: Path) -> str | None:
    from .elicit.output_paths import PNG_SIGNATURE

    with open(path, "rb") as handle:
        return None if handle.read(8) == PNG_SIGNATURE else "no PNG signature"


# --------------------------------------------------------------------------- reading the output


# axolotl's log lines that mark where it is; a line axolotl stops printing only loses its message
_MARKERS = (
    (compat.LOADING_RAW_DATA, "axolotl: tokenizing the rows (each token gets its row's u)"),
    (compat.LOADING_PREPARED_DATA, "axolotl: reusing the rows tokenized by a former run"),
    (compat.TRAINING_STARTS, "axolotl: model loaded; training"),
    (compat.TRAINING_DONE, "axolotl: training done; saving the model"),
)


class Progress:
    """axolotl's output, fed line by line, turned into short console messages.

    Keeps the training records (those with `loss`) and eval records (with `eval_loss`), each
    with a `step` added: the optimizer step it was logged at, counted from the training logs.
    """

    def __init__(self, logging_steps: int = 1):
        self.logging_steps = logging_steps
        self.total_steps: int | None = None
        self.train: list[dict] = []
        self.evals: list[dict] = []

    @property
    def step(self) -> int:
        return len(self.train) * self.logging_steps

    def feed(self, line: str) -> list[str]:
        messages = []
        for part in line.replace("\r", "\n").split("\n"):
            if found := compat.TOTAL_STEPS.search(part):
                self.total_steps = int(found[1])
                messages.append(f"axolotl: {self.total_steps} optimizer steps")
            elif found := compat.PLUGIN_LOG.search(part):
                messages.append(found[1].strip())
            else:
                messages.extend(text for marker, text in _MARKERS if marker in part)
        for record in compat.logged_metrics(line):
            if "loss" in record:
                self.train.append(record)
                record["step"] = self.step
                messages.append(self._train_message(record))
            elif "eval_loss" in record:
                record["step"] = self.step
                self.evals.append(record)
                messages.append(self._eval_message(record))
        return messages

    def _of_total(self, step: int) -> str:
        return f"{step}/{self.total_steps}" if self.total_steps else str(step)

    def _train_message(self, record: dict) -> str:
        text = f"step {self._of_total(record['step']):>5}  loss {_fmt(record['loss'])}"
        if "ual_epsilon_mean" in record:
            text += f"  mean eps {_fmt(record['ual_epsilon_mean'])}"
        return text

    def _eval_message(self, record: dict) -> str:
        text = f"eval at step {self._of_total(record['step'])}: loss {_fmt(record['eval_loss'])}"
        if "eval_ual_nll" in record:
            text += f", unsmoothed NLL {_fmt(record['eval_ual_nll'])}"
        buckets = bucket_values(record, "eval_ual_nll")
        if buckets:
            text += "; by u: " + "  ".join(f"{name} {_fmt(v)}" for name, v in buckets.items())
        return text


def bucket_values(record: dict, prefix: str) -> dict[str, Any]:
    """{'low': ..., 'mid': ..., 'high': ...} from `<prefix>_low`, ... keys, in logged order."""
    return {
        key.removeprefix(prefix + "_"): value
        for key, value in record.items()
        if key.startswith(prefix + "_")
    }


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# --------------------------------------------------------------------------- what is trained


@dataclass
class DemoSetup:
    """What the demo trains, read from the work folder: config, data and model."""

    workdir: Path
    cfg: dict  # the YAML
    ual: Any  # its ual_* keys, validated (`UALArgs`, defaults filled in)
    rows: list[dict]
    model: dict  # the model's config.json
    parameters: int | None

    @property
    def logging_steps(self) -> int:
        return int(self.cfg.get("logging_steps") or 1)

    @classmethod
    def read(cls, workdir: Path, config: Path) -> DemoSetup:
        import yaml

        from .elicit.inspect import load_ual_config

        cfg = yaml.safe_load(config.read_text(encoding="utf-8"))
        rows = read_jsonl(workdir / cfg["datasets"][0]["path"])
        model_dir = workdir / cfg["base_model"]
        model = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
        return cls(workdir, cfg, load_ual_config(config), rows, model, parameter_count(model_dir))

    def uncertainties(self) -> list[float]:
        field = self.ual.ual_uncertainty_field
        return [float(r[field]) for r in self.rows if isinstance(r.get(field), int | float)]

    def epsilon_rule(self) -> str:
        from .args import EpsilonMapping, UncertaintySource

        ual = self.ual
        low, high = ual.ual_smoothing_min, ual.ual_smoothing_max
        if ual.ual_uncertainty_source == UncertaintySource.constant:
            return f"eps = {high:g} for every row (ual_uncertainty_source: constant)"
        kind = ual.ual_mapping.value
        of_u = {
            EpsilonMapping.linear: "u",
            EpsilonMapping.power: f"u^{ual.ual_mapping_power:g}",
            EpsilonMapping.rank: "rank(u)",
        }
        scaled = f"{high - low:g} * {of_u.get(kind, f'{kind}(u)')}"
        rule = scaled if low == 0 else f"{low:g} + {scaled}"
        return f"eps = {rule} per row ({kind} from {low:g} at u=0 to {high:g} at u=1)"

    def describe(self, max_steps: int | None = None) -> str:
        m = self.model
        size = f"{self.parameters:,} parameters: " if self.parameters else ""
        model = (
            f"a tiny Llama ({size}{m.get('num_hidden_layers')} layers, hidden "
            f"{m.get('hidden_size')}, vocab {m.get('vocab_size')})"
        )
        u = self.uncertainties()
        scores = (
            f"judge uncertainty u from {min(u):g} to {max(u):g}, mean {math.fsum(u) / len(u):.2f}; "
            if u
            else ""
        )
        held_out = self.cfg.get("val_set_size") or 0
        data = f"{len(self.rows)} chat rows ({scores}{held_out:.0%} held out for eval)"
        epochs = f"{self.cfg.get('num_epochs', 1):g} epochs"
        if max_steps:
            epochs += f" (stopping after {max_steps} steps)"
        return f"Training {model} on {data} for {epochs}, with UAL label smoothing {self.epsilon_rule()}."

    def bucket_edges(self) -> list[float]:
        return list(self.ual.ual_eval_buckets)

    def title(self) -> str:
        return (
            f"axolotl-ual demo: tiny Llama, {len(self.rows)} rows, "
            f"eps {self.ual.ual_smoothing_min:g}-{self.ual.ual_smoothing_max:g} "
            f"({self.ual.ual_mapping.value})"
        )


def parameter_count(model_dir: Path) -> int | None:
    """Parameters in the model's safetensors files, from their headers (no torch needed)."""
    total = 0
    files = sorted(model_dir.glob("*.safetensors"))
    for path in files:
        with open(path, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(size))
        total += sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")
    return total if files else None


# --------------------------------------------------------------------------- the summary


def bucket_ranges(names: list[str], edges: list[float]) -> str:
    """'low: u < 0.333, mid: 0.333 <= u < 0.667, high: u >= 0.667' ('' if they do not match)."""
    if not edges or len(names) != len(edges) + 1:
        return ""
    parts = [f"{names[0]}: u < {edges[0]:.3g}"]
    parts += [
        f"{name}: {lower:.3g} <= u < {upper:.3g}"
        for name, lower, upper in zip(names[1:-1], edges[:-1], edges[1:], strict=True)
    ]
    parts.append(f"{names[-1]}: u >= {edges[-1]:.3g}")
    return ", ".join(parts)


def summarize(progress: Progress, setup: DemoSetup, png: Path, seconds: float) -> str:
    lines = ["", f"UAL demo finished in {seconds:.0f} s."]
    lines += _train_summary(progress.train) + _eval_summary(progress.evals, setup.bucket_edges())
    lines.append(f"  plot: {png} (loss per step; eval NLL by uncertainty bucket)")
    outputs = setup.workdir / (setup.cfg.get("output_dir") or "outputs")
    record = outputs.resolve() / "ual_run.json"
    if record.exists():
        run = json.loads(record.read_text())
        lines.append(f"  run record: {record} (loss path: {run.get('loss_path')})")
    lines.append(f"  trained model and tokenizer: {outputs.resolve()}")
    return "\n".join(lines)


def _train_summary(train: list[dict]) -> list[str]:
    if not train:
        return []
    first, last = train[0], train[-1]
    line = (
        f"  training loss (smoothed, what UAL minimizes): {_fmt(first['loss'])} -> "
        f"{_fmt(last['loss'])} over {last['step']} steps"
    )
    eps = [r["ual_epsilon_mean"] for r in train if isinstance(r.get("ual_epsilon_mean"), float)]
    if eps:
        line += f"; mean eps of a step's tokens {_fmt(min(eps))} to {_fmt(max(eps))}"
    return [line]


def _eval_summary(evals: list[dict], edges: list[float]) -> list[str]:
    if not evals:
        return []
    first, last = evals[0], evals[-1]
    line = f"  eval loss (smoothed): {_fmt(first['eval_loss'])} -> {_fmt(last['eval_loss'])}"
    if "eval_ual_nll" in first and "eval_ual_nll" in last:
        line += f"; unsmoothed NLL: {_fmt(first['eval_ual_nll'])} -> {_fmt(last['eval_ual_nll'])}"
    lines = [line]
    before, after = bucket_values(first, "eval_ual_nll"), bucket_values(last, "eval_ual_nll")
    if not after:
        return lines
    tokens = bucket_values(last, "eval_ual_tokens")
    per_bucket = []
    for name, value in after.items():
        text = f"{name} {_fmt(before.get(name, float('nan')))} -> {_fmt(value)}"
        if isinstance(tokens.get(name), float):
            text += f" ({tokens[name]:.0f} tokens)"
        per_bucket.append(text)
    lines.append("  by uncertainty: " + ",  ".join(per_bucket))
    names = list(after)
    ranges = bucket_ranges(names, edges)
    lines.append(
        f"  eval_ual_nll_{'/'.join(names)}: the unsmoothed NLL of the eval tokens whose sample's "
        f"uncertainty is {' / '.join(names)}"
        + (f" ({ranges})" if ranges else "")
        + ". To see where UAL helps or hurts on your own data, compare them with a plain-SFT "
        "run (ual_smoothing_max: 0, as in example_configs/baseline_sft.yml): lower than plain "
        "SFT's in a bucket means UAL helps those samples, higher means it hurts them."
    )
    return lines


# --------------------------------------------------------------------------- plumbing


def _log_header(log: IO[bytes], text: str) -> None:
    log.write(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n".encode())
    log.flush()


@contextlib.contextmanager
def _output_to(handle: IO[bytes]):
    """Send this process's stdout and stderr (file descriptors 1 and 2) to `handle` meanwhile."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    try:
        os.dup2(handle.fileno(), 1)
        os.dup2(handle.fileno(), 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, original in zip((1, 2), saved, strict=True):
            os.dup2(original, fd)
            os.close(original)


def _tail(path: Path, chars: int = TAIL_CHARS) -> str:
    with open(path, "rb") as handle:
        handle.seek(max(0, path.stat().st_size - chars))
        return handle.read().decode("utf-8", errors="replace")
