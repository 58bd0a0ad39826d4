"""Split one dataset across machines or endpoints (`--shard i/n`) and merge the parts back.

Shards are contiguous: shard i of n (0-based) holds rows [floor(i*N/n), floor((i+1)*N/n)), so
concatenating the shards in order gives the dataset in its original order. Each shard's output
gets a manifest beside it, `<output>.shard.json`, recording which rows it holds and digests of
the whole dataset's sample keys and of its own; `merge` checks them all before writing.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ..errors import ExitCode, UsageError
from . import io
from .io import DataError
from .output_paths import MANIFEST, SIDECAR, Output, check_outputs, dataset_output
from .samples import keys_digest, prepare_samples, sidecar_rows

MANIFEST_SUFFIX = ".shard.json"


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
        if not match:
            raise UsageError(f"--shard must look like i/n (e.g. 0/4), got {text!r}")
        index, count = int(match.group(1)), int(match.group(2))
        if count < 1 or not 0 <= index < count:
            raise UsageError(f"--shard {text}: need 0 <= i < n (shards are numbered from 0)")
        return cls(index, count)

    def bounds(self, total: int) -> tuple[int, int]:
        return self.index * total // self.count, (self.index + 1) * total // self.count

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True)
class Manifest:
    shard: int
    num_shards: int
    start: int
    stop: int
    total_rows: int
    dataset_keys_sha256: str
    shard_keys_sha256: str
    format: str
    field_messages: str
    field: str

    @staticmethod
    def path_for(output: str | Path) -> Path:
        return Path(str(output).rstrip("/") + MANIFEST_SUFFIX)

    @classmethod
    def output(cls, output: str | Path) -> Output:
        """The manifest beside `output`, as an output path to check."""
        keys = frozenset(field.name for field in fields(cls))
        return Output("the shard manifest", cls.path_for(output), MANIFEST, keys=keys)

    def write(self, output: str | Path) -> None:
        with io.atomic_path(self.path_for(output)) as tmp:
            tmp.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, output: str | Path) -> Manifest:
        path = cls.path_for(output)
        if not path.is_file():
            raise DataError(
                f"{output}: no shard manifest {path.name} beside it (`elicit --shard i/n` writes "
                "one next to each shard's output; copy it along with the output)"
            )
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, TypeError) as exc:
            raise DataError(f"{path}: not a valid shard manifest ({exc})") from None


def merge_shards(outputs: Sequence[str | Path]) -> tuple[list[dict[str, Any]], Manifest]:
    """The rows of all shards in dataset order, after checking they are one complete set.

    Returns the rows and the first manifest (its format fields describe the rows).
    """
    if not outputs:
        raise DataError("merge needs the shard outputs to merge")
    parts = sorted(
        ((Manifest.read(path), path) for path in outputs), key=lambda part: part[0].start
    )
    first, first_path = parts[0]
    for manifest, path in parts[1:]:
        for name in ("num_shards", "total_rows", "dataset_keys_sha256"):
            if getattr(manifest, name) != getattr(first, name):
                raise DataError(
                    f"{path} and {first_path} are shards of different runs ({name}: "
                    f"{getattr(manifest, name)} vs {getattr(first, name)})"
                )
    seen: dict[int, Path] = {}
    for manifest, path in parts:
        if manifest.shard in seen:
            raise DataError(
                f"shard {manifest.shard}/{manifest.num_shards} given twice: {seen[manifest.shard]} and {path}"
            )
        seen[manifest.shard] = path
    missing = [i for i in range(first.num_shards) if i not in seen]
    if missing:
        names = ", ".join(f"{i}/{first.num_shards}" for i in missing)
        raise DataError(
            f"missing shard(s) {names}: merge needs all {first.num_shards} shard outputs"
        )
    rows: list[dict[str, Any]] = []
    samples = []
    for manifest, path in parts:
        if manifest.start != len(rows):
            raise DataError(
                f"{path} starts at row {manifest.start}, expected {len(rows)}: overlapping or missing rows"
            )
        shard_rows = io.read_rows(path)
        if len(shard_rows) != manifest.stop - manifest.start:
            raise DataError(
                f"{path} has {len(shard_rows)} rows, its manifest says "
                f"{manifest.stop - manifest.start}: incomplete or modified"
            )
        shard_samples = prepare_samples(shard_rows, manifest.format, manifest.field_messages)
        if keys_digest(shard_samples) != manifest.shard_keys_sha256:
            raise DataError(
                f"{path}: its rows are not the ones its manifest records (modified since?)"
            )
        rows.extend(shard_rows)
        samples.extend(shard_samples)
    if len(rows) != first.total_rows or keys_digest(samples) != first.dataset_keys_sha256:
        raise DataError(
            f"the shards hold {len(rows)} rows that do not make up the dataset they were "
            f"cut from ({first.total_rows} rows)"
        )
    return rows, first


def run_merge(args) -> int:
    """`axolotl-ual merge`: exit 0 when merged and complete, 1 when some rows are null."""
    try:
        field = Manifest.read(args.shards[0]).field
        outputs = [dataset_output("--output", args.output, field)]
        if args.sidecar:
            outputs.append(Output("--sidecar", Path(args.sidecar), SIDECAR))
        manifests = [Manifest.path_for(path) for path in args.shards]
        check_outputs([*args.shards, *manifests], outputs)
        rows, manifest = merge_shards(args.shards)
        io.write_rows(rows, args.output)
        values = [row.get(manifest.field) for row in rows]
        if args.sidecar:
            samples = prepare_samples(rows, manifest.format, manifest.field_messages)
            io.write_rows(sidecar_rows(samples, values), args.sidecar)
    except (DataError, UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    nulls = sum(value is None for value in values)
    written = args.output + (f" and {args.sidecar}" if args.sidecar else "")
    print(f"merged {len(args.shards)} shards, {len(rows)} rows, into {written}")
    if nulls:
        print(
            f"{nulls} rows have no {manifest.field!r}: re-run the shards that have nulls, then merge again",
            file=sys.stderr,
        )
        return ExitCode.INCOMPLETE
    return ExitCode.OK
