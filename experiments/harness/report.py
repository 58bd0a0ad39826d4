"""Aggregating per-run metrics over seeds, and the pieces of a report every experiment writes.

Means and sample standard deviations (ddof = 1) over seeds; differences to a baseline arm are
paired by seed (same training data and data order), which removes the variation the arms
share. Numbers are rounded only when printed (3 decimals in the tables, 6 in results.json), so
the files are the same on every re-run of the same seeds.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

ARROWS = {"higher": "↑", "lower": "↓"}

# (column title, path into a run's metrics, "higher" | "lower" is better)
# KL(p‖q) on high-entropy prompts = the error of the shape among valid answers + -log(mass on them)
KL_SPLIT = [
    ("= KL within valid answers", ("high", "kl_valid"), "lower"),
    ("+ -log q(valid answers)", ("high", "neg_log_mass"), "lower"),
]
GENERATION = [
    ("greedy: exact match, low", ("generation", "greedy", "low", "exact_match"), "higher"),
    ("greedy: valid, high", ("generation", "greedy", "high", "valid"), "higher"),
    ("sampled: exact match, low", ("generation", "sample", "low", "exact_match"), "higher"),
    ("sampled: valid, high", ("generation", "sample", "high", "valid"), "higher"),
    ("sampled: TV among valid, high", ("generation", "sample", "high", "tv_valid"), "lower"),
    ("top-p 0.9: exact match, low", ("generation", "top_p", "low", "exact_match"), "higher"),
    ("top-p 0.9: valid, high", ("generation", "top_p", "high", "valid"), "higher"),
    ("top-p 0.9: TV among valid, high", ("generation", "top_p", "high", "tv_valid"), "lower"),
]


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


def axolotl_logs(model_dir: Path) -> dict:
    """What axolotl logged (trainer_state.json of the final checkpoint): the last training
    loss (the objective each arm optimizes) and the final eval metrics of the plugin."""
    checkpoints = sorted(
        Path(model_dir).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1])
    )
    history = json.loads((checkpoints[-1] / "trainer_state.json").read_text())["log_history"]
    losses = [r for r in history if "loss" in r]
    evals = [r for r in history if "eval_ual_nll" in r]
    final_eval = {k: v for k, v in evals[-1].items() if k.startswith("eval_ual_")} if evals else {}
    return {
        "final_loss": losses[-1]["loss"],
        "ual_epsilon_mean": losses[-1].get("ual_epsilon_mean"),
        "ual_instruction_fraction": losses[-1].get("ual_instruction_fraction"),
        "steps": history[-1].get("step"),
        "eval": final_eval,
    }


def by_arm(results: list[dict], arm_names) -> dict[str, list[dict]]:
    """The runs of each arm (in `arm_names` order), sorted by seed; arms without runs left out."""
    grouped: dict[str, list[dict]] = {}
    for name in arm_names:
        runs = sorted((r for r in results if r["arm"] == name), key=lambda r: r["seed"])
        if runs:
            grouped[name] = runs
    return grouped


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table (first column left-aligned, the others right-aligned) and a blank line."""
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
    ]


def header(columns) -> list[str]:
    return ["arm"] + [f"{title} {ARROWS[better]}" for title, _, better in columns]


def cell(runs: list[dict], path: tuple[str, ...]) -> str:
    """Mean ± std over `runs` of the value at `path`; "–" where a run has none (e.g. the
    instruction-token metrics of an arm that does not train instructions, or the TV among valid
    answers when no prompt got a valid one)."""
    try:
        values = [dig(r, path) for r in runs]
    except KeyError:
        return "–"
    if any(v is None or math.isnan(v) for v in values):
        return "–"
    return fmt(values)


def arm_rows(groups: dict[str, list[dict]], labels: dict[str, str], columns) -> list[list[str]]:
    """One row per arm: mean ± std over its seeds of each column."""
    return [
        [labels[name]] + [cell(runs, column[1]) for column in columns]
        for name, runs in groups.items()
    ]


def paired_rows(
    groups: dict[str, list[dict]], labels: dict[str, str], columns, baseline: str
) -> list[list[str]]:
    """One row per arm other than `baseline`: mean ± std over seeds of (arm − baseline)."""
    base = {r["seed"]: r for r in groups[baseline]}
    rows = []
    for name, runs in groups.items():
        if name == baseline:
            continue
        paired = [r for r in runs if r["seed"] in base]
        rows.append(
            [labels[name]]
            + [
                fmt_signed([dig(r, column[1]) - dig(base[r["seed"]], column[1]) for r in paired])
                for column in columns
            ]
        )
    return rows


def generation_tables(
    groups: dict[str, list[dict]], labels: dict[str, str], truth: dict, baseline: str
) -> list[str]:
    """The generation-level tables: per arm, and paired against `baseline`.

    `truth` is `generation.truth_samples` of the test split: the truth sampled as often as the
    models (the finite-sample floor of TV); its greedy answer is always valid and right, and
    its nucleus is not computed."""
    lines = ["**Generated answers** (share of samples; TV in [0, 1])", ""]
    rows = arm_rows(groups, labels, GENERATION)
    sampled = {
        ("generation", "sample", "low", "exact_match"): number(truth["low"]["exact_match"]),
        ("generation", "sample", "high", "valid"): number(truth["high"]["valid"]),
        ("generation", "sample", "high", "tv_valid"): number(truth["high"]["tv_valid"]),
        ("generation", "greedy", "low", "exact_match"): "1.000",
        ("generation", "greedy", "high", "valid"): "1.000",
    }
    rows.append(["truth (sampled)"] + [sampled.get(path, "") for _, path, _ in GENERATION])
    lines += table(header(GENERATION), rows)
    if baseline in groups and len(groups) > 1:
        lines += [f"**Generated answers, difference to {labels[baseline]}, paired by seed**", ""]
        lines += table(header(GENERATION), paired_rows(groups, labels, GENERATION, baseline))
    return lines


def run_settings(template: Path, arms: dict, seeds, max_steps, scale, **extra) -> dict:
    """What results.json records of a run: seeds, arms' keys, steps, split scale, `extra`, the
    training settings of the config template and the environment."""
    import yaml

    cfg = yaml.safe_load(Path(template).read_text())
    training = ("learning_rate", "lr_scheduler", "warmup_steps", "micro_batch_size")
    return {
        "seeds": list(seeds),
        "arms": arms,
        "max_steps": max_steps or cfg["max_steps"],
        "split_scale": scale,
        **extra,
        "training": {k: cfg[k] for k in (*training, "optimizer", "weight_decay")},
        "environment": environment(),
    }


def environment() -> dict:
    """What the numbers depend on besides the code and seeds: the package versions and the CPU.
    The same code gave other training numbers on another CPU type (float rounding in the
    kernels, compounded over hundreds of steps; see experiments/README.md)."""
    import platform
    from importlib.metadata import version

    import torch

    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if "model name" in line)
    except (OSError, StopIteration):
        cpu = platform.processor()
    packages = ("torch", "transformers", "axolotl", "tokenizers", "numpy")
    return {
        "python": platform.python_version(),
        **{name: version(name) for name in packages},
        "cpu": cpu,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def rounded(value):
    """`value` with every float rounded to 6 decimals (NaN -> null), for results.json."""
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 6)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(rounded(payload), indent=1) + "\n")


def save_figure(
    fig, path: Path, title: str, results: list[dict], legend: str = "", rect=None
) -> None:
    """Title a matplotlib figure of bars over seeds (with the seeds of `results` and what its
    marks mean: "bars: mean ± std, dots: seeds" and `legend`), lay it out within `rect` and
    save it (no timestamp or version in the PNG, so a re-run writes the same bytes)."""
    import matplotlib.pyplot as plt

    seeds = sorted({r["seed"] for r in results})
    marks = ", ".join(filter(None, ["bars: mean ± std, dots: seeds", legend]))
    fig.suptitle(f"{title}, seeds {seeds} ({marks})", fontsize=11)
    fig.tight_layout(rect=rect)
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


def write_results(
    out: Path,
    text: str,
    results: list[dict],
    reference: dict,
    settings: dict,
    arm_names,
    plot,
    reference_name: str = "oracle",
) -> str:
    """results.md (`text`), results.json (settings, the reference's metrics under
    `reference_name`, e.g. the truth's or the base model's, and every run, in arm and seed
    order) and results.png (`plot(path, results, reference)`); returns `text`."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(text)
    order = list(arm_names)
    runs = sorted(results, key=lambda r: (order.index(r["arm"]), r["seed"]))
    write_json(
        out / "results.json", {"settings": settings, reference_name: reference, "runs": runs}
    )
    plot(out / "results.png", results, reference)
    return text
