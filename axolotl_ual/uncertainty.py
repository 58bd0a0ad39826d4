"""Each raw row's uncertainty, read and validated before tokenization.

Runs on the whole raw dataset at once (not row by row inside `datasets.map`), so a bad value is
reported with its row index, and every bad row is reported at preprocessing time instead of a
crash in the middle of training. No axolotl imports.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .args import MissingUncertainty, UncertaintySource, data_settings
from .errors import DataError
from .rows import (
    SIDECAR_KEY,
    SIDECAR_UNCERTAINTY,
    InvalidUncertainty,
    parse_uncertainty,
    sample_key,
)

MAX_REPORTED_ROWS = 5


class UncertaintyDataError(DataError):
    """Rows whose uncertainty is missing or invalid; the message names dataset, rows and values."""


@dataclass(frozen=True)
class UncertaintySettings:
    """The `ual_*` keys that decide each row's uncertainty (defaults: `UALArgs`)."""

    source: UncertaintySource
    field: str
    file: str | None
    missing: MissingUncertainty
    default: float

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any]) -> UncertaintySettings:
        ual = data_settings(cfg)
        return cls(
            source=ual.ual_uncertainty_source,
            field=ual.ual_uncertainty_field,
            file=ual.ual_uncertainty_file,
            missing=ual.ual_missing_uncertainty,
            default=ual.ual_default_uncertainty,
        )


@dataclass(frozen=True)
class ResolvedUncertainties:
    """One uncertainty per row, and how many rows had none and took `ual_default_uncertainty`."""

    values: list[float]
    defaulted: int
    where: str  # where the values came from, for messages

    def default_report(self, dataset_name: str, default: float) -> tuple[str, bool] | None:
        """(message, loud) about rows that fell back to the default, or None if none did.

        Loud when most rows did: the run then trains as (nearly) constant label smoothing.
        """
        if not self.defaulted:
            return None
        total = len(self.values)
        share = self.defaulted / total
        message = (
            f"dataset {dataset_name!r}: {self.defaulted} of {total} rows ({share:.0%}) have no "
            f"uncertainty in {self.where} and use ual_default_uncertainty={default:g}"
        )
        loud = share > 0.5
        if loud:
            message += (
                " -- so this dataset trains with (nearly) one constant smoothing; score it with "
                "`axolotl-ual elicit`, or check ual_uncertainty_field / the sidecar"
            )
        return message, loud


def resolve_uncertainties(
    rows: Any,
    settings: UncertaintySettings,
    *,
    dataset_name: str,
    content_fields: tuple[str, ...],
) -> ResolvedUncertainties:
    """One validated uncertainty per row of `rows` (a `datasets.Dataset`).

    Raises `UncertaintyDataError` listing the offending rows (0-based index and value).
    """
    n_rows = len(rows)
    if settings.source == UncertaintySource.constant:
        # Plain label smoothing needs no uncertainty. If the rows have one anyway, keep it for
        # the uncertainty-bucketed eval metrics; anything unusable becomes NaN (no bucket).
        where = f"field {settings.field!r}"
        if settings.field not in rows.column_names:
            return ResolvedUncertainties([math.nan] * n_rows, 0, where)
        return ResolvedUncertainties([_lenient(v) for v in rows[settings.field]], 0, where)
    if settings.source == UncertaintySource.sidecar:
        annotations = load_sidecar(settings.file)
        keys = _sample_keys(rows, content_fields)
        values = (annotations.get(key) for key in keys)
        where = f"the sidecar file {settings.file!r} (joined by sample content)"
        missing_text = "no annotation for this sample"
    elif settings.field in rows.column_names:
        values = rows[settings.field]
        where = f"field {settings.field!r}"
        missing_text = "missing (null)"
    elif settings.missing == MissingUncertainty.default:
        where = f"field {settings.field!r} (the dataset has no such column)"
        return ResolvedUncertainties([settings.default] * n_rows, n_rows, where)
    else:
        raise UncertaintyDataError(
            f"dataset {dataset_name!r} has no column {settings.field!r} "
            f"(ual_uncertainty_field); its columns are {rows.column_names}. Score it with "
            "`axolotl-ual elicit`, point ual_uncertainty_field at the right column, or set "
            "ual_missing_uncertainty: default"
        )
    resolved, defaulted = _validated(
        values, settings, dataset_name=dataset_name, where=where, missing_text=missing_text
    )
    return ResolvedUncertainties(resolved, defaulted, where)


def _lenient(raw: Any) -> float:
    try:
        value = parse_uncertainty(raw)
    except InvalidUncertainty:
        return math.nan
    return math.nan if value is None else value


def _validated(
    values: Iterable[Any], settings, *, dataset_name: str, where: str, missing_text: str
) -> tuple[list[float], int]:
    """(the values, with missing ones defaulted; how many were defaulted), or the error."""
    resolved: list[float] = []
    problems: list[tuple[int, str]] = []
    n_missing = 0
    for index, raw in enumerate(values):
        try:
            value = parse_uncertainty(raw)
        except InvalidUncertainty as exc:
            problems.append((index, str(exc)))
            resolved.append(math.nan)
            continue
        if value is None:
            value = settings.default
            n_missing += 1
            if settings.missing != MissingUncertainty.default:
                problems.append((index, missing_text))
        resolved.append(value)

    if problems:
        hint = (
            "Missing values can fall back to ual_default_uncertainty with "
            "ual_missing_uncertainty: default."
            if n_missing
            else ""
        )
        raise UncertaintyDataError(
            bad_rows_message(
                problems,
                dataset_name=dataset_name,
                what=f"valid uncertainty in {where}",
                rule="each value must be a number in [0, 1]",
                hint=hint,
            )
        )
    return resolved, n_missing


def bad_rows_message(
    problems: list[tuple[int, str]], *, dataset_name: str, what: str, rule: str, hint: str = ""
) -> str:
    """'dataset d: 3 row(s) have no <what> (rows are 0-based; <rule>): row 2: ...; ...'"""
    shown = "; ".join(f"row {i}: {text}" for i, text in problems[:MAX_REPORTED_ROWS])
    more = len(problems) - MAX_REPORTED_ROWS
    return (
        f"dataset {dataset_name!r}: {len(problems)} row(s) have no {what} (rows are 0-based; "
        f"{rule}): {shown}"
        + (f"; and {more} more" if more > 0 else "")
        + "."
        + (f" {hint}" if hint else "")
    )


def _sample_keys(rows: Any, content_fields: tuple[str, ...]) -> list[str]:
    present = [f for f in content_fields if f in rows.column_names]
    if not present:
        raise UncertaintyDataError(
            f"cannot join sidecar annotations: the dataset has none of the content fields "
            f"{list(content_fields)} (columns: {rows.column_names})"
        )
    keys: list[str] = []
    for batch in rows.select_columns(present).iter(batch_size=1000):
        for i in range(len(batch[present[0]])):
            keys.append(sample_key({f: batch[f][i] for f in present}, present))
    return keys


_SIDECAR_CACHE: dict[tuple[str, int, int], dict[str, Any]] = {}


def load_sidecar(path: str | None) -> dict[str, Any]:
    """`{sample_key: raw uncertainty}` from a JSONL sidecar file (as `axolotl-ual elicit` writes)."""
    if not path:
        raise UncertaintyDataError("ual_uncertainty_source: sidecar needs ual_uncertainty_file")
    stat = Path(path).stat()
    cache_key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if cache_key not in _SIDECAR_CACHE:
        _SIDECAR_CACHE.clear()
        _SIDECAR_CACHE[cache_key] = _read_sidecar(path)
    return _SIDECAR_CACHE[cache_key]


def _read_sidecar(path: str) -> dict[str, Any]:
    annotations: dict[str, Any] = {}
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                key, value = record[SIDECAR_KEY], record.get(SIDECAR_UNCERTAINTY)
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise UncertaintyDataError(
                    f"sidecar {path!r} line {line_no}: expected a JSON object with "
                    f"{SIDECAR_KEY!r} and {SIDECAR_UNCERTAINTY!r} ({exc})"
                ) from exc
            if key in annotations and annotations[key] != value:
                raise UncertaintyDataError(
                    f"sidecar {path!r} line {line_no}: sample {key} appears twice with different "
                    f"uncertainties ({annotations[key]!r} and {value!r})"
                )
            annotations[key] = value
    return annotations
