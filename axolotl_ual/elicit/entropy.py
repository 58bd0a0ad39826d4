"""The entropy math of the `entropy` method: exact from logits (hf), estimated from top
logprobs (vllm). No torch import at module level."""

from __future__ import annotations

import math
from collections.abc import Sequence


def mean_response_entropy(logits, input_mask) -> list[tuple[float, int]]:
    """Per batch row: (mean entropy in nats over the masked tokens' predictions, token count).

    `logits` [B, T, V] from a forward pass over the batch; `input_mask` [B, T] bool, true for
    response tokens. Token t is predicted by the logits at t - 1, so the first token never counts.
    """
    import torch

    predicted = input_mask[:, 1:].to(logits.device)
    rows = torch.arange(logits.shape[0], device=logits.device)[:, None].expand_as(predicted)
    row_of = rows[predicted]
    selected = logits[:, :-1][predicted]  # [N, V], only the positions that count
    entropies = torch.empty(selected.shape[0], dtype=torch.float64, device=logits.device)
    for start in range(0, selected.shape[0], 1024):  # float32 copies of a chunk at a time
        chunk = torch.log_softmax(selected[start : start + 1024].float(), dim=-1)
        entropies[start : start + 1024] = -(chunk.exp() * chunk).sum(-1).double()
    sums = torch.zeros(logits.shape[0], dtype=torch.float64, device=logits.device)
    sums.index_add_(0, row_of, entropies)
    counts = predicted.sum(1)
    return [
        (float(s) / int(c) if int(c) else math.nan, int(c))
        for s, c in zip(sums, counts, strict=True)
    ]


def entropy_from_top_logprobs(logprobs: Sequence[float], vocab_size: int) -> float:
    """Entropy (nats) of a distribution known only by its top logprobs.

    The probability left over, 1 - sum(top), is spread evenly over the other tokens: the largest
    entropy consistent with what is known, exact when the top tokens hold all the mass.
    """
    probs = [(math.exp(lp), lp) for lp in logprobs if lp is not None and math.isfinite(lp)]
    entropy = -math.fsum(p * lp for p, lp in probs)
    rest_mass = 1.0 - math.fsum(p for p, _ in probs)
    rest_tokens = vocab_size - len(probs)
    if rest_mass > 1e-12 and rest_tokens > 0:
        entropy -= rest_mass * math.log(rest_mass / rest_tokens)
    return entropy
