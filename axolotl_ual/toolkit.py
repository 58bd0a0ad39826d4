"""What the demo, the tests, the benchmarks and the experiments share.

- `REPO`: the source checkout this package was installed from (`pip install -e .`), where the
  tests, benchmarks and experiments live.
- `read_jsonl` / `write_jsonl`: rows as JSON Lines.
- `child_env`: the environment for a subprocess of ours (the user's, with the right executables
  and this checkout's code); `offline_env`: the same for one that must never reach the network.
- `console_script`: the `axolotl` / `axolotl-ual` / `accelerate` executable beside this
  interpreter.

No torch or axolotl imports.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
REPO = PACKAGE.parent
DATA = PACKAGE / "data"


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def write_jsonl(path: str | Path, rows: list[dict]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    return path


def console_script(name: str) -> str:
    """The `name` console script installed beside this interpreter, else the one on PATH."""
    beside = Path(sys.executable).with_name(name)
    return str(beside) if beside.exists() else shutil.which(name) or str(beside)


# Hub and datasets offline, no telemetry (axolotl's would hang at exit offline), no W&B.
OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "AXOLOTL_DO_NOT_TRACK": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "WANDB_MODE": "disabled",
}


def child_env(**overrides: str) -> dict[str, str]:
    """This process's environment for a subprocess of ours (`axolotl train`, `axolotl-ual`),
    changed only so that it runs the right executables and code; `overrides` win.

    This interpreter's scripts folder comes first on PATH: `axolotl train` re-launches itself
    through `accelerate`, which must be the one installed beside it even in a venv that was
    never activated. Run from a source checkout, the subprocess imports this same checkout of
    `axolotl_ual` (not another one the environment has installed in editable mode). Everything
    else is the user's: hub access, W&B, telemetry (a user's real run downloads its model and
    logs where they said).
    """
    env = dict(os.environ)
    scripts = str(Path(sys.executable).parent)
    if REPO.name != "site-packages":
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env["PATH"] = os.pathsep.join([scripts, env.get("PATH", "")])
    env.update(overrides)
    return env


def offline_env(**overrides: str) -> dict[str, str]:
    """`child_env` for an `axolotl` subprocess that must never reach the network (the demo, the
    tests, benchmarks and experiments, all on tiny local models).

    `OFFLINE` on top of it; `overrides` win.
    """
    return child_env(**{**OFFLINE, **overrides})


def judge_client_env(**overrides: str) -> dict[str, str]:
    """`offline_env` for an `axolotl-ual elicit` subprocess talking to a loopback judge.

    The user's own `OPENAI_API_KEY` / `OPENAI_BASE_URL` are removed: a test or benchmark must
    never send them anywhere.
    """
    env = offline_env()
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        env.pop(name, None)
    env.update(overrides)
    return env
