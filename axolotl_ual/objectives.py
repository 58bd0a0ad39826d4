"""The training objectives, written in per-token statistics (`loss.TokenTerms`).

An objective turns one micro-batch's side columns into the terms of its loss and into its share
of the normalizer; the trainer divides the summed terms by the normalizer of the whole
accumulated step across ranks, so gradient accumulation and data parallelism are exact.

- `SmoothedSFT`: UAL's label-smoothed cross entropy per token, with Instruction Modelling's
  instruction tokens at their own weight and smoothing:

      loss = sum_t w_t * CE_smoothed(eps_t) / sum_t w_t   over the trained tokens

  w_t = 1 and eps_t = mapping(u) for response tokens; w_t = `instruction_weight` and eps_t =
  `instruction_smoothing` (or mapping(u)) for instruction tokens. With every eps = 0 it is
  axolotl's SFT loss (weight 1: with `train_on_inputs`; weight 0: without).
- `PointwisePreference`: ULMA (Cai et al., arXiv 2312.02554) on point-wise data. Per sequence i
  with response tokens R_i, Delta_i = mean_{t in R_i} (log pi(y_t) - log pi_ref(y_t)), and

      positive (label 1), ulma:          l_i = SmoothedSFT's weighted mean CE over sequence i
      positive, pointwise_dpo:           l_i = -log sigmoid(beta * Delta_i + c)
      negative (label 0), binary:        l_i = -log sigmoid(-beta * Delta_i - c)
      label s != 1, continuous:          l_i = (s - beta * Delta_i - c)^2
      loss = (1 / N) * sum_i l_i         over the N sequences of the step (all ranks)

  With balanced batches this equals the reference code's separate means of the positive and
  the negative terms (summed). The positive SFT term is linear in the token statistics; the
  DPO terms are the non-linear rest (`TokenTerms.extra`).

Pure torch: no axolotl imports.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .args import DEFAULTS, Objective, PreferenceLabels
from .columns import BATCH_COLUMNS, INSTRUCTION, PREFERENCE, REFERENCE, SEGMENT, UNCERTAINTY
from .loss import TokenTerms

IGNORE_INDEX = -100


@dataclass
class PredictionBatch:
    """One micro-batch aligned with the predictions: position t predicts token t + 1, so the
    labels and every side column are shifted left by one (as HF's causal LM loss shifts)."""

    labels: torch.Tensor
    columns: dict[str, torch.Tensor]

    @classmethod
    def shifted(cls, labels: torch.Tensor, columns: dict[str, torch.Tensor]) -> PredictionBatch:
        device = labels.device
        shifted = {
            name: _shift(values.to(device), BATCH_COLUMNS[name].pad)
            for name, values in columns.items()
        }
        return cls(_shift(labels, IGNORE_INDEX), shifted)

    @property
    def trained(self) -> torch.Tensor:
        return self.labels != IGNORE_INDEX

    def column(self, column) -> torch.Tensor:
        """A declared column (its padding value where the batch does not have it)."""
        values = self.columns.get(column.name)
        if values is None:
            return torch.full(
                self.labels.shape, column.pad, dtype=column.dtype, device=self.labels.device
            )
        return values


def _shift(values: torch.Tensor, pad) -> torch.Tensor:
    if values.is_floating_point():
        return F.pad(values, (0, 1), value=float(pad))[..., 1:]
    return torch.cat([values[..., 1:], torch.full_like(values[..., :1], pad)], dim=-1)


class SmoothedSFT:
    """Per-sample label smoothing (UAL) with instruction tokens at their own weight / smoothing."""

    name = Objective.sft
    needs_reference = False

    def __init__(
        self,
        epsilon_of: Callable[[torch.Tensor], torch.Tensor],
        *,
        instruction_weight: float = DEFAULTS.ual_instruction_weight,
        instruction_smoothing: float | None = None,  # None: the sample's own (`sample`)
    ):
        self.epsilon_of = epsilon_of
        self.instruction_weight = float(instruction_weight)
        self.instruction_smoothing = instruction_smoothing

    def epsilon(self, batch: PredictionBatch) -> torch.Tensor:
        eps = self.epsilon_of(batch.column(UNCERTAINTY))
        if self.instruction_smoothing is not None:
            eps = torch.where(batch.column(INSTRUCTION), self.instruction_smoothing, eps)
        return eps

    def weights(self, batch: PredictionBatch) -> torch.Tensor:
        """w_t: 1 for trained response tokens, `instruction_weight` for instruction tokens."""
        trained = batch.trained.to(torch.float32)
        if self.instruction_weight == 1.0:
            return trained
        return torch.where(batch.column(INSTRUCTION), self.instruction_weight, 1.0) * trained

    def terms(self, batch: PredictionBatch) -> TokenTerms:
        return TokenTerms.smoothed(self.epsilon(batch), self.weights(batch))

    def normalizer(self, batch: PredictionBatch) -> torch.Tensor:
        return self.weights(batch).sum()


@dataclass
class Sequences:
    """The sequences of a micro-batch (by `ual_segment`) that have response tokens."""

    segment: torch.Tensor  # (B, T) each token's sequence index, -1 where not a response token
    count: torch.Tensor  # (S,) response tokens per sequence
    label: torch.Tensor  # (S,) the sequence's preference label (NaN where it has no tokens)

    @property
    def present(self) -> torch.Tensor:
        return self.count > 0

    def mean(self, per_token: torch.Tensor) -> torch.Tensor:
        """(S,) the mean of `per_token` over each sequence's response tokens (0 where none)."""
        mask = self.segment >= 0
        sums = per_token.new_zeros(self.count.shape).index_add(
            0, self.segment[mask], per_token[mask]
        )
        return sums / self.count.clamp(min=1).to(sums.dtype)


PREFERENCE_OBJECTIVES = (Objective.ulma, Objective.pointwise_dpo)


class PointwisePreference:
    """ULMA / point-wise DPO: one term per sequence, normalized by the number of sequences."""

    needs_reference = True

    def __init__(
        self,
        epsilon_of: Callable[[torch.Tensor], torch.Tensor],
        *,
        variant: str = Objective.ulma,
        continuous: bool = DEFAULTS.ual_preference_labels == PreferenceLabels.continuous,
        beta: float = DEFAULTS.ual_preference_beta,
        constant: float = DEFAULTS.ual_preference_constant,
        instruction_weight: float = DEFAULTS.ual_instruction_weight,
        instruction_smoothing: float | None = None,  # None: the sample's own (`sample`)
    ):
        if variant not in PREFERENCE_OBJECTIVES:
            raise ValueError(f"unknown point-wise preference variant {variant!r}")
        self.name = Objective(variant)
        self.sft = SmoothedSFT(
            epsilon_of,
            instruction_weight=instruction_weight,
            instruction_smoothing=instruction_smoothing,
        )
        self.epsilon_of = epsilon_of
        self.continuous = continuous
        self.beta = float(beta)
        self.constant = float(constant)

    def epsilon(self, batch: PredictionBatch) -> torch.Tensor:
        return self.sft.epsilon(batch)

    def sequences(self, batch: PredictionBatch) -> Sequences:
        response = batch.trained & ~batch.column(INSTRUCTION)
        segment = torch.where(response, batch.column(SEGMENT), -1)
        n = int(batch.column(SEGMENT).max().item()) + 1 if batch.labels.numel() else 0
        mask = segment >= 0
        count = torch.bincount(segment[mask], minlength=n)
        label = torch.full((n,), float("nan"), dtype=torch.float32, device=segment.device)
        label[segment[mask]] = batch.column(PREFERENCE)[mask].float()
        return Sequences(segment, count, label)

    def _positive(self, sequences: Sequences) -> torch.Tensor:
        return sequences.present & (sequences.label == 1.0)

    def terms(self, batch: PredictionBatch) -> TokenTerms:
        sequences = self.sequences(batch)
        positive = self._positive(sequences)
        nll_weight = uniform_weight = None
        if self.name == Objective.ulma:  # positives: the sequence's weighted mean smoothed CE
            weights = self.sft.weights(batch)
            segment = torch.where(batch.trained, batch.column(SEGMENT), -1)
            in_positive = (segment >= 0) & positive[segment.clamp(min=0)]
            weights = torch.where(in_positive, weights, 0.0)
            totals = weights.new_zeros(positive.shape).index_add(
                0, segment[in_positive], weights[in_positive]
            )
            per_token = weights / totals[segment.clamp(min=0)].clamp(min=_TINY)
            per_token = torch.where(in_positive, per_token, 0.0)
            eps = self.sft.epsilon(batch)
            nll_weight, uniform_weight = per_token * (1.0 - eps), per_token * eps
        reference = batch.column(REFERENCE).to(torch.float32)

        def preference_terms(nll: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
            delta = sequences.mean(-nll - reference.to(nll.dtype))
            return self._preference_losses(delta, sequences).sum()

        return TokenTerms(nll_weight, uniform_weight, preference_terms)

    def _preference_losses(self, delta: torch.Tensor, sequences: Sequences) -> torch.Tensor:
        """(S,) each sequence's non-linear term (0 for ULMA's positives and absent sequences)."""
        label = torch.nan_to_num(sequences.label, nan=-1.0).to(delta.dtype)
        margin = self.beta * delta + self.constant
        positive = self._positive(sequences)
        zero = torch.zeros_like(delta)
        if self.continuous:
            rest = torch.where(sequences.present & ~positive, (label - margin) ** 2, zero)
        else:
            negative = sequences.present & (label == 0.0)
            rest = torch.where(negative, -F.logsigmoid(-margin), zero)
        if self.name == Objective.pointwise_dpo:
            rest = rest + torch.where(positive, -F.logsigmoid(margin), zero)
        return rest

    def normalizer(self, batch: PredictionBatch) -> torch.Tensor:
        return self.sequences(batch).present.sum().to(torch.float32)

    def statistics(self, batch: PredictionBatch, nll: torch.Tensor) -> torch.Tensor:
        """Sums for the logs: [reward+ sum, positives, reward- sum, negatives, logp+ sum,
        logp- sum], with reward = beta * Delta and logp the mean per-token log-probability."""
        sequences = self.sequences(batch)
        logp = sequences.mean(-nll.float())
        delta = sequences.mean(-nll.float() - batch.column(REFERENCE).float())
        positive = self._positive(sequences)
        negative = sequences.present & ~positive
        reward = self.beta * delta
        return torch.stack(
            [
                reward[positive].double().sum(),
                positive.sum().double(),
                reward[negative].double().sum(),
                negative.sum().double(),
                logp[positive].double().sum(),
                logp[negative].double().sum(),
            ]
        )


_TINY = torch.finfo(torch.float32).tiny
