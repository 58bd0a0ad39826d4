"""Aggregate the per-run metrics over seeds and write results.md, results.json and results.png.

Every main metric is a RESPONSE metric on the held-out split (instruction tokens are never
scored, whatever the arm trained on); means ± sample std over seeds and paired differences to
SFT, as described in `experiments/harness/report.py`.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..harness.report import (
    GENERATION,
    KL_SPLIT,
    arm_rows,
    by_arm,
    dig,
    generation_tables,
    header,
    mean_std,
    number,
    paired_rows,
    save_figure,
    table,
    write_results,
)
from .prepare import ARMS
from .tasks import HIGH_TASKS, LOW_TASKS, guess_exact_match

LABELS = {name: arm.label for name, arm in ARMS.items()}

# (column title, path into a run's metrics, "higher" | "lower" is better)
MAIN = [
    ("exact match (greedy), low", ("low", "exact_match"), "higher"),
    ("response NLL, low", ("low", "token_nll"), "lower"),
    ("KL(p‖q), high", ("high", "kl"), "lower"),
    *KL_SPLIT,
    ("response NLL, high", ("high", "token_nll"), "lower"),
    ("ECE, responses", ("all", "ece"), "lower"),
]
CONTEXT = [
    ("train response NLL, low", ("train_token_nll", "low")),
    ("train response NLL, high", ("train_token_nll", "high")),
    ("held-out instruction NLL (axolotl eval)", ("axolotl", "eval", "eval_ual_nll_instruction")),
    ("instruction share of trained tokens", ("axolotl", "ual_instruction_fraction")),
    ("final train loss (as trained)", ("axolotl", "final_loss")),
]
PER_TASK = [
    *((f"{t}: exact match", ("tasks", t, "exact_match"), "higher") for t in LOW_TASKS),
    *((f"{t}: KL", ("tasks", t, "kl"), "lower") for t in HIGH_TASKS),
    *(
        (f"{t}: sampled TV", ("generation", "sample", "tasks", t, "tv_valid"), "lower")
        for t in HIGH_TASKS
    ),
]


def markdown(results: list[dict], oracle: dict) -> str:
    groups = by_arm(results, ARMS)
    seeds = sorted({r["seed"] for r in results})
    lines = [
        f"Held-out test split, response tokens only; mean ± std over seeds "
        f"{', '.join(map(str, seeds))}.",
        "",
        "**Main metrics**",
        "",
    ]
    rows = arm_rows(groups, LABELS, MAIN)
    rows.append(["truth (oracle)"] + [number(dig(oracle, path)) for _, path, _ in MAIN])
    main_header = header(MAIN)
    lines += table(main_header, rows)
    if "sft" in groups and len(groups) > 1:
        lines += ["**Difference to SFT, paired by seed** (arm minus SFT)", ""]
        lines += table(main_header, paired_rows(groups, LABELS, MAIN, "sft"))

    lines += generation_tables(groups, LABELS, oracle["generation_truth"], "sft")

    lines += ["**Context**", ""]
    lines += table(["arm"] + [title for title, _ in CONTEXT], arm_rows(groups, LABELS, CONTEXT))

    lines += [
        "**Per task**: exact match (greedy), KL(p‖q) in nats, TV of the sampled valid answers",
        "",
    ]
    rows = arm_rows(groups, LABELS, PER_TASK)
    truth_tv = [number(oracle["generation_truth"]["tasks"][t]["tv_valid"]) for t in HIGH_TASKS]
    rows.append(["truth"] + ["1.000"] * len(LOW_TASKS) + ["0.000"] * len(HIGH_TASKS) + truth_tv)
    guess = guess_exact_match()
    rows.append(
        ["guess (no reading, no knowledge)"]
        + [number(guess[t]) for t in LOW_TASKS]
        + [""] * (2 * len(HIGH_TASKS))
    )
    lines += table(header(PER_TASK), rows)
    return "\n".join(lines).rstrip() + "\n"


COLORS = ["#7f7f7f", "#1f77b4", "#2ca02c"]


def _bars(ax, groups, metrics, title, truth=None, guess=None) -> None:
    """One group of bars per metric, one bar per arm (mean ± std), the seeds as dots; the
    truth's value (and a guess's) as dashes over each group."""
    names = list(groups)
    width = 0.8 / len(names)
    for k, name in enumerate(names):
        for i, (_, path) in enumerate(metrics):
            values = [dig(r, path) for r in groups[name]]
            mean, std = mean_std(values)
            x = i + k * width
            ax.bar(
                x,
                mean,
                width,
                color=COLORS[k],
                alpha=0.8,
                yerr=None if math.isnan(std) else std,
                capsize=3,
                label=LABELS[name] if i == 0 else None,
            )
            ax.scatter([x] * len(values), values, color="black", s=10, zorder=3)
    for values, color in ((truth, "green"), (guess, "red")):
        for i, value in enumerate(values or []):
            ax.hlines(value, i - width / 2, i + 0.8 - width / 2, colors=color, linestyles="--")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(metrics))], [m for m, _ in metrics])
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="x", labelsize=8)


def plot(path: Path, results: list[dict], oracle: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = by_arm(results, ARMS)
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    _bars(
        axes[0, 0],
        groups,
        [(t, ("tasks", t, "exact_match")) for t in LOW_TASKS],
        "exact match (greedy) on the held-out low-entropy tasks ↑",
        truth=[1.0] * len(LOW_TASKS),
        guess=[guess_exact_match()[t] for t in LOW_TASKS],
    )
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=9)
    _bars(
        axes[0, 1],
        groups,
        [
            ("KL(p‖q)", ("high", "kl")),
            ("within valid", ("high", "kl_valid")),
            ("-log q(valid)", ("high", "neg_log_mass")),
        ],
        "high-entropy tasks: KL to the truth, nats per prompt ↓",
    )
    generated = [(title.replace(": ", ":\n"), path) for title, path, _ in GENERATION]
    _bars(
        axes[1, 0],
        groups,
        [generated[i] for i in (0, 2, 3, 4)],
        "generated answers (share of samples; TV of the valid ones)",
    )
    _bars(
        axes[1, 1],
        groups,
        [
            ("train, low", ("train_token_nll", "low")),
            ("held-out, low", ("low", "token_nll")),
            ("train, high", ("train_token_nll", "high")),
            ("held-out, high", ("high", "token_nll")),
        ],
        "response token NLL: training rows against held-out rows",
        truth=[0.0, 0.0, oracle["high"]["token_nll"], oracle["high"]["token_nll"]],
    )
    save_figure(
        fig,
        path,
        "Instruction Modelling: tiny Llama via `axolotl train`",
        results,
        legend="green dashes: truth, red: a guess",
        rect=(0, 0.04, 1, 1),  # room for the arms' legend below the panels
    )


def write(out: Path, results: list[dict], oracle: dict, settings_: dict) -> str:
    """results.md (the tables), results.json (every number) and results.png; returns the md."""
    return write_results(out, markdown(results, oracle), results, oracle, settings_, ARMS, plot)
