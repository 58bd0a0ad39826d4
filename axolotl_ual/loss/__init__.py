"""Label-smoothed cross entropy with one epsilon per token.

- `linear_cross_entropy(hidden, weight, labels, epsilon, ...)`: fused with the output
  projection, computed chunk by chunk without materializing the logits.
- `smoothed_cross_entropy(logits, labels, epsilon, ...)`: the same loss from logits.
- `linear_token_loss(hidden, weight, labels, terms, ...)` / `token_loss_from_logits(logits,
  labels, terms)`: any objective written in per-token NLL and uniform CE (`TokenTerms`), fused
  or from logits; what the trainer runs.
- `linear_token_statistics` / `token_statistics`: per-token NLL, uniform CE and top-1
  correctness (no grad), for evaluation.

The losses follow `torch.nn.functional.cross_entropy(..., label_smoothing=eps)` exactly. No axolotl
imports: usable in any PyTorch training loop.
"""

from ._common import TokenLoss, TokenStatistics, TokenTerms
from .linear_cross_entropy import (
    default_chunk_size,
    linear_cross_entropy,
    linear_token_loss,
    linear_token_statistics,
)
from .smoothed_cross_entropy import smoothed_cross_entropy, token_loss_from_logits, token_statistics

__all__ = [
    "TokenLoss",
    "TokenStatistics",
    "TokenTerms",
    "default_chunk_size",
    "linear_cross_entropy",
    "linear_token_loss",
    "linear_token_statistics",
    "smoothed_cross_entropy",
    "token_loss_from_logits",
    "token_statistics",
]
