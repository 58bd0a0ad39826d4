"""Argument handling shared by the two loss forms."""

from __future__ import annotations

from dataclasses import dataclass

import torch

REDUCTIONS = ("mean", "sum", "none")


def broadcast_epsilon(epsilon: float | torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Epsilon as a tensor of the labels' shape on the labels' device (fp32, or fp64 if given)."""
    eps = torch.as_tensor(epsilon, device=labels.device)
    if eps.dtype != torch.float64:
        eps = eps.float()
    return eps.expand(labels.shape)


def compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    """fp32 for fp32/bf16/fp16 inputs; fp64 inputs stay fp64 (reference checks)."""
    return torch.float64 if tensor.dtype == torch.float64 else torch.float32


def check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def reduce_losses(per_token: torch.Tensor, valid: torch.Tensor, reduction: str) -> torch.Tensor:
    """Reduce per-token losses (already 0 at ignored tokens); a mean over no token is 0."""
    check_reduction(reduction)
    if reduction == "none":
        return per_token
    total = per_token.sum()
    if reduction == "sum":
        return total
    return total / valid.sum().clamp(min=1)


@dataclass
class TokenStatistics:
    """Per-token quantities from which any smoothed loss and the eval metrics follow.

    With lse the log-sum-exp of the logits: `nll` = lse - z_y (the unsmoothed cross entropy),
    `uniform_ce` = lse - mean(z) (cross entropy against the uniform distribution), `correct`
    = the target has the highest logit. Zero / False at ignored tokens.
    """

    nll: torch.Tensor
    uniform_ce: torch.Tensor
    correct: torch.Tensor
    valid: torch.Tensor

    def smoothed(self, epsilon: torch.Tensor | float) -> torch.Tensor:
        """Per-token label-smoothed CE: (1 - eps) * nll + eps * uniform_ce."""
        return (1.0 - epsilon) * self.nll + epsilon * self.uniform_ce

    def reshape(self, shape) -> TokenStatistics:
        return TokenStatistics(
            *(t.reshape(shape) for t in (self.nll, self.uniform_ce, self.correct, self.valid))
        )
