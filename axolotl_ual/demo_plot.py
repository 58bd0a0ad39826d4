"""The PNG `axolotl-ual demo` draws: the run's losses, and the eval NLL by uncertainty bucket.

Input: the training and eval records `demo.Progress` collected (HF's logged metric dicts, each
with the optimizer `step` it was logged at).
"""

from __future__ import annotations

from pathlib import Path

from .demo import bucket_values


def plot_run(train: list[dict], evals: list[dict], path: Path, *, title: str) -> Path:
    """Left: training loss per step, eval loss and unsmoothed eval NLL. Right: eval NLL per
    uncertainty bucket over the evals. Written atomically to `path` (PNG); returns `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from .elicit.io import atomic_path

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    if train:
        left.plot(
            _steps(train),
            _values(train, "loss"),
            marker="o",
            markersize=3,
            label="training loss (smoothed)",
        )
    if evals:
        left.plot(
            _steps(evals), _values(evals, "eval_loss"), marker="s", label="eval loss (smoothed)"
        )
        if any("eval_ual_nll" in e for e in evals):
            left.plot(
                _steps(evals),
                _values(evals, "eval_ual_nll"),
                marker="^",
                linestyle="--",
                label="eval NLL (unsmoothed)",
            )
    left.set_title("loss")
    left.set_xlabel("optimizer step")
    left.set_ylabel("nats per token")

    names = list(bucket_values(evals[-1], "eval_ual_nll")) if evals else []
    tokens = bucket_values(evals[-1], "eval_ual_tokens") if evals else {}
    for name in names:
        count = tokens.get(name)
        label = f"{name} u" + (f" ({count:.0f} tokens)" if isinstance(count, float) else "")
        right.plot(_steps(evals), _values(evals, f"eval_ual_nll_{name}"), marker="o", label=label)
    if not names:
        right.text(
            0.5, 0.5, "no bucketed eval logged", ha="center", va="center", transform=right.transAxes
        )
    right.set_title("eval NLL (unsmoothed) by the sample's uncertainty")
    right.set_xlabel("optimizer step")
    right.set_ylabel("nats per token")
    for axis in (left, right):
        if axis.get_legend_handles_labels()[0]:
            axis.legend(loc="best", framealpha=0.9)
        axis.grid(alpha=0.3)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    figure.suptitle(title)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=120, format="png")
    plt.close(figure)
    return path


def _steps(records: list[dict]) -> list[int]:
    return [r["step"] for r in records]


def _values(records: list[dict], key: str) -> list[float]:
    return [r[key] if isinstance(r.get(key), float) else float("nan") for r in records]
