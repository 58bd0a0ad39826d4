"""Test helpers: a scripted loopback teacher, the generate CLI in this process or a subprocess.

The loopback server answers every step with `generate.fake_teacher` (deterministic: the same
prompt gets the same reply); a script can replace any reply (faults, rejections, garbage),
knowing the step and how often the same prompt was asked before.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from axolotl_ual.elicit.fake_server import Reply, Request
from axolotl_ual.generate.fake_teacher import FakeTeacher, question_of, step_of
from axolotl_ual.toolkit import DATA, read_jsonl
from tests.elicit import support as elicit_support

__all__ = ["TAXONOMY", "ScriptedTeacher", "question_of", "read_jsonl"]

TAXONOMY = DATA / "taxonomy"
CLI = "axolotl_ual.cli"


class ScriptedTeacher:
    """A server policy: `script(step, request, k)` (k: times this step + prompt was asked
    before) returns a Reply, or None for the fake teacher's normal answer."""

    def __init__(self, script: Callable[[str, Request, int], Reply | None] | None = None):
        self.script = script or (lambda step, request, k: None)
        self.counts: Counter[tuple[str, str]] = Counter()
        self.log: list[tuple[str, str]] = []  # (step, prompt) of every request, in order
        self._lock = threading.Lock()
        self._teacher = FakeTeacher()

    def __call__(self, request: Request) -> Reply:
        step = step_of(request)
        assert step is not None, f"not a generate request: {request.prompt[:200]!r}"
        with self._lock:
            k = self.counts[(step, request.prompt)]
            self.counts[(step, request.prompt)] += 1
            self.log.append((step, request.prompt))
        return self.script(step, request, k) or self._teacher(request)

    def steps(self) -> Counter[str]:
        with self._lock:
            return Counter(step for step, _ in self.log)


def command(server, output: str | None = "out.jsonl", options: str = "", taxonomy=TAXONOMY):
    """The generate command line for the tests: small numbers, fast retries."""
    out = f"-o {output} " if output else ""
    return (
        f"generate {taxonomy} {out}--base-url {server.base_url} --model teacher "
        f"--num-samples 6 --per-request 3 --chunk-words 300 --backoff-base 0.01 --no-progress "
        f"{options}"
    )


def cli_command(text: str) -> list[str]:
    """`python -m axolotl_ual.cli` with the arguments of a shell-like command string."""
    return elicit_support.cli_command(text, CLI)


def run_subprocess(text: str, *, cwd: Path, env: dict[str, str] | None = None, timeout=60):
    return elicit_support.run_cli_subprocess(text, cwd=cwd, env=env, timeout=timeout, module=CLI)
