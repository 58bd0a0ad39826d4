"""Shared fixtures: a tiny local model fitted to the sample data, and its tokenizer.

Helpers (configs, subprocess runners, sample paths) are in `tests/support.py`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from axolotl_ual.toolkit import OFFLINE
from tests.support import SAMPLE_ALPACA, SAMPLE_CHAT, plain_axolotl, run_losses

# Offline and untracked, in this process too (axolotl reports telemetry unless told not to),
# and so in what it starts: `axolotl-ual phases` hands its `axolotl train` runs this environment.
for name, value in {**OFFLINE, "TRL_EXPERIMENTAL_SILENCE": "1"}.items():
    os.environ.setdefault(name, value)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from axolotl_ual.tiny_model import build_tiny_model, corpus_from_jsonl

    corpus = corpus_from_jsonl(SAMPLE_CHAT) + corpus_from_jsonl(SAMPLE_ALPACA)
    # fitted to the data for a few steps, so that label smoothing changes the loss a lot
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", corpus, fit_steps=60)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture(scope="session")
def losses_of(tiny_model, tmp_path_factory) -> Callable[..., list[float]]:
    """`losses_of(name, **overrides)`: the losses of a 3-step `axolotl train` of the tiny model
    with `ual_config(**overrides)`, in a fresh folder named after `name` (`run_losses`)."""

    def run(name: str, **overrides) -> list[float]:
        return run_losses(tiny_model, tmp_path_factory.mktemp(name), **overrides)

    return run


@pytest.fixture(scope="session")
def plain_sft_losses(losses_of) -> list[float]:
    """Plain axolotl SFT (no plugin) on the sample data, 3 steps: what several end-to-end
    tests compare against."""
    return losses_of("plain_sft", **plain_axolotl())
