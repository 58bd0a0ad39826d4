from __future__ import annotations

import pytest
import torch

from axolotl_ual.mapping import UncertaintyToEpsilon


def _eps(mapping, values):
    return mapping(torch.tensor(values, dtype=torch.float32)).tolist()


def test_linear_is_the_papers_mapping():
    assert _eps(UncertaintyToEpsilon("linear", 0.0, 0.2), [0.0, 0.25, 1.0]) == pytest.approx(
        [0.0, 0.05, 0.2]
    )
    assert _eps(UncertaintyToEpsilon("linear", 0.05, 0.15), [0.0, 0.5, 1.0]) == pytest.approx(
        [0.05, 0.10, 0.15]
    )


def test_power():
    mapping = UncertaintyToEpsilon("power", 0.0, 0.2, power=2.0)
    assert _eps(mapping, [0.5, 1.0]) == pytest.approx([0.05, 0.2])


def test_constant_ignores_uncertainty_even_nan():
    mapping = UncertaintyToEpsilon("constant", 0.0, 0.1)
    assert _eps(mapping, [0.0, 0.7, float("nan")]) == pytest.approx([0.1, 0.1, 0.1])


def test_rank_uses_mid_ranks_and_interpolates():
    # sorted reference: 0.1, 0.2, 0.2, 0.9 -> ranks 0, 1.5, 1.5, 3 over n - 1 = 3
    mapping = UncertaintyToEpsilon("rank", 0.0, 0.3, reference=[0.9, 0.2, 0.1, 0.2])
    got = _eps(mapping, [0.1, 0.2, 0.9, 0.55, 0.0, 1.0])
    assert got == pytest.approx([0.0, 0.15, 0.3, 0.225, 0.0, 0.3])


def test_rank_single_value_is_the_middle():
    mapping = UncertaintyToEpsilon("rank", 0.0, 0.2, reference=[0.4, 0.4])
    assert _eps(mapping, [0.4, 0.9]) == pytest.approx([0.1, 0.1])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kind": "sigmoid"}, "unknown mapping"),
        ({"eps_min": 0.3, "eps_max": 0.2}, "eps_min <= eps_max"),
        ({"eps_max": 1.0}, "< 1"),
        ({"kind": "power", "power": 0.0}, "power > 0"),
        ({"kind": "rank"}, "training samples"),
    ],
)
def test_invalid_mappings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        UncertaintyToEpsilon(**kwargs)


def test_every_configurable_mapping_exists():
    from axolotl_ual.args import EpsilonMapping
    from axolotl_ual.mapping import MAPPINGS

    assert {m.value for m in EpsilonMapping} <= set(MAPPINGS)
    for kind in EpsilonMapping:
        reference = [0.1, 0.5] if kind == EpsilonMapping.rank else None
        UncertaintyToEpsilon(kind.value, 0.0, 0.2, reference=reference)(torch.tensor([0.3]))
