"""What the two loss forms (fused, from logits) share: arguments, objectives, statistics."""

from __future__ import annotations

from collections.abc import Callable
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


@dataclass
class TokenTerms:
    """An objective written in each token's NLL and uniform cross entropy:

        loss = sum_t nll_weight_t * nll_t + uniform_weight_t * uniform_t + extra(nll, uniform)

    `nll_weight` / `uniform_weight` are constants shaped like the labels (None: all zero); the
    label-smoothed CE of token t with weight w and smoothing eps is the pair (w(1 - eps), w eps).
    `extra` is a differentiable function of the two per-token tensors (shaped like the labels,
    0 at ignored tokens) for what is not linear in them, e.g. a sigmoid of a sequence's mean
    log-probability; None when there is nothing else.
    """

    nll_weight: torch.Tensor | None = None
    uniform_weight: torch.Tensor | None = None
    extra: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None

    @classmethod
    def smoothed(
        cls, epsilon: torch.Tensor, weight: torch.Tensor, scale: float = 1.0
    ) -> TokenTerms:
        """Label-smoothed cross entropy per token, times `weight` (0 drops a token) and `scale`."""
        w = weight.to(epsilon.dtype) * scale
        return cls(nll_weight=w * (1.0 - epsilon), uniform_weight=w * epsilon)

    def flat_weights(self, shape, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        def flat(t):
            if t is None:
                return torch.zeros(shape, device=device, dtype=dtype).reshape(-1)
            return t.to(device=device, dtype=dtype).expand(shape).reshape(-1)

        return flat(self.nll_weight), flat(self.uniform_weight)

    def value(self, nll: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
        """The loss from given per-token statistics (differentiable in them)."""
        total = nll.new_zeros(())
        if self.nll_weight is not None:
            total = total + (self.nll_weight.to(nll.dtype) * nll).sum()
        if self.uniform_weight is not None:
            total = total + (self.uniform_weight.to(nll.dtype) * uniform).sum()
        if self.extra is not None:
            total = total + self.extra(nll, uniform)
        return total


@dataclass
class TokenLoss:
    """A loss and the per-token statistics it came from (detached, shaped like the labels)."""

    loss: torch.Tensor
    nll: torch.Tensor
    uniform: torch.Tensor
