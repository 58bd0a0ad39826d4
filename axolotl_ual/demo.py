"""`axolotl-ual demo`: the whole UAL training path on the embedded default, on CPU.

Builds a tiny Llama and tokenizer locally (no download), copies the bundled sample data (chat
rows already scored with an `uncertainty`) and the tiny CPU config into a work folder, and runs
the real `axolotl train` there.
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

from .toolkit import console_script, offline_env


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


def prepare_workdir(workdir: Path) -> Path:
    """Write tiny-model/, sample_chat.jsonl and config.yml into `workdir`; return the config."""
    from .tiny_model import build_tiny_model, corpus_from_jsonl

    data = resources.files("axolotl_ual") / "data"
    workdir.mkdir(parents=True, exist_ok=True)
    sample = workdir / "sample_chat.jsonl"
    sample.write_text(data.joinpath("sample_chat.jsonl").read_text(encoding="utf-8"))
    config = workdir / "config.yml"
    config.write_text(data.joinpath("tiny_cpu_demo.yml").read_text(encoding="utf-8"))
    model_dir = workdir / "tiny-model"
    if not (model_dir / "config.json").exists():
        build_tiny_model(model_dir, corpus_from_jsonl(sample))
    return config


def run(args) -> int:
    workdir = Path(args.workdir).resolve()
    config = prepare_workdir(workdir)
    command = ["axolotl", "train", config.name]
    if args.max_steps:
        command.append(f"--max-steps={args.max_steps}")
    env = offline_env()
    print(f"axolotl-ual demo: running `{' '.join(command)}` in {workdir}", flush=True)
    process = subprocess.run(
        [console_script("axolotl"), *command[1:]],
        check=False,
        cwd=workdir,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    (workdir / "train.log").write_text(process.stdout)
    if process.returncode != 0:
        print(process.stdout[-4000:], file=sys.stderr)
        print(
            f"axolotl train failed (exit {process.returncode}); log: {workdir / 'train.log'}",
            file=sys.stderr,
        )
        return process.returncode
    print(summarize(process.stdout, workdir / "outputs"))
    return 0


def logged_metrics(log_text: str) -> list[dict]:
    """The metric dicts HF Trainer prints, e.g. {'loss': '6.2', 'ual_epsilon_mean': '0.1'}."""
    records = []
    for line in log_text.replace("\r", "\n").splitlines():
        start = line.find("{'")
        if start < 0 or not line.rstrip().endswith("}"):
            continue
        try:
            record = ast.literal_eval(line[start:].strip())
        except (ValueError, SyntaxError):
            continue
        if isinstance(record, dict):
            records.append({k: _number(v) for k, v in record.items()})
    return records


def _number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def summarize(log_text: str, output_dir: Path) -> str:
    records = logged_metrics(log_text)
    train = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval_loss" in r]
    lines = ["", "UAL demo finished.", f"  train steps logged: {len(train)}"]
    if train:
        first, last = train[0], train[-1]
        lines.append(f"  loss: {first['loss']:.4f} -> {last['loss']:.4f}")
        lines.append(f"  mean epsilon of trained tokens (last log): {last.get('ual_epsilon_mean')}")
    if evals:
        last = evals[-1]
        per_bucket = {
            k.removeprefix("eval_ual_"): v for k, v in last.items() if k.startswith("eval_ual_nll")
        }
        lines.append(f"  eval loss: {last['eval_loss']:.4f}; eval NLL by uncertainty: {per_bucket}")
    record = output_dir / "ual_run.json"
    if record.exists():
        lines.append(f"  run record: {json.dumps(json.loads(record.read_text()))}")
    lines.append(f"  outputs: {output_dir}")
    return "\n".join(lines)
