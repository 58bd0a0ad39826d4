"""Objectives on hand-built batches: shifting, per-token weights and smoothing, normalizers."""

from __future__ import annotations

import pytest
import torch

from axolotl_ual.columns import INSTRUCTION, SEGMENT, UNCERTAINTY
from axolotl_ual.mapping import UncertaintyToEpsilon
from axolotl_ual.objectives import PredictionBatch, SmoothedSFT

I = -100  # noqa: E741


def _batch():
    # one row: 2 instruction tokens, 3 response tokens, padding
    labels = torch.tensor([[I, 11, 12, 13, 14, 15, I]])
    columns = {
        UNCERTAINTY.name: torch.tensor([[0.5] * 6 + [0.0]]),
        INSTRUCTION.name: torch.tensor([[False, True, True, False, False, False, False]]),
        SEGMENT.name: torch.tensor([[0] * 6 + [-1]]),
    }
    return PredictionBatch.shifted(labels, columns)


def test_everything_is_shifted_like_the_labels():
    batch = _batch()
    assert batch.labels.tolist() == [[11, 12, 13, 14, 15, I, I]]
    assert batch.column(INSTRUCTION).tolist() == [[True, True, False, False, False, False, False]]
    assert batch.column(SEGMENT).tolist() == [[0] * 5 + [-1, -1]]
    assert batch.column(UNCERTAINTY)[0].tolist() == pytest.approx([0.5] * 5 + [0.0, 0.0])


@pytest.mark.parametrize(
    "weight, smoothing, expected_eps, expected_weights",
    [
        (1.0, None, [0.1] * 5, [1, 1, 1, 1, 1]),  # IM with the sample's own epsilon
        (0.5, 0.0, [0.0, 0.0, 0.1, 0.1, 0.1], [0.5, 0.5, 1, 1, 1]),
        (0.0, None, [0.1] * 5, [0, 0, 1, 1, 1]),  # plain SFT: instructions drop out
    ],
)
def test_instruction_tokens_get_their_own_weight_and_smoothing(
    weight, smoothing, expected_eps, expected_weights
):
    objective = SmoothedSFT(
        UncertaintyToEpsilon("linear", 0.0, 0.2),
        instruction_weight=weight,
        instruction_smoothing=smoothing,
    )
    batch = _batch()
    assert objective.epsilon(batch)[0, :5].tolist() == pytest.approx(expected_eps)
    weights = objective.weights(batch)
    assert weights[0, :5].tolist() == pytest.approx(expected_weights)
    assert weights[0, 5:].tolist() == [0.0, 0.0]  # untrained positions
    assert float(objective.normalizer(batch)) == pytest.approx(sum(expected_weights))
    terms = objective.terms(batch)
    eps = torch.tensor(expected_eps)
    w = torch.tensor(expected_weights, dtype=torch.float32)
    torch.testing.assert_close(terms.nll_weight[0, :5], w * (1 - eps))
    torch.testing.assert_close(terms.uniform_weight[0, :5], w * eps)
