"""What the experiments' tests share: a smoke run of an experiment's command, and its arms'
configs side by side."""

from __future__ import annotations

import sys
from pathlib import Path

from experiments.harness.runner import arm_config
from tests.support import run_command


def run_smoke(module: str, root: Path) -> tuple[Path, Path, str]:
    """`python -m <module> --smoke` into root/work and root/out: (work, out, its output)."""
    work, out = root / "work", root / "out"
    result = run_command(
        [sys.executable, "-m", module, "--smoke", "--workdir", str(work), "--out", str(out)]
    )
    assert result.returncode == 0, result.stdout[-6000:]
    return work, out, result.stdout


def arm_configs(prepare, tmp_path: Path, seed: int) -> dict[str, dict]:
    """Every arm's axolotl config of an experiment (`prepare`: its module) for one seed."""
    return {
        name: arm_config(
            prepare.TEMPLATE,
            arm,
            base_model=tmp_path / "m",
            train_file=tmp_path / "t.jsonl",
            test_file=tmp_path / "e.jsonl",
            run_dir=tmp_path / name,
            seed=seed,
        )
        for name, arm in prepare.ARMS.items()
    }


def differing_keys(cfg: dict, reference: dict) -> set[str]:
    return {k for k in set(cfg) | set(reference) if cfg.get(k) != reference.get(k)}
