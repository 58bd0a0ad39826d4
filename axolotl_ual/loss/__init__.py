"""Label-smoothed cross entropy with one epsilon per token.

- `linear_cross_entropy(hidden, weight, labels, epsilon, ...)`: fused with the output
  projection, computed chunk by chunk without materializing the logits (the trainer's default).
- `smoothed_cross_entropy(logits, labels, epsilon, ...)`: the same loss from logits.

Both follow `torch.nn.functional.cross_entropy(..., label_smoothing=eps)` exactly. No axolotl
imports: usable in any PyTorch training loop.
"""

from .linear_cross_entropy import default_chunk_size, linear_cross_entropy
from .smoothed_cross_entropy import smoothed_cross_entropy

__all__ = ["default_chunk_size", "linear_cross_entropy", "smoothed_cross_entropy"]
