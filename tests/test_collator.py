"""The collator lays UAL's side columns out exactly like the labels, for every axolotl layout."""

from __future__ import annotations

import pytest
import torch
from axolotl.utils.collators import DataCollatorForSeq2Seq, V2BatchSamplerDataCollatorForSeq2Seq
from transformers import DataCollatorWithFlattening

from axolotl_ual.collator import UALDataCollator
from axolotl_ual.columns import INSTRUCTION, SEGMENT, UNCERTAINTY
from axolotl_ual.errors import DataError


def _sample(n, u, start=10, instruction=None):
    ids = list(range(start, start + n))
    sample = {
        "input_ids": ids,
        "attention_mask": [1] * n,
        "labels": [-100, *ids[1:]],
        UNCERTAINTY.name: u,  # one value per sample
    }
    if instruction is not None:
        sample[INSTRUCTION.name] = instruction
    return sample


def _check(batch, name, expected_rows, dtype=torch.float32):
    values = batch[name]
    assert values.shape == batch["labels"].shape and values.dtype == dtype
    for row, expected in zip(values, expected_rows, strict=True):
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

    def padded(values, pad=0.0, length=8):
        fill = [pad] * (length - len(values))
        return values + fill if side == "right" else fill + values

    _check(batch, UNCERTAINTY.name, [padded([0.2] * 3), padded([0.7] * 5)])
    _check(batch, SEGMENT.name, [padded([0] * 3, -1), padded([1] * 5, -1)], torch.int64)
    # labels are padded the same way: -100 exactly where uncertainty is padding
    assert ((batch["labels"] == -100) | (batch[UNCERTAINTY.name] > 0)).all()


def test_packs_concatenate_like_labels(tiny_tokenizer):
    collator = UALDataCollator(
        tiny_tokenizer,
        base_collator_cls=V2BatchSamplerDataCollatorForSeq2Seq,
        pad_to_multiple_of=16,
        return_tensors="pt",
    )
    packs = [
        [
            _sample(3, 0.1, instruction=[False, True, True]),
            _sample(4, 0.9, instruction=[False] * 4),
        ],
        [_sample(5, 0.5, instruction=[True] * 5)],
    ]
    batch = collator(packs)
    _check(batch, UNCERTAINTY.name, [[0.1] * 3 + [0.9] * 4 + [0.0] * 9, [0.5] * 5 + [0.0] * 11])
    _check(
        batch,
        INSTRUCTION.name,
        [[False, True, True] + [False] * 13, [True] * 5 + [False] * 11],
        torch.bool,
    )
    # each sample of the batch has its own segment, packed or not
    _check(batch, SEGMENT.name, [[0] * 3 + [1] * 4 + [-1] * 9, [2] * 5 + [-1] * 11], torch.int64)
    assert batch["attention_mask"][0, :7].tolist() == [1, 1, 1, 2, 2, 2, 2]  # axolotl's own packing


def test_truncated_rows_stay_aligned(tiny_tokenizer):
    """axolotl's `excess_length_strategy: truncate` cuts ids and labels but not our columns."""
    sample = _sample(6, 0.4, instruction=[True, False, True, False, True, False])
    for key in ("input_ids", "attention_mask", "labels"):
        sample[key] = sample[key][:4]
    collator = UALDataCollator(
        tiny_tokenizer, base_collator_cls=DataCollatorForSeq2Seq, return_tensors="pt"
    )
    batch = collator([sample])
    _check(batch, UNCERTAINTY.name, [[0.4] * 4])
    _check(batch, INSTRUCTION.name, [[True, False, True, False]], torch.bool)


def test_flattening(tiny_tokenizer):
    collator = UALDataCollator(
        tiny_tokenizer,
        base_collator_cls=DataCollatorWithFlattening,
        padding=True,
        pad_to_multiple_of=8,
        return_tensors="pt",
    )
    batch = collator([_sample(2, 0.3), _sample(3, 0.6)])
    _check(batch, UNCERTAINTY.name, [[0.3] * 2 + [0.6] * 3])
    _check(batch, SEGMENT.name, [[0, 0, 1, 1, 1]], torch.int64)


def test_missing_field_says_what_to_do(tiny_tokenizer):
    sample = _sample(3, 0.1)
    del sample[UNCERTAINTY.name]
    collator = UALDataCollator(
        tiny_tokenizer, base_collator_cls=DataCollatorForSeq2Seq, return_tensors="pt"
    )
    with pytest.raises(DataError, match="every dataset must use a UAL type"):
        collator([sample])
