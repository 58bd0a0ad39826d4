"""Per-token label-smoothed cross entropy from materialized logits.

The reference form, and the trainer's fallback when the fused path cannot apply.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._common import TokenStatistics, broadcast_epsilon, compute_dtype, reduce_losses


def smoothed_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    epsilon: float | torch.Tensor = 0.0,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> torch.Tensor:
    """`F.cross_entropy(logits, labels, label_smoothing=eps)` with one eps per token.

    Uses the identity (PyTorch's convention: mass eps spread uniformly over all V classes)

        CE_eps = (1 - eps) * (lse(z) - z_y) + eps * (lse(z) - mean(z))
               = CE + eps * (z_y - mean(z))

    so it costs one ordinary cross entropy plus a mean over the vocabulary.

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

    ce = F.cross_entropy(flat_logits, safe_labels, reduction="none")
    z_y = flat_logits.gather(1, safe_labels[:, None]).squeeze(1)
    per_token = ce + eps * (z_y - flat_logits.mean(dim=-1))
    per_token = per_token.masked_fill(~valid, 0.0)
    return reduce_losses(per_token.reshape(labels.shape), valid, reduction)


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
