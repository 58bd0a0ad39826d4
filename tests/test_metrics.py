"""Bucketed eval metrics and training means on hand-built batches."""

from __future__ import annotations

import math

import pytest
import torch

from axolotl_ual.loss import TokenStatistics
from axolotl_ual.metrics import EvalBuckets, TrainingMeter, bucket_names


def _stats(nll, correct, valid):
    nll = torch.tensor(nll, dtype=torch.float32)
    return TokenStatistics(
        nll=nll,
        uniform_ce=torch.zeros_like(nll),
        correct=torch.tensor(correct),
        valid=torch.tensor(valid),
    )


def test_eval_buckets_by_hand():
    # two samples of 4 tokens (u = 0.1 and 0.9) and one of 3 tokens (u = 1/3, on a cut point)
    u = torch.tensor([[0.1] * 4, [0.9] * 4, [1 / 3] * 3 + [0.0]])
    stats = _stats(
        nll=[[1.0, 2.0, 3.0, 9.0], [4.0, 6.0, 0.0, 0.0], [0.5, 1.5, 2.5, 0.0]],
        correct=[
            [True, False, True, True],
            [False, True, False, False],
            [True, True, False, False],
        ],
        valid=[[True, True, True, False], [True, True, False, False], [True, True, True, False]],
    )
    buckets = EvalBuckets([1 / 3, 2 / 3])
    buckets.add(u, stats)
    buckets.add(u, stats)  # a second batch accumulates
    got = buckets.metrics(buckets.totals)
    assert got["eval_ual_tokens_low"] == 6 and got["eval_ual_nll_low"] == pytest.approx(2.0)
    assert got["eval_ual_accuracy_low"] == pytest.approx(2 / 3)
    # 1/3 is the first cut point: it belongs to "mid"
    assert got["eval_ual_tokens_mid"] == 6 and got["eval_ual_nll_mid"] == pytest.approx(1.5)
    assert got["eval_ual_accuracy_mid"] == pytest.approx(2 / 3)
    assert got["eval_ual_tokens_high"] == 4 and got["eval_ual_nll_high"] == pytest.approx(5.0)
    assert got["eval_ual_accuracy_high"] == pytest.approx(0.5)
    assert got["eval_ual_tokens"] == 16
    assert got["eval_ual_nll"] == pytest.approx((12 + 9 + 20) / 16)
    assert got["eval_ual_accuracy"] == pytest.approx(10 / 16)


def test_unknown_uncertainty_counts_overall_only():
    u = torch.tensor([[math.nan, math.nan]])
    buckets = EvalBuckets([0.5])
    buckets.add(u, _stats([[1.0, 3.0]], [[True, False]], [[True, True]]))
    got = buckets.metrics(buckets.totals, prefix="test")
    assert got == {"test_ual_tokens": 2, "test_ual_nll": 2.0, "test_ual_accuracy": 0.5}


def test_training_meter_is_token_weighted():
    meter = TrainingMeter()
    meter.add(
        torch.tensor([0.5, 0.5, 1.0]),
        torch.tensor([0.1, 0.1, 0.2]),
        torch.tensor([True, True, False]),
    )
    meter.add(torch.tensor([0.0, math.nan]), torch.tensor([0.0, 0.2]), torch.tensor([True, True]))
    got = TrainingMeter.metrics(meter.totals)
    assert got["ual_epsilon_mean"] == pytest.approx(0.4 / 4)
    assert got["ual_uncertainty_mean"] == pytest.approx(1.0 / 3)


def test_bucket_names():
    assert bucket_names([0.5]) == ["low", "high"]
    assert bucket_names([0.2, 0.4, 0.8]) == ["q0", "q1", "q2", "q3"]


def test_a_shifted_view_of_the_uncertainties_raises_no_torch_warning():
    """The trainer passes `pad(u)[..., 1:]`, a non-contiguous view; torch warns once per process
    about such input to bucketize, so this checks in a fresh interpreter."""
    import subprocess
    import sys

    code = (
        "import torch, torch.nn.functional as F\n"
        "from axolotl_ual.loss import TokenStatistics\n"
        "from axolotl_ual.metrics import EvalBuckets\n"
        "u = F.pad(torch.rand(3, 8), (0, 1))[..., 1:]\n"
        "assert not u.is_contiguous()\n"
        "z = torch.zeros(3, 8)\n"
        "EvalBuckets([1 / 3, 2 / 3]).add(u, TokenStatistics(z, z, z.bool(), z == 0))\n"
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "non-contiguous" not in result.stderr
