"""Keep axolotl's prepared-dataset cache honest about UAL.

axolotl names a prepared (tokenized) dataset by a hash of the dataset entries and a few global
keys, not plugin keys and not the data files' contents. UAL's tokenized rows depend on the
uncertainty settings and on the scores inside the files (`axolotl-ual elicit` rewrites them in
place), so `register` moves `dataset_prepared_path` into a sub-directory named after a
fingerprint of exactly those inputs: change one and the data is tokenized again instead of a
stale copy being reused.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from .args import DATA_KEYS, UALArgs, is_ual_dataset_type

DEFAULT_PREPARED_PATH = "last_run_prepared"  # axolotl's default
# The layout of UAL's columns in the prepared rows (see `columns.py`); bumping it re-tokenizes.
FORMAT_VERSION = 2
PREFIX = "ual-"


def data_fingerprint(cfg: dict[str, Any]) -> str:
    """Hash of the UAL inputs of tokenization: the data keys and the contents of the data files
    and of the sidecar (by content, not size and time: `cp -p`, `rsync -a` and `tar` keep those
    while the scores inside change)."""
    settings = {}
    for key in DATA_KEYS:
        value = cfg.get(key)
        if value is None:
            value = UALArgs.model_fields[key].default
        settings[key] = getattr(value, "value", value)
    payload = {"format": FORMAT_VERSION, "settings": settings, "files": []}
    if cfg.get("ual_uncertainty_file") and Path(cfg["ual_uncertainty_file"]).is_file():
        payload["sidecar_sha256"] = file_sha256(Path(cfg["ual_uncertainty_file"]))
    for ds in list(cfg.get("datasets") or []) + list(cfg.get("test_datasets") or []):
        if isinstance(ds, dict) and is_ual_dataset_type(ds.get("type")):
            payload["files"].append(_contents(str(ds.get("path"))))
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def isolate_prepared_path(cfg: dict[str, Any]) -> str:
    """Point `dataset_prepared_path` at `<base>/ual-<fingerprint>`; return the new path."""
    fingerprint = data_fingerprint(cfg)
    ours = f"{PREFIX}{fingerprint}"
    base = Path(cfg.get("dataset_prepared_path") or DEFAULT_PREPARED_PATH)
    if base.name == ours:  # register() already ran on this config; a user's `ual-...` folder stays
        base = base.parent
    path = str(base / ours)
    cfg["dataset_prepared_path"] = path
    return path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _contents(path: str) -> list:
    """The content hashes of a local data file or of the files of a local folder."""
    root = Path(path)
    if root.is_file():
        files = [root]
    elif root.is_dir():
        files = sorted(p for p in root.rglob("*") if p.is_file())
    else:
        return [path]  # a hub dataset: only its name
    return [path] + [
        (str(p.relative_to(root)) if p != root else p.name, file_sha256(p)) for p in files
    ]
