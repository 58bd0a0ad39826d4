"""The resumable score cache: an append-only JSONL file, one line per scored sample.

    {"sample_key": "<sha256>", "config": "<16 hex>", "method": "verbalized", "model": "...",
     "score": 7.0, "uncertainty": 0.667, "detail": {"scores": [7.0]}}

`config` is a digest of everything that changes a score (method, model, samples, temperature,
prompt version...): records made under another configuration stay in the file but are not used.
Each record is written with one `write` and flushed as soon as its sample is scored, so killing
the process (even with SIGKILL) loses only the requests in flight; a line cut short by the kill
is skipped on the next read. Only successes are stored: a re-run asks again for the samples
that failed. Nothing secret is ever written here.

`RecordLog` is the file itself (append one record durably, read back what survived a kill),
and `RecordCache` the entries it holds, for any command's cache: `generate`'s derives from it
too.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

from ..rows import parse_uncertainty
from .methods import Judgement


def config_id(model: str, identity: dict[str, Any]) -> str:
    canonical = json.dumps({"model": model, **identity}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def default_cache_path(output: str | Path) -> Path:
    """`scored.jsonl` -> `scored.jsonl.cache.jsonl`, beside the output (also for a folder)."""
    return Path(str(output).rstrip("/") + ".cache.jsonl")


class RecordLog:
    """An append-only JSONL file of records, durable one record at a time, for any cache.

    `read(parse)` goes through the existing lines: `parse(record)` is called on each complete
    JSON line and may raise `KeyError`, `TypeError` or `ValueError` to skip a record it cannot
    use; such lines and lines that are not JSON (a record torn by a kill) are counted in
    `skipped_lines` and reported once on stderr. `append(record)` writes one line in one
    `write` and flushes it before returning. A last line cut short by a kill gets a newline
    first, so the next record starts on a fresh line.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.skipped_lines = 0
        self._file = None

    def read(self, parse: Callable[[dict[str, Any]], None]) -> None:
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if not line.strip():
                    continue
                try:
                    parse(json.loads(line))
                except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                    self.skipped_lines += 1
        if self.skipped_lines:
            print(
                f"cache {self.path}: skipped {self.skipped_lines} unreadable line(s) "
                "(a record cut short by a kill, most likely)",
                file=sys.stderr,
            )

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        needs_newline = (
            self.path.exists() and self.path.stat().st_size > 0 and not self._ends_with_newline()
        )
        # kept open for the run (one flushed write per record); closed by close()
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        if needs_newline:  # the last record was cut short by a kill: start on a fresh line
            self._file.write("\n")
            self._file.flush()

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as handle:
            handle.seek(-1, 2)
            return handle.read(1) == b"\n"

    def append(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class RecordCache:
    """A command's cache: the entries its `RecordLog` holds, by key, read back when it opens
    (each record through `_load`, which fills `_entries`) and added one durable record at a
    time by the subclass. Closed on leaving a `with` block."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._entries: dict[str, Any] = {}
        self._log = RecordLog(self.path)
        self._log.read(self._load)
        self._log.open()

    def _load(self, record: dict[str, Any]) -> None:
        raise NotImplementedError

    @property
    def skipped_lines(self) -> int:
        return self._log.skipped_lines

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def close(self) -> None:
        self._log.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ScoreCache(RecordCache):
    def __init__(self, path: str | Path, *, config: str, method: str, model: str):
        self.config = config
        self._stamp = {"config": config, "method": method, "model": model}
        self.other_config_records = 0
        super().__init__(path)

    def _load(self, record: dict[str, Any]) -> None:
        key, config = record["sample_key"], record["config"]
        uncertainty = parse_uncertainty(record["uncertainty"])
        if uncertainty is None or not math.isfinite(record["score"]):
            raise ValueError("no score")
        judgement = Judgement(record["score"], uncertainty, record.get("detail") or {})
        if config != self.config:
            self.other_config_records += 1
            return
        self._entries.setdefault(key, judgement)

    def get(self, key: str) -> Judgement | None:
        return self._entries.get(key)

    def add(self, key: str, judgement: Judgement) -> None:
        """Record a scored sample durably (written and flushed before returning)."""
        if not judgement.ok or key in self._entries:
            return
        self._log.append(
            {
                "sample_key": key,
                **self._stamp,
                "score": judgement.score,
                "uncertainty": judgement.uncertainty,
                "detail": judgement.detail,
            }
        )
        self._entries[key] = judgement
