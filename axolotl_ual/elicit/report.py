"""Plain-text statistics shared by the `elicit` summary and `inspect`: quantile tables and
histograms that read well in a terminal and a log file."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

QUANTILES = (
    ("min", 0.0),
    ("p10", 0.1),
    ("p25", 0.25),
    ("p50", 0.5),
    ("p75", 0.75),
    ("p90", 0.9),
    ("max", 1.0),
)
BAR = "\u2588"


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not sorted_values:
        return math.nan
    position = q * (len(sorted_values) - 1)
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def describe(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values)
    stats = {
        "n": float(len(ordered)),
        "mean": math.fsum(ordered) / len(ordered) if ordered else math.nan,
    }
    stats.update((name, quantile(ordered, q)) for name, q in QUANTILES)
    return stats


def quantile_table(columns: Mapping[str, Sequence[float]], digits: int = 3) -> list[str]:
    """One line per named series: n, mean and the quantiles of `QUANTILES`."""
    names = ["n", "mean", *(name for name, _ in QUANTILES)]
    label_width = max(len(label) for label in columns) if columns else 0
    width = digits + 4
    lines = [" " * label_width + "".join(f"{name:>{width}}" for name in names)]
    for label, values in columns.items():
        stats = describe(values)
        cells = [f"{int(stats['n']):>{width}d}"]
        cells += [f"{stats[name]:>{width}.{digits}f}" for name in names[1:]]
        lines.append(f"{label:<{label_width}}" + "".join(cells))
    return lines


def histogram(
    values: Sequence[float], bins: int = 10, low: float = 0.0, high: float = 1.0, width: int = 40
) -> list[str]:
    """Bars of counts over `bins` equal bins of [low, high] (the last bin includes `high`)."""
    counts = [0] * bins
    span = (high - low) or 1.0
    for value in values:
        counts[min(max(int((value - low) / span * bins), 0), bins - 1)] += 1
    top = max(counts) if counts and max(counts) else 1
    lines = []
    for index, count in enumerate(counts):
        left = low + span * index / bins
        right = low + span * (index + 1) / bins
        bracket = "]" if index == bins - 1 else ")"
        bar = BAR * (round(count / top * width) if count else 0)
        lines.append(f"[{left:.2f}, {right:.2f}{bracket} {bar} {count}")
    return lines
