"""What the CPU experiments' runners share: their work folder, command line and tables."""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path


def reset_workdir(workdir: Path, marker: str, made_by: str) -> None:
    """Empty `workdir` for a new run, refusing a folder this experiment did not make."""
    if workdir.exists():
        if not (workdir / marker).exists():
            raise SystemExit(
                f"{workdir} exists and was not made by this experiment: pick another --workdir"
            )
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    (workdir / marker).write_text(f"made by {made_by}\n")


def parser(doc: str, *, arms: list[str], here: Path, smoke: dict) -> argparse.ArgumentParser:
    """The options every experiment takes: seeds, arms, output and work folders, jobs, steps."""
    parser_ = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser_.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser_.add_argument("--arms", nargs="+", choices=arms, default=arms)
    parser_.add_argument(
        "--out",
        type=Path,
        default=here / "results",
        help="where results.md, results.json and results.png go",
    )
    parser_.add_argument(
        "--workdir",
        type=Path,
        default=here / "work",
        help="data, configs, models and logs (emptied first)",
    )
    parser_.add_argument("--jobs", type=int, default=2, help="runs in parallel (1 thread each)")
    parser_.add_argument(
        "--max-steps",
        type=int,
        default=None,
        help="override the arms' max_steps (changes the results)",
    )
    parser_.add_argument(
        "--smoke",
        action="store_true",
        help=f"CI version: {smoke} (unless --seeds/--arms/--max-steps say otherwise)",
    )
    return parser_


def apply_smoke(args: argparse.Namespace, argv: list[str] | None, smoke: dict) -> float:
    """With --smoke, the smoke settings for every option not given; the split scale to use."""
    if not args.smoke:
        return 1.0
    given = set(argv if argv is not None else sys.argv[1:])
    args.seeds = args.seeds if "--seeds" in given else smoke["seeds"]
    args.arms = args.arms if "--arms" in given else smoke["arms"]
    args.max_steps = args.max_steps or smoke["max_steps"]
    return smoke["per_task_scale"]


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table, the first column left-aligned and the others right-aligned; then a
    blank line."""
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return [*lines, ""]


def group_by_arm(results: list[dict], arms) -> dict[str, list[dict]]:
    """The runs of each arm (in the order of `arms`), sorted by seed; arms without runs left out."""
    grouped: dict[str, list[dict]] = {}
    for name in arms:
        runs = sorted((r for r in results if r["arm"] == name), key=lambda r: r["seed"])
        if runs:
            grouped[name] = runs
    return grouped


def finish(out: Path, table: str, started: float) -> None:
    """Print the tables written and the elapsed time of the whole command."""
    elapsed = time.monotonic() - started
    print(table)
    print(
        f"\nwrote {out}/results.md, results.json, results.png; "
        f"elapsed {elapsed / 60:.1f} min ({elapsed:.0f} s)"
    )


# ---------------------------------------------------------------------- numbers


def dig(metrics: dict, path: tuple[str, ...]):
    for key in path:
        metrics = metrics[key]
    return metrics


def mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def number(value: float, sign: str = "") -> str:
    """3 decimals, and "0.000" rather than "-0.000" for a value that rounds to zero."""
    return f"{round(value, 3) + 0.0:{sign}.3f}"


def fmt(values: list[float], sign: str = "") -> str:
    mean, std = mean_std(values)
    return number(mean, sign) if math.isnan(std) else f"{number(mean, sign)} ± {number(std)}"


def fmt_signed(values: list[float]) -> str:
    return fmt(values, sign="+")


def rounded(value):
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 6)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def paired_difference_rows(
    groups: dict[str, list[dict]], baseline: str, paths: list[tuple[str, ...]], label
) -> list[list[str]]:
    """Table rows of each arm's difference to the `baseline` arm (arm minus baseline), paired by
    seed (the same data and order), so the variation the arms share drops out."""
    reference = {r["seed"]: r for r in groups[baseline]}
    rows = []
    for name, runs in groups.items():
        if name == baseline:
            continue
        paired = [r for r in runs if r["seed"] in reference]
        rows.append(
            [label(name)]
            + [
                fmt_signed([dig(r, path) - dig(reference[r["seed"]], path) for r in paired])
                for path in paths
            ]
        )
    return rows


# ---------------------------------------------------------------------- files


def write_results(out: Path, text: str, payload: dict, draw) -> str:
    """results.md (`text`), results.json (`payload`, floats to 6 decimals, so a re-run writes
    the same bytes) and results.png (`draw(path)`); returns `text`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(json.dumps(rounded(payload), indent=1) + "\n")
    draw(out / "results.png")
    return text


def save_figure(fig, path: Path, title: str, results: list[dict]) -> None:
    """Title (with the seeds of `results`), lay out and save a matplotlib figure of bars over
    seeds (no timestamp or version in the PNG)."""
    import matplotlib.pyplot as plt

    seeds = sorted({r["seed"] for r in results})
    fig.suptitle(f"{title}, seeds {seeds} (bars: mean ± std, dots: seeds)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)
