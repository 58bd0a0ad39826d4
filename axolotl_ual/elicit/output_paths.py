"""Where `elicit`, `merge` and `inspect` may write, decided before any work is done.

The rule, in one place for the three commands:

- No output (dataset, sidecar, cache, shard manifest, PNG, merge target) is an input, inside an
  input folder, or holds an input; and no two outputs are the same path or inside one another.
  Paths are compared as the files they are: through symlinks, and hard links by device and inode.
- An existing output path is replaced (or, for the cache, appended to) only when it holds what
  that output writes, recognised by its contents: a scored dataset whose first row, header or
  schema has the `<field>` and `<field>_score` columns (JSONL, JSON, CSV, Parquet, or a
  `save_to_disk` folder holding only `dataset_info.json`, `state.json` and `data-*.arrow`); a
  sidecar whose rows are exactly `{sample_key, uncertainty}`; a cache whose records have
  `sample_key` and `config`; a shard manifest; a PNG by its signature; for other commands'
  JSONL record files (`generate`'s cache), a first record with the `keys` they declare. An
  empty file holds nothing to lose and may be replaced. Anything else is refused.
- Every output must be writable: not the current folder (or one above it), not under a regular
  file, in a folder this process can create files in.

Every problem is a `UsageError` with one line naming the option and the path.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import rows as rowlib
from ..errors import UsageError
from . import io

DATASET, SIDECAR, CACHE, MANIFEST, PNG = "dataset", "sidecar", "cache", "manifest", "png"
RECORDS = "records"  # JSONL records with `keys`, described by `what` (another command's cache)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DATASET_FOLDER_FILES = ("dataset_info.json", "state.json")  # plus data-*.arrow
WHAT = {
    DATASET: "a scored dataset",
    SIDECAR: "a sidecar file",
    CACHE: "an elicit cache",
    MANIFEST: "a shard manifest",
    PNG: "a PNG image",
}


@dataclass(frozen=True)
class Output:
    """One path a command writes: the option that names it, what it holds."""

    option: str  # as the user knows it: "--output", "--cache", "the shard manifest"...
    path: Path
    kind: str
    columns: tuple[str, ...] = ()  # DATASET: the columns an existing file must have
    keys: frozenset[str] = frozenset()  # MANIFEST: its keys; RECORDS: keys its records have
    what: str = ""  # RECORDS: what the file is, for the message ("a generate cache")

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))


def check_outputs(inputs: Iterable[str | Path], outputs: Sequence[Output]) -> None:
    """Raise `UsageError` unless every output may be written (see the module docstring).

    `inputs` are the paths the command reads; names that are not local paths (hub datasets)
    are ignored.
    """
    local_inputs = [Path(path) for path in inputs if path is not None and os.path.lexists(path)]
    for output in outputs:
        for source in local_inputs:
            if clash := _clash(output.path, source):
                raise UsageError(
                    f"{output.option} {output.path} {clash} the input {source}: choose another path"
                )
    for index, output in enumerate(outputs):
        for other in outputs[index + 1 :]:
            if clash := _clash(output.path, other.path):
                raise UsageError(
                    f"{output.option} {output.path} {clash} {other.option} {other.path}: "
                    "give each output its own path"
                )
    for output in outputs:
        _check_writable(output)
        if problem := _not_ours(output):
            raise UsageError(
                f"{output.option} {output.path} exists and is not "
                f"{output.what or WHAT[output.kind]} this command wrote ({problem}): remove it or "
                "choose another path"
            )


def dataset_output(option: str, path: str | Path, field: str) -> Output:
    """A scored dataset with the uncertainty column `field` and its `<field>_score`."""
    return Output(option, Path(path), DATASET, columns=(field, f"{field}_score"))


# --------------------------------------------------------------------------- identity


def _same(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)  # symlinks followed, hard links by device + inode
    return os.path.realpath(a) == os.path.realpath(b)


def _inside(path: Path, folder: Path) -> bool:
    """Whether `path` is strictly inside the existing folder `folder` (symlinks resolved)."""
    if not folder.is_dir():
        return False
    real_path, real_folder = os.path.realpath(path), os.path.realpath(folder)
    return real_path != real_folder and os.path.commonpath([real_path, real_folder]) == real_folder


def _clash(output: Path, other: Path) -> str | None:
    """How writing `output` would touch `other`, or None."""
    if _same(output, other):
        return "is"
    if _inside(other, output):
        return "is a folder holding"
    if _inside(output, other):
        return "is inside the folder"
    return None


# --------------------------------------------------------------------------- writability


def _check_writable(output: Output) -> None:
    path = output.path
    absolute = Path(os.path.abspath(path))
    cwd = Path.cwd()
    if not absolute.name or absolute == cwd or absolute in cwd.parents:
        raise UsageError(
            f"{output.option} {path}: is the current folder or one above it, which cannot be "
            "replaced: name a new file or folder"
        )
    expects_folder = output.kind == DATASET and io.file_kind(path, for_output=True) == io.FOLDER
    if path.is_dir() and not expects_folder:
        raise UsageError(f"{output.option} {path}: is a folder, not a file: choose a file path")
    ancestor = absolute.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UsageError(
            f"{output.option} {path}: {ancestor} is a file, so nothing can be written under it"
        )
    try:  # the only reliable test (permissions, read-only mounts, root): create a file there
        handle, probe = tempfile.mkstemp(prefix=".ual-write-test-", dir=ancestor)
        os.close(handle)
        os.unlink(probe)
        if path.is_file():
            with open(path, "r+b"):  # opened for writing, not changed
                pass
    except OSError as exc:
        where = path if path.is_file() else ancestor
        raise UsageError(
            f"{output.option} {path}: cannot write to {where} ({exc.strerror})"
        ) from None


# --------------------------------------------------------------------------- recognition


def _not_ours(output: Output) -> str | None:
    """Why the existing `output.path` is not what `output` writes; None if it is (or is absent
    or empty)."""
    path = output.path
    if not path.exists():
        return None
    if path.is_file() and _is_empty(path):
        return None  # nothing to lose
    try:
        if output.kind == DATASET:
            return _not_a_dataset(path, output.columns)
        if output.kind == PNG:
            with open(path, "rb") as handle:
                return None if handle.read(8) == PNG_SIGNATURE else "no PNG signature"
        if output.kind == MANIFEST:
            data = json.loads(path.read_text(encoding="utf-8"))
            ok = isinstance(data, dict) and set(data) == output.keys
            return None if ok else "not the fields of a shard manifest"
        first = _first_json_line(path)
        if output.kind == SIDECAR:
            expected = {rowlib.SIDECAR_KEY, rowlib.SIDECAR_UNCERTAINTY}
            ok = isinstance(first, dict) and set(first) == expected
            return None if ok else f"its first row is not exactly {sorted(expected)}"
        if output.kind == CACHE:
            ok = isinstance(first, dict) and {"sample_key", "config"} <= set(first)
            return None if ok else "its first line is not a cache record"
        if output.kind == RECORDS:
            ok = isinstance(first, dict) and output.keys <= set(first)
            return None if ok else f"its first line is not a record with {sorted(output.keys)}"
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return f"unreadable as such: {type(exc).__name__}"
    raise AssertionError(f"unknown output kind {output.kind}")


def _is_empty(path: Path) -> bool:
    size = path.stat().st_size
    if size > 4096:
        return False
    with open(path, "rb") as handle:
        return not handle.read().strip()


def _first_json_line(path: Path):
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                return json.loads(line)
    return None


def _missing(columns: Sequence[str], present: Iterable[str]) -> str | None:
    absent = [name for name in columns if name not in set(present)]
    if not absent:
        return None
    return f"no column{'s' if len(absent) > 1 else ''} {', '.join(map(repr, absent))}"


def _not_a_dataset(path: Path, columns: Sequence[str]) -> str | None:
    kind = io.file_kind(path, for_output=True)
    if kind == io.FOLDER:
        if not path.is_dir():
            return "a file where a dataset folder would go"
        names = sorted(entry.name for entry in path.iterdir())
        others = [
            name
            for name in names
            if name not in DATASET_FOLDER_FILES
            and not (name.startswith("data-") and name.endswith(".arrow"))
        ]
        if others or not set(DATASET_FOLDER_FILES) <= set(names):
            shown = ", ".join(others[:3]) or "no dataset_info.json / state.json"
            return f"holds {shown}, not just a `save_to_disk` dataset"
        info = json.loads((path / "dataset_info.json").read_text(encoding="utf-8"))
        return _missing(columns, (info.get("features") or {}).keys())
    if kind == io.JSONL:
        first = _first_json_line(path)
        return _missing(columns, first) if isinstance(first, dict) else "not JSON objects"
    if kind == io.JSON:
        rows = io.read_rows(path)
        return _missing(columns, rows[0]) if rows else None
    if kind == io.CSV:
        with open(path, encoding="utf-8", newline="") as handle:
            header = next(csv.reader(handle), [])
        return _missing(columns, header)
    if kind == io.PARQUET:
        import pyarrow.parquet as pq

        try:
            names = pq.read_schema(path).names
        except Exception as exc:  # noqa: BLE001 - pyarrow's errors for a non-Parquet file vary
            return f"not Parquet ({type(exc).__name__})"
        return _missing(columns, names)
    raise AssertionError(f"unknown dataset kind {kind}")
