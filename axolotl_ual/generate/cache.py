"""The resumable cache of `generate`: one JSONL record per answered request.

    {"request_key": "<sha256>", "leaf": "compositional_skills/writing/haiku",
     "step": "questions", "value": ["Write a haiku about ...", ...]}

`request_key` digests everything that decides the reply: the leaf, the step, the request's
number within its step (several draws of the same prompt are different requests), the prompt
and parser versions, the model, temperature and token limit, and the messages themselves
(which hold the leaf's seed examples and whatever earlier steps produced). So a re-run after a
crash, Ctrl-C or `kill -9` sends nothing already answered; changing a leaf, a prompt, a model
or a setting asks again only for what it changes. `value` is the parsed reply (the questions,
the answer, the judge's score). Only usable replies are recorded: a request that failed or
whose replies could not be parsed is asked again by the next run. Each record is one flushed
write (`elicit.cache.RecordCache`); a line torn by a kill is skipped. Nothing secret is written.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..elicit.cache import RecordCache
from ..elicit.output_paths import RECORDS, Output

RECORD_KEYS = frozenset({"request_key", "step", "value"})


def request_key(identity: dict[str, Any]) -> str:
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def cache_output(option: str, path: str | Path) -> Output:
    """The cache as an output of the command (see `elicit.output_paths`)."""
    return Output(option, Path(path), RECORDS, keys=RECORD_KEYS, what="a generate cache")


@dataclass
class Result:
    """What one request gave: its parsed value, or why there is none."""

    value: Any = None
    error: str | None = None
    # failed because the server could not be reached or kept failing, not because of this request
    transient: bool = False
    unparsable: bool = False  # every reply was there but not in the form asked for
    leaf: str = ""  # for the cache record, to be read by a person
    step: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None


class GenerationCache(RecordCache):
    def __init__(self, path: str | Path):
        super().__init__(path)
        self.loaded = len(self)

    def _load(self, record: dict[str, Any]) -> None:
        key, value = record["request_key"], record["value"]
        if not isinstance(key, str) or not isinstance(record["step"], str):
            raise ValueError("not a generate record")
        self._entries.setdefault(key, value)

    def get(self, key: str) -> Result | None:
        return Result(self._entries[key]) if key in self._entries else None

    def add(self, key: str, result: Result) -> None:
        """Record a usable reply durably (written and flushed before returning)."""
        if not result.ok or key in self._entries:
            return
        record = {"request_key": key, "leaf": result.leaf, "step": result.step}
        self._log.append({**record, "value": result.value})
        self._entries[key] = result.value
