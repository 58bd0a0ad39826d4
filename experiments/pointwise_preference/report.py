"""Aggregate the runs over seeds and write results.md, results.json and results.png.

Means ± sample standard deviations over seeds and paired differences to SFT on the positives
(the same training split and order), as described in `experiments/harness/report.py`.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from ..harness.report import (
    arm_rows,
    by_arm,
    dig,
    fmt,
    header,
    mean_std,
    number,
    paired_rows,
    save_figure,
    table,
    write_results,
)
from . import data, prepare
from .prepare import ARMS

LABELS = {name: arm.label for name, arm in ARMS.items()}
BASE_LABEL = "base model (the reference)"

# (column title, path into a run's metrics, "higher" | "lower" is better)
MAIN = [
    ("good: log p per token", ("all", "good_token_logp"), "higher"),
    ("bad: log p per token", ("all", "bad_token_logp"), "lower"),
    ("margin per token", ("all", "token_margin"), "higher"),
    ("q(good)", ("all", "good_prob"), "higher"),
    ("q(bad)", ("all", "bad_prob"), "lower"),
    ("preference accuracy", ("all", "preference_accuracy"), "higher"),
]
COST = [
    ("CPU s / step", ("cost", "step_cpu_s"), "{:.3f}"),
    ("wall s / step", ("cost", "step_wall_s"), "{:.3f}"),
    ("peak RSS, MiB", ("cost", "peak_rss_mib"), "{:.0f}"),
    ("RSS growth in training, MiB", ("cost", "training_rss_growth_mib"), "{:.0f}"),
    ("axolotl train, s", ("cost", "run_s"), "{:.0f}"),
]
SHORT = {
    "good_prob": "q(good) ↑",
    "bad_prob": "q(bad) ↓",
    "preference_accuracy": "accuracy ↑",
    "token_margin": "margin ↑",
}
COLORS = {"sft": "#7f7f7f", "ulma": "#1f77b4", "kto": "#d62728", "pointwise_dpo": "#ff7f0e"}


def cost(probe: dict, peak_rss_mib: float, run_s: float) -> dict:
    """What a run cost, from the probe (inside the trainer) and from the process's rusage.

    Per-step times are medians over the steps after the first (which pays one-off costs):
    the machine is shared, and a median ignores the steps another process slowed down.
    """
    return {
        "step_cpu_s": statistics.median(probe["step_cpu_s"][1:]),
        "step_wall_s": statistics.median(probe["step_wall_s"][1:]),
        "step_wall_mean_s": statistics.fmean(probe["step_wall_s"]),
        "steps": len(probe["step_wall_s"]),
        "peak_rss_mib": peak_rss_mib,
        "rss_at_train_begin_mib": probe["rss_at_train_begin_mib"],
        "training_rss_growth_mib": probe["peak_rss_at_train_end_mib"]
        - probe["rss_at_train_begin_mib"],
        "run_s": run_s,
    }


def settings(seeds, arms, max_steps, base_steps, scale) -> dict:
    return {
        "seeds": list(seeds),
        "arms": {name: ARMS[name].keys for name in arms},
        "split_scale": scale,
        "base_pretraining": {**prepare.BASE, "max_steps": base_steps or prepare.BASE["max_steps"]},
        "training": {**prepare.COMMON, "max_steps": max_steps or prepare.COMMON["max_steps"]},
        "pretrain_rows_per_task": data.PRETRAIN_PER_TASK,
        "train_rows_per_task": data.TRAIN_PER_TASK,
        "test_rows_per_task": data.TEST_PER_TASK,
    }


def markdown(results: list[dict], base: dict) -> str:
    groups = by_arm(results, ARMS)
    seeds = sorted({r["seed"] for r in results})
    lines = [
        f"Held-out split ({base['all']['prompts']} prompts, each with its good and its bad "
        f"response); mean ± std over seeds {', '.join(map(str, seeds))}.",
        "",
        "**Held-out likelihood of the good and the bad responses**",
        "",
    ]
    rows = [[BASE_LABEL] + [number(dig(base, path)) for _, path, _ in MAIN]]
    lines += table(header(MAIN), rows + arm_rows(groups, LABELS, MAIN))

    if "sft" in groups and len(groups) > 1:
        lines += ["**Difference to SFT on the positives, paired by seed** (arm minus SFT)", ""]
        lines += table(header(MAIN), paired_rows(groups, LABELS, MAIN, "sft"))

    lines += ["**Cost** (time per training step: median over steps; memory: see README)", ""]
    rows = []
    for name, runs in groups.items():
        cells = []
        for _, path, style in COST:
            mean, std = mean_std([dig(r, path) for r in runs])
            cells.append(
                style.format(mean) + ("" if math.isnan(std) else f" ± {style.format(std)}")
            )
        rows.append([LABELS[name], *cells])
    lines += table(["arm"] + [title for title, _, _ in COST], rows)

    tasks = [t for t in data.TASKS if t in base["tasks"]]
    for title, keys in (
        (
            "**Per task**: probability of the good and of the bad response",
            ("good_prob", "bad_prob"),
        ),
        (
            "**Per task**: preference accuracy and per-token margin",
            ("preference_accuracy", "token_margin"),
        ),
    ):
        lines += [title, ""]
        columns = ["arm"] + [f"{t}: {SHORT[k]}" for t in tasks for k in keys]
        rows = [[BASE_LABEL] + [number(base["tasks"][t][k]) for t in tasks for k in keys]]
        rows += [
            [LABELS[name]] + [fmt([r["tasks"][t][k] for r in runs]) for t in tasks for k in keys]
            for name, runs in groups.items()
        ]
        lines += table(columns, rows)
    return "\n".join(lines).rstrip() + "\n"


def plot(path: Path, results: list[dict], base: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = by_arm(results, ARMS)
    names = list(groups)
    labels = [ARMS[n].label.replace(" (", "\n(").replace(" on ", "\non ") for n in names]
    colors = [COLORS[n] for n in names]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))

    def bars(ax, metric, title, reference=None):
        for x, name in enumerate(names):
            values = [dig(r, metric) for r in groups[name]]
            mean, std = mean_std(values)
            ax.bar(x, mean, color=colors[x], alpha=0.8, yerr=None if math.isnan(std) else std)
            ax.scatter([x] * len(values), values, color="black", s=12, zorder=3)
        if reference is not None:
            ax.axhline(reference, color="green", linestyle="--", linewidth=1, label=BASE_LABEL)
            ax.legend(fontsize=8)
        ax.set_xticks(range(len(names)), labels, fontsize=8)
        ax.set_title(title, fontsize=10)

    ax = axes[0, 0]
    width = 0.38
    for k, (key, label, hatch) in enumerate(
        (("good_prob", "q(good) ↑", None), ("bad_prob", "q(bad) ↓", "//"))
    ):
        for x, name in enumerate(names):
            values = [r["all"][key] for r in groups[name]]
            mean, std = mean_std(values)
            ax.bar(
                x + (k - 0.5) * width,
                mean,
                width,
                color=colors[x],
                alpha=0.8,
                hatch=hatch,
                yerr=None if math.isnan(std) else std,
                label=label if x == 0 else None,
            )
        ax.axhline(base["all"][key], color="green", linestyle="--" if k == 0 else ":", linewidth=1)
    ax.set_xticks(range(len(names)), labels, fontsize=8)
    ax.set_title("held-out probability of the good / bad response (lines: base model)", fontsize=10)
    ax.legend(fontsize=8)
    bars(
        axes[0, 1],
        ("all", "preference_accuracy"),
        "preference accuracy: q(good) > q(bad) ↑",
        base["all"]["preference_accuracy"],
    )
    bars(axes[1, 0], ("cost", "step_cpu_s"), "CPU seconds per training step (median)")
    bars(axes[1, 1], ("cost", "peak_rss_mib"), "peak RSS of `axolotl train`, MiB")
    save_figure(
        fig, path, "Point-wise preference: LoRA on a tiny Llama via `axolotl train`", results
    )


def write(out: Path, results: list[dict], base: dict, settings_: dict) -> str:
    """results.md (the tables), results.json (every number) and results.png; returns the md."""
    return write_results(
        out, markdown(results, base), results, base, settings_, ARMS, plot, reference_name="base"
    )
