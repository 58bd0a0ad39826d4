"""Judge backends: `openai` (any OpenAI-compatible server, async), `hf` (local transformers
model, batched) and `vllm` (offline batches). Each is imported only when chosen.

An async judge (`openai`) has `async judge(sample) -> Judgement` and `async aclose()`; a batch
judge (`hf`, `vllm`) has `judge_batch(samples) -> list[Judgement]`, `batch_size` and `close()`.
Both keep a `stats: RequestStats`.
"""

from __future__ import annotations

from .base import BackendError, BackendOptions, RequestStats

BACKENDS = ("openai", "hf", "vllm")
LOCAL_BACKENDS = ("hf", "vllm")


def make_judge(backend: str, method, options: BackendOptions):
    if backend == "openai":
        from .openai_backend import OpenAIJudge

        return OpenAIJudge(method, options)
    if backend == "hf":
        from .hf_backend import HFJudge

        return HFJudge(method, options)
    if backend == "vllm":
        from .vllm_backend import VLLMJudge

        return VLLMJudge(method, options)
    raise BackendError(f"unknown backend {backend!r}; expected one of {BACKENDS}")


__all__ = [
    "BACKENDS",
    "LOCAL_BACKENDS",
    "BackendError",
    "BackendOptions",
    "RequestStats",
    "make_judge",
]
