"""Helpers for the tests: the sample data, CPU axolotl configs, `axolotl` subprocess runners.

Fixtures live in `conftest.py`; tests import these helpers from here.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import yaml

from axolotl_ual.compat import logged_metrics
from axolotl_ual.toolkit import DATA, REPO, console_script, offline_env

__all__ = ["REPO"]

SAMPLE_CHAT = DATA / "sample_chat.jsonl"
SAMPLE_ALPACA = DATA / "sample_alpaca.jsonl"

# What every CPU run needs (see README): no mixed precision, no CUDA-only kernels.
CPU_KEYS = {
    "bf16": False,
    "fp16": False,
    "tf32": False,
    "attn_implementation": "sdpa",
    "optimizer": "adamw_torch",
    "lr_scheduler": "constant",
    "learning_rate": 1e-3,
    "logging_steps": 1,
    "seed": 7,
    "dataset_num_proc": 1,
}


# A small LoRA on every linear layer; axolotl's fused LoRA kernels are CUDA-only.
LORA_ON_CPU = {
    "lora_r": 8,
    "lora_alpha": 16,
    "lora_dropout": 0.0,
    "lora_target_linear": True,
    "lora_mlp_kernel": False,
    "lora_qkv_kernel": False,
    "lora_o_kernel": False,
}


def axolotl_env() -> dict[str, str]:
    return offline_env(OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))


def ual_config(model_dir: Path, workdir: Path, **overrides) -> dict:
    """A CPU axolotl config training the tiny model with UAL on the sample chat data."""
    cfg = {
        "base_model": str(model_dir),
        "plugins": ["axolotl_ual.UALPlugin"],
        "ual_uncertainty_source": "field",
        "ual_smoothing_min": 0.0,
        "ual_smoothing_max": 0.2,
        "datasets": [
            {
                "path": str(SAMPLE_CHAT),
                "type": "axolotl_ual.chat_template",
                "field_messages": "messages",
            }
        ],
        "chat_template": "tokenizer_default",
        "sequence_len": 256,
        "micro_batch_size": 2,
        "gradient_accumulation_steps": 1,
        "max_steps": 2,
        "val_set_size": 0,
        "output_dir": str(workdir / "out"),
        "dataset_prepared_path": str(workdir / "prepared"),
        **CPU_KEYS,
    }
    cfg.update(overrides)
    # one checkpoint at the end: its trainer_state.json has the full-precision log history
    cfg.setdefault("save_strategy", "steps")
    cfg.setdefault("save_steps", cfg["max_steps"])
    cfg.setdefault("save_only_model", True)
    return {k: v for k, v in cfg.items() if v is not None}


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


# `axolotl train` re-launches itself under `accelerate launch` by default: a second Python
# process importing torch and axolotl again, half of a tiny run's time on a 2-core CPU. For
# one process `--launcher python` (axolotl's own option) runs the same training code without
# that; the tests use it except where they ask for the default (`launcher="accelerate"`) or
# give a multi-process launcher command.
SINGLE_PROCESS = ["--launcher", "python"]


def run_axolotl(
    command: str,
    config: Path,
    *,
    launcher: list[str] | str | None = None,
    env: dict[str, str] | None = None,
    timeout=600,
):
    """`axolotl <command> config` (or under `launcher`) in a subprocess; output captured."""
    if isinstance(launcher, list):  # e.g. accelerate launch ... -m axolotl.cli.train
        argv = [*launcher, str(config)]
    else:
        argv = [console_script("axolotl"), command, str(config)]
        if command == "train" and launcher != "accelerate":
            argv += SINGLE_PROCESS
    return run_command(argv, cwd=config.parent, env=env, timeout=timeout)


def run_command(argv: list[str], *, cwd: Path = REPO, env: dict | None = None, timeout=900):
    """`argv` in a subprocess with axolotl's offline environment (plus `env`); stdout and
    stderr captured together, for a failing test to show the tail."""
    return subprocess.run(
        argv,
        cwd=cwd,
        env={**axolotl_env(), **(env or {})},
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=timeout,
        check=False,
    )


def train(config: Path, **kwargs) -> list[dict]:
    """Run `axolotl train` and return the metric dicts it logged; fail with the log tail."""
    result = run_axolotl("train", config, **kwargs)
    assert result.returncode == 0, result.stdout[-6000:]
    return logged_metrics(result.stdout)


def run_losses(tiny_model: Path, workdir: Path, steps: int = 3, **overrides) -> list[float]:
    """`axolotl train` for `steps` steps; the losses logged (full precision), one per step.

    Equal losses over several steps also mean equal gradients: the same updates were applied.
    """
    cfg = ual_config(tiny_model, workdir, max_steps=steps, **overrides)
    train(write_config(workdir / "cfg.yml", cfg))
    losses = [r["loss"] for r in log_history(workdir / "out") if "loss" in r]
    assert len(losses) == steps
    return losses


def plain_axolotl(**overrides) -> dict:
    """`ual_config` overrides for the same run without the plugin: axolotl's own
    chat_template type and loss."""
    return dict(
        plugins=None,
        ual_uncertainty_source=None,
        ual_smoothing_min=None,
        ual_smoothing_max=None,
        datasets=[
            {"path": str(SAMPLE_CHAT), "type": "chat_template", "field_messages": "messages"}
        ],
        **overrides,
    )


def train_losses(records: list[dict]) -> list[float]:
    return [r["loss"] for r in records if "loss" in r]


def log_history(output_dir: Path) -> list[dict]:
    """`trainer_state.json`'s log history from the last checkpoint (full precision)."""
    checkpoints = sorted(
        Path(output_dir).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1])
    )
    assert checkpoints, f"no checkpoint in {output_dir}: set save_strategy: steps"
    return json.loads((checkpoints[-1] / "trainer_state.json").read_text())["log_history"]
