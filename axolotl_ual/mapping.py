"""Uncertainty -> label-smoothing epsilon.

    eps = eps_min + (eps_max - eps_min) * F(u)

with F one of:

- ``linear``: F(u) = u (the paper's mapping).
- ``power``:  F(u) = u ** gamma (gamma > 1 keeps most samples sharp, < 1 smooths more).
- ``rank``:   F(u) = the mid-rank quantile of u among the training samples' uncertainties,
  so the smoothing range is spread evenly over the data whatever the judge's scale
  (the lowest-rated sample gets eps_min, the highest eps_max, ties share their mean rank).
  Values between two training values are interpolated linearly.
- ``constant``: eps = eps_max for every token (plain label smoothing, the fixed baseline).

The kinds are `args.EpsilonMapping`'s members and `constant` (`UncertaintySource.constant`);
the defaults are `UALArgs`'s. Pure torch: no axolotl imports, usable on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from .args import DEFAULTS, EpsilonMapping, UncertaintySource

CONSTANT = UncertaintySource.constant.value  # a source, which is its own mapping
MAPPINGS = (*(kind.value for kind in EpsilonMapping), CONSTANT)


def epsilon_mapping(
    settings: Any, reference: Callable[[], Sequence[float] | torch.Tensor] | None = None
) -> UncertaintyToEpsilon:
    """The mapping set by the `ual_*` attributes of `settings` (`UALArgs`, the validated config
    or the trainer's `TrainingArguments`: they share the key names).

    `ual_uncertainty_source: constant` is plain label smoothing at `ual_smoothing_max`. The
    rank mapping calls `reference()` for the training samples' uncertainties.
    """
    constant = settings.ual_uncertainty_source == UncertaintySource.constant
    kind = CONSTANT if constant else settings.ual_mapping
    values = None
    if kind == EpsilonMapping.rank:
        if reference is None:
            raise ValueError("the rank mapping needs the training samples' uncertainties")
        values = reference()
    return UncertaintyToEpsilon(
        kind,
        settings.ual_smoothing_min,
        settings.ual_smoothing_max,
        power=settings.ual_mapping_power,
        reference=values,
    )


class UncertaintyToEpsilon:
    """Callable mapping a tensor of uncertainties in [0, 1] to epsilons (same shape, float32)."""

    def __init__(
        self,
        kind: str = DEFAULTS.ual_mapping,
        eps_min: float = DEFAULTS.ual_smoothing_min,
        eps_max: float = DEFAULTS.ual_smoothing_max,
        *,
        power: float = DEFAULTS.ual_mapping_power,
        reference: Sequence[float] | torch.Tensor | None = None,
    ):
        if kind not in MAPPINGS:
            raise ValueError(f"unknown mapping {kind!r}; expected one of {MAPPINGS}")
        kind = str(kind)  # an enum member or its value: the value, as the repr shows it
        if not 0.0 <= eps_min <= eps_max < 1.0:
            raise ValueError(f"need 0 <= eps_min <= eps_max < 1, got {eps_min}, {eps_max}")
        if kind == EpsilonMapping.power and not power > 0:
            raise ValueError(f"power mapping needs power > 0, got {power}")
        self.kind = kind
        self.eps_min = float(eps_min)
        self.eps_max = float(eps_max)
        self.power = float(power)
        self._knots: torch.Tensor | None = None
        self._quantiles: torch.Tensor | None = None
        if kind == EpsilonMapping.rank:
            if reference is None or len(reference) == 0:
                raise ValueError("the rank mapping needs the training samples' uncertainties")
            # uncertainties reach the trainer as float32: rank the float32 values, so that a
            # training sample's own value falls exactly on its knot
            values = torch.as_tensor(reference, dtype=torch.float64).float().double()
            self._knots, self._quantiles = _mid_rank_quantiles(values)

    def quantile(self, uncertainty: torch.Tensor) -> torch.Tensor:
        """F(u) in [0, 1]."""
        u = uncertainty.to(torch.float64)
        if self.kind == EpsilonMapping.linear:
            return u
        if self.kind == EpsilonMapping.power:
            return u.pow(self.power)
        if self.kind == CONSTANT:
            return torch.ones_like(u)
        if self.kind == EpsilonMapping.rank:
            return _interp(u, self._knots.to(u.device), self._quantiles.to(u.device))
        raise AssertionError(f"the mapping {self.kind!r} has no F(u) here")

    def __call__(self, uncertainty: torch.Tensor) -> torch.Tensor:
        f = self.quantile(uncertainty)
        return (self.eps_min + (self.eps_max - self.eps_min) * f).to(torch.float32)

    def __repr__(self) -> str:
        extra = f", power={self.power}" if self.kind == EpsilonMapping.power else ""
        return f"UncertaintyToEpsilon({self.kind!r}, {self.eps_min}, {self.eps_max}{extra})"


def _mid_rank_quantiles(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct values and their mean 0-based rank divided by (n - 1)."""
    n = values.numel()
    knots, counts = torch.unique(values, sorted=True, return_counts=True)
    first_rank = torch.cumsum(counts, 0) - counts
    mean_rank = first_rank.to(torch.float64) + (counts.to(torch.float64) - 1) / 2
    quantiles = mean_rank / (n - 1) if n > 1 else torch.full_like(mean_rank, 0.5)
    return knots, quantiles


def _interp(x: torch.Tensor, knots: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation, constant beyond the end knots (like numpy.interp)."""
    if knots.numel() == 1:
        return torch.full_like(x, float(values[0]))
    idx = torch.searchsorted(knots, x.contiguous()).clamp(1, knots.numel() - 1)
    x0, x1 = knots[idx - 1], knots[idx]
    y0, y1 = values[idx - 1], values[idx]
    t = ((x - x0) / (x1 - x0)).clamp(0.0, 1.0)
    return y0 + t * (y1 - y0)
