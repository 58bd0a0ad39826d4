"""Collator: axolotl's padding and packing, plus the per-token `ual_uncertainty` tensor.

axolotl's collators pad only the fields they know and concatenate packs field by field, so a
float per-token field needs its own handling. This wraps the collator axolotl would have used
(chosen by the same rules) and lays `ual_uncertainty` out exactly like `labels`: one row per
sample, per pack or per flattened batch, padded on the tokenizer's padding side. Padding gets 0;
it is never read, because padded labels are ignored.
"""

from __future__ import annotations

import torch
from axolotl.utils.collators import DataCollatorForSeq2Seq

from .compat import collator_layout
from .dataset_strategy import UNCERTAINTY_COLUMN


class UALDataCollator:
    """Calls `base_collator_cls(tokenizer, **kwargs)` and adds `ual_uncertainty` (float32)."""

    def __init__(self, tokenizer, *, base_collator_cls: type = DataCollatorForSeq2Seq, **kwargs):
        self.padding_side = tokenizer.padding_side
        self.layout = collator_layout(base_collator_cls)
        if self.layout == "flat":
            for unsupported in ("padding", "pad_to_multiple_of"):
                kwargs.pop(unsupported, None)
            self.base = base_collator_cls(**kwargs)
            return
        self.base = base_collator_cls(tokenizer, **kwargs)

    def __call__(self, features, return_tensors=None):
        if self.layout == "packs":
            packs = features if isinstance(features[0], list) else [features]
            rows = [_concat([_take_uncertainty(f) for f in pack]) for pack in packs]
        elif self.layout == "flat":
            rows = [_concat([_take_uncertainty(f) for f in features])]
        else:
            rows = [_take_uncertainty(f) for f in features]
        batch = self.base(features, return_tensors=return_tensors)
        batch[UNCERTAINTY_COLUMN] = self._pad(rows, batch["input_ids"].shape[-1])
        return batch

    def _pad(self, rows: list[list[float]], length: int) -> torch.Tensor:
        out = torch.zeros(len(rows), length, dtype=torch.float32)
        for i, row in enumerate(rows):
            if len(row) > length:
                raise ValueError(
                    f"ual_uncertainty row {i} has {len(row)} tokens but the batch has {length}"
                )
            values = torch.as_tensor(row, dtype=torch.float32)
            if self.padding_side == "left":
                out[i, length - len(row) :] = values
            else:
                out[i, : len(row)] = values
        return out


def _take_uncertainty(feature: dict) -> list[float]:
    """Remove the field from a sample; cut to its tokens (axolotl truncation cuts only ids/labels)."""
    if UNCERTAINTY_COLUMN not in feature:
        raise KeyError(
            f"a training sample has no {UNCERTAINTY_COLUMN!r}: every dataset must use a UAL type "
            "(axolotl_ual.chat_template or axolotl_ual.alpaca); if you changed the config, "
            "delete the prepared dataset so it is tokenized again"
        )
    values = feature.pop(UNCERTAINTY_COLUMN)
    return list(values[: len(feature["input_ids"])])


def _concat(rows: list[list[float]]) -> list[float]:
    return [value for row in rows for value in row]
