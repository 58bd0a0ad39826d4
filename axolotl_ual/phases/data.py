"""The rows each phase trains on: its own datasets, uncertainty buckets and replay samples.

Replay and uncertainty buckets are written as files into the phase's folder (`data/`); each gets
a dataset entry that copies every option of the entry its rows came from (`type:`,
`field_messages`, roles, ...) with the new `path`, so the rows are tokenized exactly as they
were in the phase that introduced them.

- Replay of `count: k` (or `fraction: f`, k = round(f x N), at least 1) of an earlier phase
  whose entries hold N rows in all: k is split over the entries in proportion to their sizes
  (largest remainder, so the parts add up to k exactly), and each entry's rows are drawn
  without replacement by a generator seeded with the recipe's `replay_seed` and the names of
  the phases and the entry, so the same recipe always replays the same rows. A phase's data is
  what it introduces (its `datasets`), not what it replayed itself.
- `split_by_uncertainty` puts each row in the bucket of its `u` (the row's `field`): bucket i
  holds boundaries[i-1] <= u < boundaries[i] (a u equal to a boundary goes up), boundaries
  given or taken at the data's quantiles. Missing u: an error naming the rows (default), or
  the first or last bucket (`missing: first | last`). Invalid u (not a number in [0, 1]):
  always an error.
"""

from __future__ import annotations

import bisect
import math
import random
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..elicit.io import read_rows, write_rows
from ..errors import DataError
from ..rows import InvalidUncertainty, parse_uncertainty
from .recipe import PhasePlan, Recipe, ReplaySource, Split

# keys of a dataset entry that say where its rows come from (replaced by the new file's path)
SOURCE_KEYS = (
    "path",
    "data_files",
    "split",
    "name",
    "revision",
    "ds_type",
    "shards",
    "shards_idx",
    "preprocess_shards",
)
KEPT_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
MAX_LISTED = 5


@dataclass
class Part:
    """Rows of one dataset entry that a phase introduces."""

    entry: dict[str, Any]
    rows: list[dict[str, Any]] | None = None  # None: read from `entry` when first needed


@dataclass
class PhaseData:
    """What one phase trains on, and the files to write for it."""

    entries: list[dict[str, Any]]  # the `datasets:` of its config
    files: list[tuple[Path, list[dict[str, Any]]]] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)

    def write(self) -> None:
        for path, rows in self.files:
            write_rows(rows, path)


def round_half_up(value: float) -> int:
    return math.floor(value + 0.5)


def replay_count(share, total: int) -> int:
    """Rows to replay out of `total`: the count, or round(fraction x total), at least 1."""
    if share.count is not None:
        return share.count
    return max(1, round_half_up(share.fraction * total))


def allocate(sizes: list[int], k: int) -> list[int]:
    """Split k over parts of these sizes in proportion (largest remainder; sums to k)."""
    total = sum(sizes)
    if not 0 <= k <= total:
        raise ValueError(f"cannot take {k} of {total}")
    if total == 0:
        return [0] * len(sizes)
    quotas = [k * n / total for n in sizes]
    parts = [math.floor(q) for q in quotas]
    order = sorted(range(len(sizes)), key=lambda i: (-(quotas[i] - parts[i]), i))
    for i in order[: k - sum(parts)]:
        parts[i] += 1
    return parts


def sample_indices(n: int, k: int, seed: str) -> list[int]:
    """k of range(n) without replacement, reproducibly from the string `seed`, in order."""
    return sorted(random.Random(seed).sample(range(n), k))


def derived_entry(entry: dict[str, Any], path: Path) -> dict[str, Any]:
    """`entry`'s options with its rows now read from `path`."""
    return {"path": str(path), **{k: v for k, v in entry.items() if k not in SOURCE_KEYS}}


def output_name(entry: dict[str, Any], prefix: str) -> str:
    source = Path(str(entry["path"]))
    suffix = source.suffix.lower() if source.suffix.lower() in KEPT_SUFFIXES else ".jsonl"
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", source.stem if source.suffix else source.name)
    return f"{prefix}-{stem}{suffix}"


def read_entry(entry: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """Every row of a dataset entry's `path` (a file, a save_to_disk folder, a hub dataset)."""
    unsupported = [k for k in ("data_files", "name") if entry.get(k) is not None]
    if unsupported:
        raise DataError(
            f"{where}: dataset {entry['path']!r}: replay and split_by_uncertainty read the rows "
            f"of `path` and do not support {', '.join(unsupported)}; point `path` at the file"
        )
    try:
        return read_rows(entry["path"], split=entry.get("split") or "train")
    except DataError as exc:
        raise DataError(f"{where}: {exc}") from None


def bucket_of(value: float, boundaries: list[float]) -> int:
    return bisect.bisect_right(boundaries, value)


def split_boundaries(split: Split, values: list[float], where: str) -> list[float]:
    if split.boundaries is not None:
        return list(split.boundaries)
    if len(values) < split.quantiles:
        raise DataError(
            f"{where}: split_by_uncertainty.quantiles: {split.quantiles} buckets need at least "
            f"{split.quantiles} rows with an uncertainty, found {len(values)}"
        )
    return statistics.quantiles(values, n=split.quantiles, method="inclusive")


def assign_buckets(parts: list[Part], split: Split, where: str) -> tuple[list[float], list]:
    """(boundaries, per part the 0-based bucket of each row)."""
    values: list[list[float | None]] = []
    bad: list[str] = []
    missing: list[str] = []
    for part in parts:
        column = []
        for index, row in enumerate(part.rows):
            try:
                value = parse_uncertainty(row.get(split.field))
            except InvalidUncertainty as exc:
                bad.append(f"{part.entry['path']} row {index}: {exc}")
                value = None
            else:
                if value is None:
                    missing.append(f"{part.entry['path']} row {index}")
            column.append(value)
        values.append(column)
    if bad:
        raise DataError(
            f"{where}: split_by_uncertainty.field {split.field!r}: {len(bad)} row(s) with an "
            f"invalid uncertainty (rows are 0-based; each must be a number in [0, 1]): "
            + "; ".join(bad[:MAX_LISTED])
            + (" ..." if len(bad) > MAX_LISTED else "")
        )
    if missing and split.missing == "error":
        raise DataError(
            f"{where}: split_by_uncertainty.field {split.field!r}: {len(missing)} row(s) have no "
            "uncertainty (rows are 0-based): "
            + ", ".join(missing[:MAX_LISTED])
            + (" ..." if len(missing) > MAX_LISTED else "")
            + ". Score them (`axolotl-ual elicit`), drop them, or place them with "
            "split_by_uncertainty.missing: first | last"
        )
    boundaries = split_boundaries(split, [v for c in values for v in c if v is not None], where)
    place_missing = 0 if split.missing == "first" else len(boundaries)
    buckets = [
        [place_missing if v is None else bucket_of(v, boundaries) for v in column]
        for column in values
    ]
    return boundaries, buckets


class DataPlanner:
    """Works out every phase's data in training order (each phase may replay earlier ones)."""

    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        self.own: dict[str, list[Part]] = {}  # plan name -> the rows it introduces
        self._splits: dict[str, tuple[list[float], list[Part], list]] = {}
        self._read: dict[tuple[str, str], list[dict[str, Any]]] = {}

    def rows(self, part: Part, where: str) -> list[dict[str, Any]]:
        if part.rows is None:
            key = (str(part.entry["path"]), str(part.entry.get("split") or "train"))
            if key not in self._read:
                self._read[key] = read_entry(part.entry, where)
            part.rows = self._read[key]
        return part.rows

    def plan(self, plan: PhasePlan, phase_dir: Path) -> PhaseData:
        where = f"phase {plan.name!r}"
        data_dir = phase_dir / "data"
        data = PhaseData(entries=[])
        if plan.bucket is None:
            own = [Part(dict(entry)) for entry in plan.config["datasets"]]
            data.entries.extend(part.entry for part in own)
        else:
            own = self._bucket_parts(plan, data_dir, data, where)
        self.own[plan.name] = own
        replayed = [self._replay(plan, source, data_dir, data, where) for source in plan.replay]
        if replayed:
            data.report["replay"] = replayed
        return data

    def _bucket_parts(self, plan: PhasePlan, data_dir: Path, data: PhaseData, where: str):
        split = plan.bucket.split
        if plan.source not in self._splits:
            parts = [Part(dict(entry)) for entry in plan.config["datasets"]]
            for part in parts:
                self.rows(part, where)
            boundaries, buckets = assign_buckets(parts, split, f"phase {plan.source!r}")
            self._splits[plan.source] = (boundaries, parts, buckets)
        boundaries, parts, buckets = self._splits[plan.source]
        number = plan.bucket.number
        low = boundaries[number - 2] if number > 1 else 0.0
        high = boundaries[number - 1] if number <= len(boundaries) else 1.0
        own = []
        for index, (part, column) in enumerate(zip(parts, buckets, strict=True)):
            rows = [row for row, b in zip(part.rows, column, strict=True) if b == number - 1]
            if rows:
                path = data_dir / output_name(part.entry, f"{index:02d}")
                data.files.append((path, rows))
                own.append(Part(derived_entry(part.entry, path), rows))
        if not own:
            raise DataError(
                f"{where}: uncertainty bucket {number} of {len(boundaries) + 1} "
                f"({low:g} <= u < {high:g}) has no rows; change split_by_uncertainty "
                "(boundaries or quantiles)"
            )
        data.entries.extend(part.entry for part in own)
        data.report["bucket"] = {
            "number": number,
            "of": len(boundaries) + 1,
            "field": split.field,
            "low": low,
            "high": high,
            "boundaries": boundaries,
            "rows": sum(len(part.rows) for part in own),
        }
        return own

    def _replay(
        self, plan: PhasePlan, source: ReplaySource, data_dir: Path, data: PhaseData, where: str
    ) -> dict[str, Any]:
        pool = [(name, part) for name in source.plans for part in self.own[name]]
        sizes = [len(self.rows(part, where)) for _, part in pool]
        total = sum(sizes)
        k = replay_count(source.share, total)
        key = f"replay.{source.written}"
        if total == 0:
            raise DataError(f"{where}: {key}: phase {source.written!r} has no rows to replay")
        if k > total:
            raise DataError(
                f"{where}: {key}.count: {k} rows asked for, but phase {source.written!r} has "
                f"{total}"
            )
        files = []
        for index, ((name, part), n, take) in enumerate(
            zip(pool, sizes, allocate(sizes, k), strict=True)
        ):
            if not take:
                continue
            seed = f"{self.recipe.spec.replay_seed}|{plan.name}|{source.written}|{name}|{index}"
            rows = [part.rows[i] for i in sample_indices(n, take, seed)]
            path = data_dir / output_name(part.entry, f"replay-{source.written}-{index:02d}")
            data.files.append((path, rows))
            data.entries.append(derived_entry(part.entry, path))
            files.append({"file": str(path), "rows": take, "of": n, "source": part.entry["path"]})
        return {
            "from": source.written,
            "share": source.share.describe(),
            "rows": k,
            "of": total,
            "files": files,
        }
