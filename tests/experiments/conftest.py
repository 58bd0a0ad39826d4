"""A small random model with the uncertainty mixture's tokenizer, for the metric tests."""

from __future__ import annotations

import pytest

from experiments.uncertainty_mixture.tasks import TASKS, make_split


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """The experiment's own tokenizer with a small random model (fast to build)."""
    from axolotl_ual.tiny_model import build_tiny_model

    corpus = [
        m["content"] for r in make_split("tok", dict.fromkeys(TASKS, 40)) for m in r["messages"]
    ]
    corpus += [y for t in TASKS.values() for _, ys, _ in t.contents() for y in ys]
    return build_tiny_model(tmp_path_factory.mktemp("m"), corpus, hidden_size=32, num_layers=1)


@pytest.fixture(scope="session")
def tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)
