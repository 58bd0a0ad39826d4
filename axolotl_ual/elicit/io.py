"""Datasets in and out: JSONL, JSON, Parquet, CSV, `datasets.save_to_disk` folders, hub names.

Rows are plain dicts. Every write is atomic: the data goes to a temporary file (or folder) next
to the target, which then replaces the target with `os.replace`, so a crash leaves either the old
file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import datetime
import decimal
import json
import math
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import DataError, UsageError

__all__ = ["DataError", "read_rows", "write_rows"]

JSONL, JSON, PARQUET, CSV, FOLDER = "jsonl", "json", "parquet", "csv", "folder"
SUFFIXES = {
    ".jsonl": JSONL,
    ".ndjson": JSONL,
    ".json": JSON,
    ".parquet": PARQUET,
    ".pq": PARQUET,
    ".csv": CSV,
}


def file_kind(path: str | Path, *, for_output: bool = False) -> str:
    """The format of `path`, from its extension; a path without one is a `save_to_disk` folder."""
    path = Path(path)
    if path.is_dir():
        return FOLDER
    kind = SUFFIXES.get(path.suffix.lower())
    if kind:
        return kind
    if not path.suffix:
        return FOLDER
    what = "output" if for_output else "input"
    error = UsageError if for_output else DataError  # an output path is an argument
    raise error(
        f"cannot tell the {what} format of {str(path)!r} from its extension {path.suffix!r}: "
        f"use one of {sorted(SUFFIXES)}, or a folder name without an extension "
        "(a `datasets.save_to_disk` folder)"
    )


# --------------------------------------------------------------------------- reading


def read_rows(source: str | Path, *, split: str = "train") -> list[dict[str, Any]]:
    """All rows of a file, a `save_to_disk` folder, or (when no such path exists) a hub dataset."""
    path = Path(source)
    if path.is_dir():
        return _read_folder(path, split)
    if path.is_file():
        kind = file_kind(path)
        return {JSONL: _read_jsonl, JSON: _read_json, PARQUET: _read_parquet, CSV: _read_csv}[kind](
            path
        )
    return _read_hub(str(source), split)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}, line {line_no}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise DataError(
                    f"{path}, line {line_no}: expected a JSON object per line, got "
                    f"{type(row).__name__}"
                )
            rows.append(row)
    return rows


def _read_json(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # a .json file holding JSON Lines
            return _read_jsonl(path)
        raise DataError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON array of row objects, got {type(data).__name__}")
    for index, row in enumerate(data):
        if not isinstance(row, dict):
            raise DataError(f"{path}: row {index} is a {type(row).__name__}, not an object")
    return data


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def _read_csv(path: Path) -> list[dict[str, Any]]:
    import pandas as pd

    # pandas' default missing-value handling, as `datasets.load_dataset("csv")` reads the file
    # for training: the sample keys must come out the same on both sides.
    frame = pd.read_csv(path)
    rows = frame.to_dict(orient="records")
    for row in rows:
        for name, value in row.items():
            if isinstance(value, float) and math.isnan(value):
                row[name] = None
    return rows


def _read_folder(path: Path, split: str) -> list[dict[str, Any]]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except FileNotFoundError as exc:
        raise DataError(f"{path}: not a `datasets.save_to_disk` folder ({exc})") from None
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise DataError(f"{path}: no split {split!r} (it has {sorted(loaded)}); use --split")
        loaded = loaded[split]
    return loaded.to_list()


def _read_hub(name: str, split: str) -> list[dict[str, Any]]:
    import datasets

    try:
        return datasets.load_dataset(name, split=split).to_list()
    except Exception as exc:  # noqa: BLE001 - any failure means "cannot read this input"
        raise DataError(
            f"{name!r} is not a file or folder here, and loading it as a hub dataset failed: "
            f"{type(exc).__name__}: {exc}"
        ) from None


# --------------------------------------------------------------------------- writing


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `target`; on success it replaces `target` atomically."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_rows(rows: Sequence[dict[str, Any]], target: str | Path) -> None:
    """Write `rows` atomically in the format named by `target`'s extension."""
    kind = file_kind(target, for_output=True)
    if kind == FOLDER:
        _write_folder(rows, Path(target))
        return
    writer = {JSONL: _write_jsonl, JSON: _write_json, PARQUET: _write_parquet, CSV: _write_csv}
    with atomic_path(target) as tmp:
        writer[kind](rows, tmp)


def _json_default(value: Any) -> Any:
    # Parquet and save_to_disk rows can hold dates and decimals, which JSON has no type for.
    if isinstance(value, (datetime.date, datetime.datetime, datetime.time)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    raise TypeError(f"cannot write a {type(value).__name__} value as JSON: {value!r:.80}")


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=_json_default)


def _write_jsonl(rows: Sequence[dict[str, Any]], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(dumps(row) + "\n")


def _write_json(rows: Sequence[dict[str, Any]], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("[\n")
        handle.write(",\n".join(dumps(row) for row in rows))
        handle.write("\n]\n")


def columns_of(rows: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """Column-wise values over the union of all rows' keys (first-seen order), None when absent."""
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    return {name: [row.get(name) for row in rows] for name in names}


def _arrow_table(rows: Sequence[dict[str, Any]]):
    import pyarrow as pa

    columns = columns_of(rows)
    arrays = {}
    for name, values in columns.items():
        try:
            arrays[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise DataError(f"column {name!r} cannot be stored as one Arrow type: {exc}") from None
    return pa.table(arrays)


def _write_parquet(rows: Sequence[dict[str, Any]], path: Path) -> None:
    import pyarrow.parquet as pq

    pq.write_table(_arrow_table(rows), path)


def _write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    import csv

    columns = list(columns_of(rows))

    def cell(value: Any) -> Any:
        # CSV has no nested values: lists and dicts (chat messages) are stored as JSON text.
        return dumps(value) if isinstance(value, (list, dict)) else value

    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({name: cell(value) for name, value in row.items()})


def _write_folder(rows: Sequence[dict[str, Any]], target: Path) -> None:
    import datasets

    target = Path(str(target).rstrip("/"))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        datasets.Dataset(_arrow_table(rows)).save_to_disk(str(tmp))
        # A folder cannot be swapped in one rename over a non-empty one: move the old one aside
        # first; a crash in between leaves it there, complete, under the `.old-` name.
        moved_aside = target.exists()
        if moved_aside:
            os.replace(target, old)
        try:
            os.replace(tmp, target)
        except OSError as exc:
            if moved_aside:  # put the previous output back; failing that, say where it is
                try:
                    os.replace(old, target)
                except OSError:
                    raise OSError(
                        exc.errno, f"{exc.strerror}; the previous {target.name} is kept at {old}"
                    ) from exc
            raise
        if moved_aside:  # only once the new output is in place
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
