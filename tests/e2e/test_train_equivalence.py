"""`axolotl train` end to end: UAL against axolotl's own losses, and against itself.

Several optimizer steps are compared, so equal losses after the first step also mean equal
gradients (the same updates were applied).
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e

ACCUMULATED = {"micro_batch_size": 2, "gradient_accumulation_steps": 2}


@pytest.fixture(scope="module")
def ual_accumulated(losses_of):
    """UAL, fused loss, 2 micro-batches of 2 accumulated per step."""
    return losses_of("accumulated", **ACCUMULATED)


def test_eps_zero_equals_axolotl_sft(losses_of, plain_sft_losses):
    ual = losses_of("ual_eps0", ual_smoothing_max=0.0)
    assert ual == pytest.approx(plain_sft_losses, rel=1e-5)


def test_fused_equals_logits_path(losses_of, ual_accumulated):
    logits = losses_of("logits_path", **ACCUMULATED, ual_fused_loss=False)
    assert ual_accumulated == pytest.approx(logits, rel=1e-5)


def test_gradient_accumulation_is_exact(losses_of, ual_accumulated):
    # same 4 samples per optimizer step, in one micro-batch instead of two
    one_batch = losses_of("one_batch", micro_batch_size=4, gradient_accumulation_steps=1)
    assert ual_accumulated == pytest.approx(one_batch, rel=1e-5)
