"""Collator: axolotl's padding and packing, plus UAL's side columns laid out like `labels`.

axolotl's collators pad only the fields they know and concatenate packs field by field, so
UAL's columns (`columns.py`) need their own handling. This wraps the collator axolotl would have
used (chosen by the same rules, `compat.axolotl_collator_cls`) and gives every declared column
the layout of `labels`: one row per sample, per pack or per flattened batch, padded on the
tokenizer's padding side with the column's padding value (never read: padded labels are
ignored). Sample columns are repeated over their sample's tokens; token columns are cut to the
sample's tokens (axolotl's truncation cuts only ids and labels). It also adds `SEGMENT`, the
index of each token's sample in the batch.
"""

from __future__ import annotations

import torch
from axolotl.utils.collators import DataCollatorForSeq2Seq

from .columns import COLUMNS, SEGMENT, UNCERTAINTY, SampleColumn
from .compat import collator_layout
from .errors import DataError


class UALDataCollator:
    """Calls `base_collator_cls(tokenizer, **kwargs)` and adds the side columns and `SEGMENT`."""

    def __init__(self, tokenizer, *, base_collator_cls: type = DataCollatorForSeq2Seq, **kwargs):
        self.padding_side = tokenizer.padding_side
        self.layout = collator_layout(base_collator_cls)
        if self.layout == "flat":
            for unsupported in ("padding", "pad_to_multiple_of"):
                kwargs.pop(unsupported, None)
            self.base = base_collator_cls(**kwargs)
        else:
            self.base = base_collator_cls(tokenizer, **kwargs)

    def __call__(self, features, return_tensors=None):
        if self.layout == "packs":
            packs = features if isinstance(features[0], list) else [features]
        elif self.layout == "flat":
            packs = [features]
        else:
            packs = [[feature] for feature in features]
        names = _side_columns(packs[0][0])
        # per pack (a batch row), per sample: (token count, {column: per-token values})
        rows = [[_take_side_columns(sample, names) for sample in pack] for pack in packs]

        batch = self.base(features, return_tensors=return_tensors)
        length = batch["input_ids"].shape[-1]
        for name in names:
            column = COLUMNS[name]
            values = [[v for _, sample in row for v in sample[name]] for row in rows]
            batch[name] = self._pad(values, length, column.dtype, column.pad)
        segments, first = [], 0
        for row in rows:
            segments.append(
                [first + i for i, (n_tokens, _) in enumerate(row) for _ in range(n_tokens)]
            )
            first += len(row)
        batch[SEGMENT.name] = self._pad(segments, length, SEGMENT.dtype, SEGMENT.pad)
        return batch

    def _pad(self, rows: list[list], length: int, dtype: torch.dtype, pad) -> torch.Tensor:
        out = torch.full((len(rows), length), pad, dtype=dtype)
        for i, row in enumerate(rows):
            if len(row) > length:
                raise DataError(
                    f"side column row {i} has {len(row)} tokens but the batch has {length}"
                )
            values = torch.as_tensor(row, dtype=dtype)
            if self.padding_side == "left":
                out[i, length - len(row) :] = values
            else:
                out[i, : len(row)] = values
        return out


def _side_columns(sample: dict) -> list[str]:
    names = [name for name in COLUMNS if name in sample]
    if UNCERTAINTY.name not in names:
        raise DataError(
            f"a training sample has no {UNCERTAINTY.name!r}: every dataset must use a UAL type "
            "(axolotl_ual.chat_template or axolotl_ual.alpaca); if you changed the config, "
            "delete the prepared dataset so it is tokenized again"
        )
    return names


def _take_side_columns(sample: dict, names: list[str]) -> tuple[int, dict[str, list]]:
    """Remove the side columns from a sample, laid out over its (possibly truncated) tokens."""
    n_tokens = len(sample["input_ids"])
    taken: dict[str, list] = {}
    for name in names:
        if name not in sample:
            raise DataError(
                f"a batch mixes samples with and without {name!r}: all datasets of a run must "
                "be tokenized with the same UAL settings (delete the prepared dataset to "
                "tokenize them again)"
            )
        value = sample.pop(name)
        if isinstance(COLUMNS[name], SampleColumn):
            taken[name] = [value] * n_tokens
        else:
            taken[name] = list(value[:n_tokens])
    return n_tokens, taken
