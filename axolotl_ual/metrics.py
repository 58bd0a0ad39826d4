"""What UAL logs: mean epsilon / uncertainty while training, NLL and accuracy by uncertainty at eval.

Accumulators hold token-weighted sums as one tensor, so the trainer can add them up over
data-parallel ranks with a single all-reduce before turning them into means. Pure torch.
"""

from __future__ import annotations

import torch

from .loss import TokenStatistics


class TrainingMeter:
    """Sums of epsilon and uncertainty over trained tokens (NaN uncertainties skipped)."""

    def __init__(self):
        self.totals: torch.Tensor | None = None  # eps sum, u sum, tokens, tokens with a known u

    @torch.no_grad()
    def add(self, uncertainty: torch.Tensor, epsilon: torch.Tensor, trained: torch.Tensor) -> None:
        known = trained & ~torch.isnan(uncertainty)
        row = torch.stack(
            [
                epsilon[trained].double().sum(),
                uncertainty[known].double().sum(),
                trained.sum().double(),
                known.sum().double(),
            ]
        )
        self.totals = row if self.totals is None else self.totals + row

    @staticmethod
    def metrics(totals: torch.Tensor) -> dict[str, float]:
        eps_sum, u_sum, tokens, known = totals.tolist()
        metrics = {}
        if tokens:
            metrics["ual_epsilon_mean"] = round(eps_sum / tokens, 6)
        if known:
            metrics["ual_uncertainty_mean"] = round(u_sum / known, 6)
        return metrics


def bucket_names(edges: list[float]) -> list[str]:
    if len(edges) == 2:
        return ["low", "mid", "high"]
    if len(edges) == 1:
        return ["low", "high"]
    return [f"q{i}" for i in range(len(edges) + 1)]


class EvalBuckets:
    """Unsmoothed NLL and top-1 accuracy of trained tokens, split by their sample's uncertainty.

    With cut points `edges` (e.g. [1/3, 2/3]) a token whose uncertainty u satisfies
    edges[i-1] <= u < edges[i] falls in bucket i. Tokens without a known uncertainty (NaN,
    possible with `ual_uncertainty_source: constant`) count in the overall figures only.
    """

    def __init__(self, edges: list[float]):
        self.edges = torch.tensor(list(edges), dtype=torch.float32)
        self.names = bucket_names(list(edges))
        self.totals: torch.Tensor | None = None  # (buckets + unknown, [nll, correct, tokens])

    @torch.no_grad()
    def add(self, uncertainty: torch.Tensor, stats: TokenStatistics) -> None:
        n_buckets = len(self.names)
        # contiguous: the trainer passes a shifted view, which torch.bucketize warns about
        ordered = uncertainty.float().contiguous()
        bucket = torch.bucketize(ordered, self.edges.to(uncertainty.device), right=True)
        bucket = bucket.masked_fill(torch.isnan(uncertainty), n_buckets)
        values = torch.stack(
            [
                stats.nll.double(),
                stats.correct.double(),
                torch.ones_like(stats.nll, dtype=torch.float64),
            ],
            dim=-1,
        )
        totals = torch.zeros(n_buckets + 1, 3, dtype=torch.float64, device=uncertainty.device)
        totals.index_add_(0, bucket[stats.valid], values[stats.valid])
        self.totals = totals if self.totals is None else self.totals + totals

    def metrics(self, totals: torch.Tensor, prefix: str = "eval") -> dict[str, float]:
        rows = [("", totals.sum(dim=0))]
        if totals[:-1, 2].sum() > 0:  # some tokens have a known uncertainty
            rows += [(f"_{name}", totals[i]) for i, name in enumerate(self.names)]
        metrics: dict[str, float] = {}
        for suffix, (nll, correct, tokens) in rows:
            tokens = int(tokens.item())
            metrics[f"{prefix}_ual_tokens{suffix}"] = tokens
            if tokens:
                metrics[f"{prefix}_ual_nll{suffix}"] = round(nll.item() / tokens, 6)
                metrics[f"{prefix}_ual_accuracy{suffix}"] = round(correct.item() / tokens, 6)
        return metrics
