"""The run's record (`journal.json`), the fingerprint of its inputs, the work folder's lock.

The journal is rewritten atomically (a temporary file replaces it), so a kill at any moment
leaves the previous version or the new one. It records, per phase: its status (pending,
running, done, failed, interrupted), every attempt (when, resumed from which checkpoint, exit
status, the process group of its `axolotl train`), and once done the chosen checkpoint, why it
was chosen, the metrics and the config it ran.

The fingerprint covers the recipe and the base config (as parsed: comments and formatting do
not count) and the contents of every local data file the phases name (datasets, test datasets,
sidecar, DeepSpeed config). Model weights are not hashed (their size); their paths are part of
the configs.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..elicit.io import atomic_path
from ..errors import UsageError
from .recipe import DATASET_KEYS, Recipe

FORMAT = 1
JOURNAL = "journal.json"
LOCK = ".lock"


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes; of a folder, of its files' relative paths and digests."""
    path = Path(path)
    if path.is_dir():
        parts = [
            f"{p.relative_to(path).as_posix()}:{file_digest(p)}"
            for p in sorted(path.rglob("*"))
            if p.is_file()
        ]
        return text_digest("\n".join(parts))
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def input_files(recipe: Recipe) -> list[Path]:
    """The local files the phases read (data, sidecar, DeepSpeed config), in first-seen order."""
    found: dict[str, None] = {}
    for plan in recipe.plans:
        cfg = plan.config
        for key in DATASET_KEYS:
            for entry in cfg.get(key) or []:
                if isinstance(entry, dict):
                    for value in (entry.get("path"), entry.get("data_files")):
                        for item in value if isinstance(value, list) else [value]:
                            if isinstance(item, str):
                                found[item] = None
        for key in ("ual_uncertainty_file", "deepspeed"):
            if isinstance(cfg.get(key), str):
                found[cfg[key]] = None
    return [Path(p) for p in found if Path(p).is_absolute() and Path(p).exists()]


def fingerprint(recipe: Recipe) -> dict[str, str]:
    """label -> digest of everything a finished phase depends on."""
    inputs = {
        f"recipe {recipe.path}": text_digest(canonical(recipe.raw)),
        f"base config {recipe.base_path}": text_digest(canonical(recipe.raw_base)),
    }
    for path in input_files(recipe):
        inputs[f"data {path}"] = file_digest(path)
    return inputs


def describe_changes(old: dict[str, str], new: dict[str, str]) -> list[str]:
    changes = [f"changed: {label}" for label in new if label in old and old[label] != new[label]]
    changes += [f"new: {label}" for label in new if label not in old]
    changes += [f"no longer used: {label}" for label in old if label not in new]
    return changes


def process_group_alive(pgid: int | None) -> bool:
    """Whether a process of group `pgid` still runs (zombies, which nobody reaped, do not)."""
    if not pgid:
        return False
    proc = Path("/proc")
    if proc.is_dir():
        for stat in proc.glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                return True
        return False
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Journal:
    def __init__(self, path: Path, data: dict[str, Any]):
        self.path = path
        self.data = data

    @classmethod
    def open(cls, work_dir: Path, recipe: Recipe, inputs: dict[str, str]) -> Journal:
        """The journal of `work_dir`, new if there is none; refuses one whose inputs differ."""
        path = work_dir / JOURNAL
        if not path.exists():
            journal = cls(
                path,
                {
                    "format": FORMAT,
                    "recipe": str(recipe.path),
                    "work_dir": str(work_dir),
                    "created": now(),
                    "inputs": inputs,
                    "phases": {},
                },
            )
            journal.save()
            return journal
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise UsageError(f"{path}: not a readable journal ({exc}); use --restart") from None
        if data.get("format") != FORMAT:
            raise UsageError(f"{path}: journal format {data.get('format')!r}, expected {FORMAT}")
        changes = describe_changes(data.get("inputs", {}), inputs)
        if changes:
            raise UsageError(
                f"the recipe's inputs changed since the run in {work_dir} started, so its "
                "finished phases no longer match it:\n"
                + "\n".join(f"  - {c}" for c in changes)
                + "\nUndo the change, use another --work-dir, or re-run with --restart (the "
                "old run folder is moved aside, nothing is deleted)."
            )
        return cls(path, data)

    def save(self) -> None:
        self.data["updated"] = now()
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps(self.data, indent=2, ensure_ascii=False) + "\n")

    def phase(self, name: str) -> dict[str, Any]:
        return self.data["phases"].setdefault(name, {"status": "pending", "attempts": []})

    def update(self, name: str, **fields: Any) -> None:
        self.phase(name).update(fields)
        self.save()

    def start_attempt(self, name: str, **fields: Any) -> dict[str, Any]:
        record = self.phase(name)
        attempt = {"number": len(record["attempts"]) + 1, "started": now(), **fields}
        record["attempts"].append(attempt)
        record["status"] = "running"
        self.save()
        return attempt

    def end_attempt(self, name: str, status: str, **fields: Any) -> None:
        record = self.phase(name)
        record["attempts"][-1].update(ended=now(), **fields)
        record["status"] = status
        self.save()

    def running_elsewhere(self) -> list[tuple[str, int]]:
        """(phase, process group) of attempts whose `axolotl train` is still alive."""
        alive = []
        for name, record in self.data["phases"].items():
            attempts = record.get("attempts") or []
            if record.get("status") == "running" and attempts:
                pgid = attempts[-1].get("process_group")
                if process_group_alive(pgid):
                    alive.append((name, pgid))
        return alive


@contextlib.contextmanager
def locked(work_dir: Path) -> Iterator[None]:
    """Hold the work folder's lock: one `axolotl-ual phases` per work folder at a time."""
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / LOCK
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise UsageError(
                f"another `axolotl-ual phases` (pid {holder}) is running in {work_dir}; wait "
                "for it to end or stop it"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def move_aside(work_dir: Path) -> Path | None:
    """Rename `work_dir` to `<name>.old-<UTC time>` (nothing is deleted); None if absent."""
    if not work_dir.exists():
        return None
    with locked(work_dir):
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
        target = work_dir.with_name(f"{work_dir.name}.old-{stamp}")
        number = 1
        while target.exists():
            number += 1
            target = work_dir.with_name(f"{work_dir.name}.old-{stamp}-{number}")
        os.replace(work_dir, target)
    return target
