"""Aggregate the per-run metrics over seeds and write results.md, results.json and results.png.

Means ± sample standard deviations over seeds and paired differences to SFT, as described in
`experiments/harness/report.py`.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..harness.report import (
    KL_SPLIT,
    arm_rows,
    by_arm,
    dig,
    fmt,
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
from .tasks import H_MAX, HIGH_TASKS, LOW_TASKS

LABELS = {name: arm.label for name, arm in ARMS.items()}

# (column title, path into a run's metrics, "higher" | "lower" is better)
MAIN = [
    ("low-entropy exact match", ("low", "exact_match"), "higher"),
    ("high-entropy KL(p‖q)", ("high", "kl"), "lower"),
    *KL_SPLIT,
    ("ECE, all tokens", ("all", "ece"), "lower"),
    ("ECE, low", ("low", "ece"), "lower"),
    ("ECE, high", ("high", "ece"), "lower"),
]
CONTEXT = [
    ("high-entropy CE", ("high", "ce")),
    ("q mass on valid answers (high)", ("high", "support_mass")),
    ("held-out token NLL, low", ("low", "token_nll")),
    ("held-out token NLL, high", ("high", "token_nll")),
    ("train token NLL, low", ("train_token_nll", "low")),
    ("train token NLL, high", ("train_token_nll", "high")),
    ("final train loss (as trained)", ("axolotl", "final_loss")),
]


def ranks(values: list[float]) -> list[float]:
    """1-based ranks, ties sharing their mean rank."""
    order = sorted(range(len(values)), key=values.__getitem__)
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(x: list[float], y: list[float]) -> float:
    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    var = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    return cov / var if var else math.nan


def elicitation_summary(rows: list[dict]) -> dict:
    """How the judge's u relates to the truth on a training split: per task mean u and the
    rank correlation with the known u (H / H_MAX; rank is what `ual_mapping: rank` uses)."""
    elicited = [r["uncertainty"] for r in rows]
    known = [r["entropy"] / H_MAX for r in rows]
    per_task = {}
    for task in (*LOW_TASKS, *HIGH_TASKS):
        values = [r["uncertainty"] for r in rows if r["task"] == task]
        per_task[task] = sum(values) / len(values) if values else math.nan
    return {
        "spearman_known": spearman(elicited, known),
        "mean_u_by_task": per_task,
        "scored": sum(v is not None for v in elicited),
        "rows": len(rows),
    }


# ---------------------------------------------------------------------- tables


def markdown(results: list[dict], oracle: dict) -> str:
    groups = by_arm(results, ARMS)
    seeds = sorted({r["seed"] for r in results})
    lines = [f"Held-out test split; mean ± std over seeds {', '.join(map(str, seeds))}.", ""]
    main_header = header(MAIN)

    lines += ["**Main metrics**", ""]
    rows = arm_rows(groups, LABELS, MAIN)
    rows.append(["truth (oracle)"] + [number(dig(oracle, path)) for _, path, _ in MAIN])
    lines += table(main_header, rows)

    if "sft" in groups and len(groups) > 1:
        lines += ["**Difference to SFT, paired by seed** (arm minus SFT)", ""]
        lines += table(main_header, paired_rows(groups, LABELS, MAIN, "sft"))

    if all("generation" in r for r in results):
        lines += generation_tables(groups, LABELS, oracle["generation_truth"], "sft")

    lines += ["**Context**", ""]
    rows = arm_rows(groups, LABELS, CONTEXT)
    truth = {
        ("high", "ce"): number(dig(oracle, ("high", "ce"))),
        ("high", "support_mass"): "1.000",
        ("low", "token_nll"): "0.000",
        ("high", "token_nll"): number(dig(oracle, ("high", "token_nll"))),
    }
    rows.append(["truth (oracle)"] + [truth.get(path, "") for _, path in CONTEXT])
    lines += table(["arm"] + [title for title, _ in CONTEXT], rows)

    lines += [
        "**Per task**: exact match (low-entropy tasks), KL(p‖q) in nats (high-entropy tasks)",
        "",
    ]
    rows = []
    for name, runs in groups.items():
        rows.append(
            [LABELS[name]]
            + [fmt([r["tasks"][t]["exact_match"] for r in runs]) for t in LOW_TASKS]
            + [fmt([r["tasks"][t]["kl"] for r in runs]) for t in HIGH_TASKS]
        )
    entropies = [number(oracle["tasks"][t]["entropy"]) for t in HIGH_TASKS]
    rows.append([r"H(Y\|x) of the task"] + [""] * len(LOW_TASKS) + entropies)
    lines += table(["arm"] + [f"{t} EM" for t in LOW_TASKS] + [f"{t} KL" for t in HIGH_TASKS], rows)

    elicited = [r for r in results if "elicitation" in r]
    if elicited:
        lines += [
            "**The judge's uncertainty** (entropy method) on the training splits: mean u "
            "per task, and its rank correlation with the known u",
            "",
        ]
        tasks = (*LOW_TASKS, *HIGH_TASKS)
        rows = [
            ["known u = H / H_MAX"]
            + [number(oracle["tasks"][t].get("entropy", 0.0) / H_MAX) for t in tasks]
            + ["1"]
        ]
        rows.append(
            ["elicited u"]
            + [fmt([r["elicitation"]["mean_u_by_task"][t] for r in elicited]) for t in tasks]
            + [fmt([r["elicitation"]["spearman_known"] for r in elicited])]
        )
        lines += table(["u", *list(tasks), "Spearman vs known"], rows)
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------------- plot


def plot(path: Path, results: list[dict], oracle: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = by_arm(results, ARMS)
    names = list(groups)
    labels = [ARMS[n].label.replace(", ", ",\n") for n in names]
    colors = ["#7f7f7f", "#1f77b4", "#d62728", "#ff7f0e"][: len(names)]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    panels = [
        (axes[0, 0], ("low", "exact_match"), "exact match (greedy), low-entropy tasks ↑", 1.0),
        (axes[0, 1], ("high", "kl"), "KL(p‖q) nats per prompt, high-entropy tasks ↓", 0.0),
        (
            axes[1, 0],
            ("all", "ece"),
            "token-level ECE, all held-out tokens ↓",
            dig(oracle, ("all", "ece")),
        ),
    ]
    for ax, metric, title, truth in panels:
        for x, name in enumerate(names):
            values = [dig(r, metric) for r in groups[name]]
            mean, std = mean_std(values)
            if metric == ("high", "kl"):  # split: shape among valid answers + mass elsewhere
                leak = mean_std([dig(r, ("high", "neg_log_mass")) for r in groups[name]])[0]
                ax.bar(x, mean - leak, color=colors[x], alpha=0.8)
                ax.bar(
                    x,
                    leak,
                    bottom=mean - leak,
                    color=colors[x],
                    alpha=0.35,
                    hatch="//",
                    yerr=None if math.isnan(std) else std,
                    capsize=4,
                )
            else:
                ax.bar(
                    x,
                    mean,
                    color=colors[x],
                    alpha=0.8,
                    yerr=None if math.isnan(std) else std,
                    capsize=4,
                )
            ax.scatter([x] * len(values), values, color="black", s=12, zorder=3)
        ax.axhline(truth, color="green", linestyle="--", linewidth=1, label="truth (oracle)")
        if metric == ("high", "kl"):
            ax.bar(0, 0, color="#bbbbbb", label="KL within valid answers")
            ax.bar(
                0, 0, color="white", edgecolor="black", hatch="//", label="-log q(valid answers)"
            )
        ax.set_xticks(range(len(names)), labels, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8, loc="lower right" if metric[1] == "exact_match" else "upper left")
    ax = axes[1, 1]
    width = 0.8 / len(names)
    for k, name in enumerate(names):
        means = [mean_std([r["tasks"][t]["kl"] for r in groups[name]]) for t in HIGH_TASKS]
        ax.bar(
            [i + k * width for i in range(len(HIGH_TASKS))],
            [m for m, _ in means],
            width,
            yerr=[0 if math.isnan(s) else s for _, s in means],
            capsize=2,
            color=colors[k],
            alpha=0.8,
            label=ARMS[name].label,
        )
    ax.set_xticks(
        [i + 0.4 - width / 2 for i in range(len(HIGH_TASKS))],
        [f"{t}\nH={oracle['tasks'][t]['entropy']:.2f}" for t in HIGH_TASKS],
        fontsize=8,
    )
    ax.set_title("KL(p‖q) per high-entropy task ↓", fontsize=10)
    ax.legend(fontsize=8)
    save_figure(fig, path, "Uncertainty mixture: tiny Llama via `axolotl train`", results)


# ---------------------------------------------------------------------- files


def write(out: Path, results: list[dict], oracle: dict, settings_: dict) -> str:
    """results.md (the tables), results.json (every number) and results.png; returns the md."""
    return write_results(out, markdown(results, oracle), results, oracle, settings_, ARMS, plot)
