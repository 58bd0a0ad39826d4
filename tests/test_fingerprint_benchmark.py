"""`benchmarks/fingerprint_cost.py` runs, reports its table and leaves no file behind."""

from __future__ import annotations

import subprocess
import sys

from axolotl_ual.toolkit import REPO, offline_env


def test_fingerprint_cost_smoke(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "fingerprint_cost.py"),
            "--size-gib", "0.002",
            "--reps", "1",
            "--tokenize-mib", "0.5",
            "--dir", str(tmp_path),
            "--markdown", str(tmp_path / "report.md"),
        ],
        cwd=REPO,
        env=offline_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| cold-ish (DONTNEED before each) | 1 |" in result.stdout
    assert "| warm (file just read) | 1 |" in result.stdout
    assert "bare BPE tokenizer encode" in result.stdout
    assert "cores" in result.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]  # the data file is gone
