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

Pure torch: no axolotl imports.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .columns import BATCH_COLUMNS, INSTRUCTION, UNCERTAINTY
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

    name = "sft"

    def __init__(
        self,
        epsilon_of: Callable[[torch.Tensor], torch.Tensor],
        *,
        instruction_weight: float = 1.0,
        instruction_smoothing: float | None = None,
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
