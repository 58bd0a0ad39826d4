"""Per-token label-smoothed cross entropy from materialized logits.

The reference form, and the trainer's fallback when the fused path cannot apply.
"""

from __future__ import annotations

import torch

from ._common import (
    TokenLoss,
    TokenStatistics,
    TokenTerms,
    broadcast_epsilon,
    compute_dtype,
    reduce_losses,
)


def smoothed_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    epsilon: float | torch.Tensor = 0.0,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> torch.Tensor:
    """`F.cross_entropy(logits, labels, label_smoothing=eps)` with one eps per token.

    PyTorch's convention: the mass eps is spread uniformly over all V classes,

        CE_eps = -(1 - eps) * log p_y - eps * mean_v(log p_v)

    computed from one log-softmax of the logits.

    Args:
        logits: (..., V) scores, any float dtype (computed in fp32, fp64 stays fp64).
        labels: (...) target ids; `ignore_index` marks tokens without a loss.
        epsilon: a float or a tensor broadcastable to `labels`, each value in [0, 1).
        reduction: "mean" over non-ignored tokens (0 when there are none), "sum" or "none".
    """
    vocab = logits.shape[-1]
    flat_logits = logits.reshape(-1, vocab).to(compute_dtype(logits))
    flat_labels = labels.reshape(-1)
    eps = broadcast_epsilon(epsilon, labels).reshape(-1).to(flat_logits.dtype)
    valid = flat_labels != ignore_index
    safe_labels = flat_labels.masked_fill(~valid, 0)

    # one log-softmax feeds both terms: 3x the logits' memory at peak (F.cross_entropy plus
    # separate gather/mean branches on the logits would hold 4x)
    log_probs = flat_logits.log_softmax(dim=-1)
    target = log_probs.gather(1, safe_labels[:, None]).squeeze(1)
    per_token = -(1.0 - eps) * target - eps * log_probs.mean(dim=-1)
    per_token = per_token.masked_fill(~valid, 0.0)
    return reduce_losses(per_token.reshape(labels.shape), valid, reduction)


def token_loss_from_logits(
    logits: torch.Tensor, labels: torch.Tensor, terms: TokenTerms, *, ignore_index: int = -100
) -> TokenLoss:
    """The objective `terms` (see `TokenTerms`) from materialized logits, differentiable.

    The reference form of `linear_token_loss`, and the trainer's logits path. Per-token NLL
    and uniform CE come from one log-softmax, as in `smoothed_cross_entropy`.
    """
    vocab = logits.shape[-1]
    flat_logits = logits.reshape(-1, vocab).to(compute_dtype(logits))
    flat_labels = labels.reshape(-1)
    valid = flat_labels != ignore_index
    safe_labels = flat_labels.masked_fill(~valid, 0)
    log_probs = flat_logits.log_softmax(dim=-1)
    nll = -log_probs.gather(1, safe_labels[:, None]).squeeze(1).masked_fill(~valid, 0.0)
    uniform = -log_probs.mean(dim=-1).masked_fill(~valid, 0.0)
    nll, uniform = nll.reshape(labels.shape), uniform.reshape(labels.shape)
    loss = terms.value(nll, uniform)
    return TokenLoss(loss, nll.detach(), uniform.detach())


@torch.no_grad()
def token_statistics(logits: torch.Tensor, labels: torch.Tensor, *, ignore_index: int = -100):
    """`TokenStatistics` (NLL, uniform CE, top-1 correctness) from materialized logits."""
    vocab = logits.shape[-1]
    flat_logits = logits.reshape(-1, vocab).to(compute_dtype(logits))
    flat_labels = labels.reshape(-1)
    valid = flat_labels != ignore_index
    safe_labels = flat_labels.masked_fill(~valid, 0)
    lse = torch.logsumexp(flat_logits, dim=-1)
    target = flat_logits.gather(1, safe_labels[:, None]).squeeze(1)
    zero = torch.zeros((), dtype=torch.float32, device=logits.device)
    stats = TokenStatistics(
        nll=torch.where(valid, (lse - target).float(), zero),
        uniform_ce=torch.where(valid, (lse - flat_logits.mean(dim=-1)).float(), zero),
        correct=valid & (target >= flat_logits.amax(dim=-1)),
        valid=valid,
    )
    return stats.reshape(labels.shape)
