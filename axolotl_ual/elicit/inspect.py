"""`axolotl-ual inspect`: how a scored file's uncertainties turn into label smoothing.

Reads the `ual_*` keys of a training YAML (validated with `UALArgs` alone, not axolotl's whole
schema), builds the same `UncertaintyToEpsilon` mapping training will use (`rank` ranks against
this file's uncertainties), prints quantiles of u and of epsilon and a histogram, and saves a
PNG with both distributions.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

from .. import rows as rowlib
from ..args import EpsilonMapping, MissingUncertainty, UncertaintySource
from ..errors import ExitCode, UsageError
from . import io, report
from .io import DataError
from .output_paths import PNG, Output, check_outputs


def load_ual_config(path: str | Path | None):
    """`UALArgs` from the `ual_*` keys of the YAML at `path` (defaults when None)."""
    from pydantic import ValidationError

    from ..args import UALArgs

    if path is None:
        return UALArgs()
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(f"cannot read the config {path}: {exc}") from None
    if not isinstance(data, dict):
        raise DataError(
            f"{path}: expected a YAML mapping of config keys, got {type(data).__name__}"
        )
    ual = {key: value for key, value in data.items() if key.startswith("ual_")}
    sidecar = ual.get("ual_uncertainty_file")
    if isinstance(sidecar, str) and not Path(sidecar).exists() and (path.parent / sidecar).exists():
        ual["ual_uncertainty_file"] = str(path.parent / sidecar)  # relative to the config
    try:
        return UALArgs.model_validate(ual)
    except ValidationError as exc:
        raise DataError(f"{path}: invalid ual_* settings:\n{exc}") from None


def build_mapping(config, uncertainties: list[float]):
    """The mapping training will use; `rank` ranks against this file's uncertainties."""
    from ..mapping import epsilon_mapping

    def reference() -> list[float]:
        if not uncertainties:
            raise DataError("the rank mapping ranks the file's uncertainties, and it has none")
        return uncertainties

    return epsilon_mapping(config, reference=reference)


def default_png_path(source: str | Path) -> Path:
    """`data/scored.jsonl` -> `data/scored.uncertainty.png`."""
    path = Path(str(source).rstrip("/"))
    stem = path.stem if path.suffix else path.name
    return path.with_name(f"{stem}.uncertainty.png")


def read_uncertainties(
    rows: list[dict[str, Any]], field: str, source: str = "the input"
) -> tuple[list[float], int]:
    """(the valid values, how many rows have none); a bad value is an error naming its row, a
    column no row has an error naming the columns there are."""
    if rows and not any(field in row for row in rows):
        columns = ", ".join(repr(name) for name in io.columns_of(rows))
        raise DataError(f"{source} has no column {field!r} (its columns: {columns}); pass --field")
    values, missing = [], 0
    for index, row in enumerate(rows):
        try:
            value = rowlib.parse_uncertainty(row.get(field))
        except rowlib.InvalidUncertainty as exc:
            raise DataError(f"row {index}: field {field!r}: {exc}") from None
        if value is None:
            missing += 1
        else:
            values.append(value)
    return values, missing


def run_inspect(args) -> int:
    png = Path(args.png) if args.png else default_png_path(args.input)
    try:
        check_outputs([args.input, args.config], [Output("--png", png, PNG)])
        config = load_ual_config(args.config)
        rows = io.read_rows(args.input, split=args.split)
        source = config.ual_uncertainty_source.value
        field = args.field or (
            config.ual_uncertainty_field
            if source == UncertaintySource.field
            else rowlib.SIDECAR_UNCERTAINTY
        )
        values, missing = read_uncertainties(rows, field, source=args.input)
        mapping = build_mapping(config, values)
    except (DataError, UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    import torch

    default_u = config.ual_default_uncertainty
    fills_missing = config.ual_missing_uncertainty == MissingUncertainty.default
    eps_inputs = values + ([default_u] * missing if fills_missing else [])
    eps = mapping(torch.tensor(eps_inputs, dtype=torch.float64)).tolist() if eps_inputs else []

    settings = f"from {args.config}" if args.config else "defaults: no --config given"
    lines = [
        f"{args.input}: {len(rows)} rows, {len(values)} with an uncertainty in {field!r}, {missing} without",
        f"config ({settings}): source {source}, mapping {mapping.kind}"
        + (f" (power {mapping.power})" if mapping.kind == EpsilonMapping.power else "")
        + f", eps from {mapping.eps_min:g} (u=0) to {mapping.eps_max:g} (u=1)",
    ]
    if missing:
        lines.append(
            f"  {missing} rows have no uncertainty: training uses u={default_u:g} for them"
            if fills_missing
            else f"  {missing} rows have no uncertainty: training stops on them "
            "(ual_missing_uncertainty: error); score them, or set ual_missing_uncertainty: default"
        )
    if values:
        lines.append("")
        lines.extend(report.quantile_table({"u": values, "eps": eps}, digits=4))
        lines.append(f"mean eps {math.fsum(eps) / len(eps):.4f}: the average smoothing per sample")
        lines.append("")
        lines.append("histogram of u:")
        lines.extend(report.histogram(values))
    print("\n".join(lines))
    if values:
        title = f"{Path(args.input).name}: {len(values)} scored rows, {missing} null"
        plot_distributions(values, eps, mapping, png, title=title)
        print(f"wrote {png}")
    else:
        print(f"no PNG written: no row has a value in {field!r}")
    return ExitCode.OK


def plot_distributions(values, eps, mapping, path: Path, *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.hist(values, bins=20, range=(0.0, 1.0), color="#4C72B0", edgecolor="white")
    left.set_xlabel("uncertainty u")
    left.set_title("judge uncertainty")
    low, high = mapping.eps_min, mapping.eps_max
    pad = (high - low) * 0.05 or 0.01
    right.hist(eps, bins=20, range=(low - pad, high + pad), color="#DD8452", edgecolor="white")
    right.set_xlabel("label-smoothing epsilon")
    right.set_title(f"epsilon ({mapping.kind}, {low:g} to {high:g})")
    for axis, series in ((left, values), (right, eps)):
        mean = math.fsum(series) / len(series)
        median = report.quantile(sorted(series), 0.5)
        axis.axvline(mean, color="black", linestyle="--", linewidth=1, label=f"mean {mean:.3f}")
        axis.axvline(
            median, color="gray", linestyle=":", linewidth=1.5, label=f"median {median:.3f}"
        )
        axis.set_ylabel("rows")
        axis.yaxis.set_major_locator(MaxNLocator(integer=True))  # whole rows, even for a few
        axis.legend(loc="best", framealpha=0.9)
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with io.atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=120, format="png")
    plt.close(figure)
