"""The collator lays `ual_uncertainty` out exactly like the labels, for every axolotl layout."""

from __future__ import annotations

import pytest
import torch
from axolotl.utils.collators import DataCollatorForSeq2Seq, V2BatchSamplerDataCollatorForSeq2Seq
from transformers import DataCollatorWithFlattening

from axolotl_ual.collator import UALDataCollator


def _sample(n, u, start=10):
    ids = list(range(start, start + n))
    return {
        "input_ids": ids,
        "attention_mask": [1] * n,
        "labels": [-100, *ids[1:]],
        "ual_uncertainty": [u] * n,
    }


def _check_alignment(batch, expected_rows):
    """Every non-padded label position carries its sample's uncertainty."""
    u = batch["ual_uncertainty"]
    assert u.shape == batch["labels"].shape and u.dtype == torch.float32
    for row, expected in zip(u, expected_rows, strict=True):
        assert row.tolist() == pytest.approx(expected)


@pytest.mark.parametrize("side", ["right", "left"])
def test_padding_follows_the_tokenizer(tiny_tokenizer, side):
    tiny_tokenizer.padding_side = side
    try:
        collator = UALDataCollator(
            tiny_tokenizer,
            base_collator_cls=DataCollatorForSeq2Seq,
            pad_to_multiple_of=8,
            return_tensors="pt",
        )
        batch = collator([_sample(3, 0.2), _sample(5, 0.7)])
    finally:
        tiny_tokenizer.padding_side = "right"

    def padded(values, length=8):
        pad = [0.0] * (length - len(values))
        return values + pad if side == "right" else pad + values

    _check_alignment(batch, [padded([0.2] * 3), padded([0.7] * 5)])
    # labels are padded the same way: -100 exactly where uncertainty is padding
    assert ((batch["labels"] == -100) | (batch["ual_uncertainty"] > 0)).all()


def test_packs_concatenate_like_labels(tiny_tokenizer):
    collator = UALDataCollator(
        tiny_tokenizer,
        base_collator_cls=V2BatchSamplerDataCollatorForSeq2Seq,
        pad_to_multiple_of=16,
        return_tensors="pt",
    )
    packs = [[_sample(3, 0.1), _sample(4, 0.9)], [_sample(5, 0.5)]]
    batch = collator(packs)
    _check_alignment(batch, [[0.1] * 3 + [0.9] * 4 + [0.0] * 9, [0.5] * 5 + [0.0] * 11])
    assert batch["attention_mask"][0, :7].tolist() == [1, 1, 1, 2, 2, 2, 2]  # axolotl's own packing


def test_truncated_rows_stay_aligned(tiny_tokenizer):
    """axolotl's `excess_length_strategy: truncate` cuts ids and labels but not our field."""
    sample = _sample(6, 0.4)
    for key in ("input_ids", "attention_mask", "labels"):
        sample[key] = sample[key][:4]
    collator = UALDataCollator(
        tiny_tokenizer, base_collator_cls=DataCollatorForSeq2Seq, return_tensors="pt"
    )
    batch = collator([sample])
    _check_alignment(batch, [[0.4] * 4])


def test_flattening(tiny_tokenizer):
    collator = UALDataCollator(
        tiny_tokenizer,
        base_collator_cls=DataCollatorWithFlattening,
        padding=True,
        pad_to_multiple_of=8,
        return_tensors="pt",
    )
    batch = collator([_sample(2, 0.3), _sample(3, 0.6)])
    _check_alignment(batch, [[0.3] * 2 + [0.6] * 3])


def test_missing_field_says_what_to_do(tiny_tokenizer):
    sample = _sample(3, 0.1)
    del sample["ual_uncertainty"]
    collator = UALDataCollator(
        tiny_tokenizer, base_collator_cls=DataCollatorForSeq2Seq, return_tensors="pt"
    )
    with pytest.raises(KeyError, match="every dataset must use a UAL type"):
        collator([sample])
