"""`axolotl train` end to end: UAL against axolotl's own losses, and against itself.

Several optimizer steps are compared, so equal losses after the first step also mean equal
gradients (the same updates were applied).
"""

from __future__ import annotations

import pytest

from tests.support import run_losses

pytestmark = pytest.mark.e2e
STEPS = 3


def _losses(tiny_model, tmp_path_factory, name, **overrides) -> list[float]:
    return run_losses(tiny_model, tmp_path_factory.mktemp(name), STEPS, **overrides)


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


def test_eps_zero_equals_axolotl_sft(tiny_model, tmp_path_factory, plain_sft_losses):
    ual = _losses(tiny_model, tmp_path_factory, "ual_eps0", ual_smoothing_max=0.0)
    assert ual == pytest.approx(plain_sft_losses, rel=1e-5)


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
