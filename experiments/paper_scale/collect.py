"""Collect the arms' GSM8K scores (lm-evaluation-harness output) into one table.

    python experiments/paper_scale/collect.py experiments/paper_scale/work/lm_eval

reads `<dir>/<arm>/**/results_*.json` (the newest per arm) for arms sft, fixed_ls and ual, and
prints accuracy (± the harness's standard error) and the difference to SFT, next to what the
paper reports for UAL over SFT.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

TASK = "gsm8k_ual_alpaca"
FILTER = "metamath-answer"
ARMS = {"sft": "SFT", "fixed_ls": "fixed LS 0.1", "ual": "UAL"}
# Wang et al. 2024, abstract: in the mixed scenario UAL improves on SFT by 1.81% on average over
# the complex low-entropy tasks (MetaMath and GSM8K) and by 10.62% on AlpacaEval. The abstract
# does not split the 1.81 between the two benchmarks or say points vs relative; see the paper's
# tables for the per-model figures.
PAPER = {"ual": "+1.81 (mean over MetaMath and GSM8K)"}


def newest_result(arm_dir: Path) -> dict | None:
    files = sorted(arm_dir.glob("**/results_*.json"), key=lambda p: p.name)
    return json.loads(files[-1].read_text()) if files else None


def score(result: dict, filter_name: str = FILTER) -> tuple[float, float]:
    metrics = result["results"][TASK]
    return metrics[f"exact_match,{filter_name}"], metrics.get(
        f"exact_match_stderr,{filter_name}", math.nan
    )


def table(root: Path, filter_name: str = FILTER) -> str:
    scores = {}
    for arm in ARMS:
        result = newest_result(root / arm)
        if result is not None:
            scores[arm] = score(result, filter_name)
    lines = [
        f"GSM8K test accuracy ({TASK}, filter {filter_name}), %",
        "",
        "| arm | GSM8K (yours) | vs SFT (yours) | UAL vs SFT (paper) |",
        "|---|---:|---:|---|",
    ]
    for arm, label in ARMS.items():
        if arm not in scores:
            lines.append(f"| {label} | not run | | {PAPER.get(arm, '')} |")
            continue
        value, stderr = scores[arm]
        delta = ""
        if arm != "sft" and "sft" in scores:
            delta = f"{100 * (value - scores['sft'][0]):+.2f}"
        lines.append(
            f"| {label} | {100 * value:.2f} ± {100 * stderr:.2f} | {delta} | {PAPER.get(arm, '')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("root", type=Path, help="folder holding one lm_eval --output_path per arm")
    parser.add_argument("--filter", default=FILTER, help="metamath-answer or flexible-extract")
    args = parser.parse_args(argv)
    print(table(args.root, args.filter))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
