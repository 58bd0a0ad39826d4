"""Judge backends, registered once here: the CLI's `--backend` choices, `make_judge`, the list
of local backends and their help text all come from `BACKENDS`. Each backend module is
imported only when chosen (they import openai, torch or vllm).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from ...errors import UsageError
from .base import AsyncJudge, BackendError, BackendOptions, BatchJudge, Judge, RequestStats


@dataclass(frozen=True)
class Backend:
    name: str
    module: str  # in this package
    judge_class: str
    local: bool  # runs a model in this process (white-box methods possible)
    help: str


BACKENDS = {
    backend.name: backend
    for backend in (
        Backend("openai", "openai_backend", "OpenAIJudge", False, "any OpenAI-compatible server"),
        Backend("hf", "hf_backend", "HFJudge", True, "local transformers model"),
        Backend("vllm", "vllm_backend", "VLLMJudge", True, "local vLLM engine"),
    )
}
LOCAL_BACKENDS = tuple(name for name, backend in BACKENDS.items() if backend.local)


def make_judge(name: str, method, options: BackendOptions) -> Judge:
    backend = BACKENDS.get(name)
    if backend is None:
        raise UsageError(f"unknown backend {name!r}; expected one of {tuple(BACKENDS)}")
    module = importlib.import_module(f".{backend.module}", __name__)
    return getattr(module, backend.judge_class)(method, options)


__all__ = [
    "BACKENDS",
    "LOCAL_BACKENDS",
    "AsyncJudge",
    "Backend",
    "BackendError",
    "BackendOptions",
    "BatchJudge",
    "Judge",
    "RequestStats",
    "make_judge",
]
