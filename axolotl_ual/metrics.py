"""What UAL logs: mean epsilon / uncertainty / instruction share while training; at eval, NLL and
accuracy by uncertainty bucket and by token kind (instruction / response).

Accumulators hold token-weighted sums as one tensor, so the trainer can add them up over
data-parallel ranks with a single all-reduce before turning them into means. Pure torch.
"""

from __future__ import annotations

import torch

from .loss import TokenStatistics


class TrainingMeter:
    """Sums over trained tokens: epsilon, uncertainty (NaNs skipped), instruction tokens."""

    def __init__(self):
        # eps sum, u sum, tokens, tokens with a known u, instruction tokens
        self.totals: torch.Tensor | None = None

    @torch.no_grad()
    def add(
        self,
        uncertainty: torch.Tensor,
        epsilon: torch.Tensor,
        trained: torch.Tensor,
        instruction: torch.Tensor | None = None,
    ) -> None:
        known = trained & ~torch.isnan(uncertainty)
        n_instruction = (
            (trained & instruction).sum() if instruction is not None else trained.new_zeros(())
        )
        row = torch.stack(
            [
                epsilon[trained].double().sum(),
                uncertainty[known].double().sum(),
                trained.sum().double(),
                known.sum().double(),
                n_instruction.double(),
            ]
        )
        self.totals = row if self.totals is None else self.totals + row

    @staticmethod
    def metrics(totals: torch.Tensor) -> dict[str, float]:
        eps_sum, u_sum, tokens, known, instruction = totals.tolist()
        metrics = {}
        if tokens:
            metrics["ual_epsilon_mean"] = round(eps_sum / tokens, 6)
        if known:
            metrics["ual_uncertainty_mean"] = round(u_sum / known, 6)
        if instruction:
            metrics["ual_instruction_fraction"] = round(instruction / tokens, 6)
        return metrics


def bucket_names(edges: list[float]) -> list[str]:
    if len(edges) == 2:
        return ["low", "mid", "high"]
    if len(edges) == 1:
        return ["low", "high"]
    return [f"q{i}" for i in range(len(edges) + 1)]


KINDS = ("instruction", "response")


class EvalBuckets:
    """Unsmoothed NLL and top-1 accuracy of trained tokens, split by their sample's uncertainty
    and by token kind.

    With cut points `edges` (e.g. [1/3, 2/3]) a token whose uncertainty u satisfies
    edges[i-1] <= u < edges[i] falls in bucket i. Tokens without a known uncertainty (NaN,
    possible with `ual_uncertainty_source: constant`) count in the overall figures only. The
    instruction / response split is reported once some instruction token was evaluated.
    """

    def __init__(self, edges: list[float]):
        self.edges = torch.tensor(list(edges), dtype=torch.float32)
        self.names = bucket_names(list(edges))
        # rows: buckets, unknown u, instruction, response; columns: nll, correct, tokens
        self.totals: torch.Tensor | None = None

    @torch.no_grad()
    def add(
        self,
        uncertainty: torch.Tensor,
        stats: TokenStatistics,
        instruction: torch.Tensor | None = None,
    ) -> None:
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
        totals = torch.zeros(n_buckets + 3, 3, dtype=torch.float64, device=uncertainty.device)
        totals.index_add_(0, bucket[stats.valid], values[stats.valid])
        is_instruction = torch.zeros_like(stats.valid) if instruction is None else instruction
        for row, mask in ((n_buckets + 1, is_instruction), (n_buckets + 2, ~is_instruction)):
            totals[row] = values[stats.valid & mask].sum(dim=0)
        self.totals = totals if self.totals is None else self.totals + totals

    def metrics(self, totals: torch.Tensor, prefix: str = "eval") -> dict[str, float]:
        n_buckets = len(self.names)
        by_bucket, by_kind = totals[: n_buckets + 1], totals[n_buckets + 1 :]
        rows = [("", by_bucket.sum(dim=0))]
        if by_bucket[:-1, 2].sum() > 0:  # some tokens have a known uncertainty
            rows += [(f"_{name}", by_bucket[i]) for i, name in enumerate(self.names)]
        if by_kind[0, 2] > 0:  # some instruction tokens were evaluated
            rows += [(f"_{kind}", by_kind[i]) for i, kind in enumerate(KINDS)]
        metrics: dict[str, float] = {}
        for suffix, (nll, correct, tokens) in rows:
            tokens = int(tokens.item())
            metrics[f"{prefix}_ual_tokens{suffix}"] = tokens
            if tokens:
                metrics[f"{prefix}_ual_nll{suffix}"] = round(nll.item() / tokens, 6)
                metrics[f"{prefix}_ual_accuracy{suffix}"] = round(correct.item() / tokens, 6)
        return metrics


class PreferenceMeter:
    """Sums over sequences for the point-wise preference objectives, logged like TRL's
    preference trainers: rewards (beta * Delta), mean per-token log-probabilities, their margin
    and the share of positives, over the sequences seen since the last log."""

    def __init__(self):
        # reward+ sum, positives, reward- sum, negatives, logp+ sum, logp- sum
        self.totals: torch.Tensor | None = None

    def add(self, sums: torch.Tensor) -> None:
        sums = sums.detach().double()
        self.totals = sums if self.totals is None else self.totals + sums

    @staticmethod
    def metrics(totals: torch.Tensor, prefix: str = "") -> dict[str, float]:
        reward_pos, n_pos, reward_neg, n_neg, logp_pos, logp_neg = totals.tolist()
        metrics: dict[str, float] = {}
        name = f"{prefix}_ual" if prefix else "ual"
        if n_pos:
            metrics[f"{name}_rewards_positive"] = round(reward_pos / n_pos, 6)
            metrics[f"{name}_logps_positive"] = round(logp_pos / n_pos, 6)
        if n_neg:
            metrics[f"{name}_rewards_negative"] = round(reward_neg / n_neg, 6)
            metrics[f"{name}_logps_negative"] = round(logp_neg / n_neg, 6)
        if n_pos and n_neg:
            metrics[f"{name}_rewards_margin"] = round(reward_pos / n_pos - reward_neg / n_neg, 6)
        if n_pos + n_neg:
            metrics[f"{name}_positive_fraction"] = round(n_pos / (n_pos + n_neg), 6)
        return metrics
