"""`axolotl train` end to end: UAL against axolotl's own losses, and against itself.

Several optimizer steps are compared, so equal losses after the first step also mean equal
gradients (the same updates were applied).
"""

from __future__ import annotations

import pytest

from tests.support import SAMPLE_CHAT, log_history, train, ual_config, write_config

pytestmark = pytest.mark.e2e
STEPS = 3


def _losses(tiny_model, tmp_path_factory, name, **overrides) -> list[float]:
    workdir = tmp_path_factory.mktemp(name)
    cfg = ual_config(tiny_model, workdir, max_steps=STEPS, **overrides)
    train(write_config(workdir / "cfg.yml", cfg))
    losses = [r["loss"] for r in log_history(workdir / "out") if "loss" in r]
    assert len(losses) == STEPS
    return losses


def _plain_axolotl(**overrides) -> dict:
    """The same run without the plugin: axolotl's own chat_template type and loss."""
    return dict(
        plugins=None,
        ual_uncertainty_source=None,
        ual_smoothing_min=None,
        ual_smoothing_max=None,
        datasets=[
            {"path": str(SAMPLE_CHAT), "type": "chat_template", "field_messages": "messages"}
        ],
        **overrides,
    )


@pytest.fixture(scope="module")
def ual_accumulated(tiny_model, tmp_path_factory):
    """UAL, fused loss, 2 micro-batches of 2 accumulated per step."""
    return _losses(
        tiny_model,
        tmp_path_factory,
        "accumulated",
        micro_batch_size=2,
        gradient_accumulation_steps=2,
    )


def test_eps_zero_equals_axolotl_sft(tiny_model, tmp_path_factory):
    ual = _losses(tiny_model, tmp_path_factory, "ual_eps0", ual_smoothing_max=0.0)
    sft = _losses(tiny_model, tmp_path_factory, "sft", **_plain_axolotl())
    assert ual == pytest.approx(sft, rel=1e-5)


def test_fused_equals_logits_path(tiny_model, tmp_path_factory, ual_accumulated):
    logits = _losses(
        tiny_model,
        tmp_path_factory,
        "logits_path",
        micro_batch_size=2,
        gradient_accumulation_steps=2,
        ual_fused_loss=False,
    )
    assert ual_accumulated == pytest.approx(logits, rel=1e-5)


def test_gradient_accumulation_is_exact(tiny_model, tmp_path_factory, ual_accumulated):
    # same 4 samples per optimizer step, in one micro-batch instead of two
    one_batch = _losses(
        tiny_model, tmp_path_factory, "one_batch", micro_batch_size=4, gradient_accumulation_steps=1
    )
    assert ual_accumulated == pytest.approx(one_batch, rel=1e-5)
