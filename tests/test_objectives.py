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


# --- point-wise preference (ULMA) -------------------------------------------------------------

from axolotl_ual.columns import PREFERENCE, REFERENCE  # noqa: E402
from axolotl_ual.objectives import PointwisePreference  # noqa: E402


def _preference_batch(labels_per_sequence, seed=0):
    """Three sequences (two packed in row 0, one in row 1) with prompt tokens, response tokens
    and padding, their labels, and arbitrary reference log-probabilities."""
    g = torch.Generator().manual_seed(seed)
    lab = torch.tensor(
        [
            [I, I, 5, 6, 7, I, I, 8, 9, I],  # sequence 0: tokens 2-4, sequence 1: tokens 7-8
            [I, I, I, 3, 4, 5, 6, I, I, I],  # sequence 2: tokens 3-6, then padding
        ]
    )
    segment = torch.tensor([[0, 0, 0, 0, 0, 1, 1, 1, 1, 1], [2, 2, 2, 2, 2, 2, 2, -1, -1, -1]])
    pref = torch.tensor(labels_per_sequence, dtype=torch.float32)[segment.clamp(min=0)]
    columns = {
        UNCERTAINTY.name: torch.rand(lab.shape, generator=g),
        INSTRUCTION.name: torch.zeros(lab.shape, dtype=torch.bool),
        SEGMENT.name: segment,
        PREFERENCE.name: pref,
        REFERENCE.name: -2 * torch.rand(lab.shape, generator=g),
    }
    return PredictionBatch.shifted(lab, columns), g


def _independent_loss(batch, nll, uniform, labels, *, variant, continuous, beta, c, eps_of):
    """The issue's formulas written out sequence by sequence (no shared code with the objective)."""
    total = 0.0
    trained = batch.labels != I
    seg = batch.columns[SEGMENT.name]
    ref = batch.columns[REFERENCE.name]
    eps = eps_of(batch.columns[UNCERTAINTY.name])
    for i, s in enumerate(labels):
        tokens = trained & (seg == i)
        delta = (-nll[tokens] - ref[tokens]).mean()
        if s == 1 and variant == "ulma":
            ce = (1 - eps[tokens]) * nll[tokens] + eps[tokens] * uniform[tokens]
            total = total + ce.mean()
        elif s == 1:
            total = total - torch.nn.functional.logsigmoid(beta * delta + c)
        elif continuous:
            total = total + (s - beta * delta - c) ** 2
        else:
            total = total - torch.nn.functional.logsigmoid(-beta * delta - c)
    return total / len(labels)


@pytest.mark.parametrize(
    "variant, continuous, labels",
    [
        ("ulma", False, [1, 0, 1]),
        ("ulma", True, [1, 0.3, 0.0]),
        ("pointwise_dpo", False, [1, 0, 0]),
        ("pointwise_dpo", True, [0.8, 1, 0.1]),
    ],
)
def test_preference_objective_matches_the_formulas(variant, continuous, labels):
    batch, g = _preference_batch(labels)
    eps_of = UncertaintyToEpsilon("linear", 0.0, 0.2)
    beta, c = 0.7, 0.15
    objective = PointwisePreference(
        eps_of, variant=variant, continuous=continuous, beta=beta, constant=c
    )
    shape = batch.labels.shape
    nll = (3 * torch.rand(shape, generator=g, dtype=torch.float64)).masked_fill(~batch.trained, 0)
    uniform = (5 + torch.rand(shape, generator=g, dtype=torch.float64)).masked_fill(
        ~batch.trained, 0
    )
    nll.requires_grad_(True)
    uniform.requires_grad_(True)

    assert float(objective.normalizer(batch)) == 3.0  # one term per sequence
    ours = objective.terms(batch).value(nll, uniform) / objective.normalizer(batch)
    theirs = _independent_loss(
        batch,
        nll,
        uniform,
        labels,
        variant=variant,
        continuous=continuous,
        beta=beta,
        c=c,
        eps_of=eps_of,
    )
    torch.testing.assert_close(ours, theirs.to(ours.dtype))
    ours_grads = torch.autograd.grad(ours, (nll, uniform), allow_unused=True)
    theirs_grads = torch.autograd.grad(theirs, (nll, uniform), allow_unused=True)
    for mine, ref, leaf in zip(ours_grads, theirs_grads, (nll, uniform), strict=True):
        zero = torch.zeros_like(leaf)
        torch.testing.assert_close(zero if mine is None else mine, zero if ref is None else ref)


def test_preference_objective_fused_equals_logits_path():
    """The same objective through the chunked fused loss and through materialized logits."""
    from axolotl_ual.loss import linear_token_loss, token_loss_from_logits

    batch, g = _preference_batch([1, 0, 0], seed=3)
    objective = PointwisePreference(UncertaintyToEpsilon("linear", 0.0, 0.2), beta=0.5)
    terms = objective.terms(batch)
    d, vocab = 6, 13
    hidden = torch.randn(*batch.labels.shape, d, generator=g, dtype=torch.float64)
    weight = torch.randn(vocab, d, generator=g, dtype=torch.float64)
    labels = batch.labels.clamp(max=vocab - 1).masked_fill(~batch.trained, I)

    def grads(loss_of):
        h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        loss = loss_of(h, w)
        return (loss.detach(), *torch.autograd.grad(loss, (h, w)))

    fused = grads(lambda h, w: linear_token_loss(h, w, labels, terms, chunk_size=3).loss)
    logits = grads(lambda h, w: token_loss_from_logits(h @ w.t(), labels, terms).loss)
    for a, b in zip(fused, logits, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_preference_statistics_are_rewards_and_log_probs():
    batch, g = _preference_batch([1, 0, 1])
    objective = PointwisePreference(UncertaintyToEpsilon("linear", 0.0, 0.2), beta=0.5)
    nll = torch.rand(batch.labels.shape, generator=g).masked_fill(~batch.trained, 0)
    sums = objective.statistics(batch, nll)
    seg, ref = batch.columns[SEGMENT.name], batch.columns[REFERENCE.name]
    per_seq = []
    for i in range(3):
        tokens = batch.trained & (seg == i)
        per_seq.append(((-nll[tokens]).mean(), (-nll[tokens] - ref[tokens]).mean()))
    expected = [
        0.5 * (per_seq[0][1] + per_seq[2][1]),
        2,
        0.5 * per_seq[1][1],
        1,
        per_seq[0][0] + per_seq[2][0],
        per_seq[1][0],
    ]
    torch.testing.assert_close(
        sums, torch.tensor([float(x) for x in expected], dtype=torch.float64)
    )
