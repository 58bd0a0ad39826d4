"""The side data a UAL training sample carries next to `input_ids` and `labels`.

Every signal a loss term needs is declared here once, with its dtype and padding value. The
dataset strategy writes the columns into the tokenized rows, the collator lays each one out
exactly like `labels` (padding, packing, truncation), and the trainer reads them by name:

- a `SampleColumn` holds one value per sample (its uncertainty, its preference label) and is
  stored as a scalar; the collator repeats it over the sample's tokens;
- a `TokenColumn` holds one value per token (which trained tokens are instruction tokens) and
  is stored aligned with `input_ids`; the collator cuts it to the sample's (possibly truncated)
  tokens.

The collator also adds `SEGMENT`: which sample of the batch each token belongs to (0, 1, ...
across rows and packs; -1 on padding), so per-sequence terms respect packed boundaries.
No axolotl imports.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SampleColumn:
    """One value per sample, repeated over its tokens in the batch."""

    name: str
    dtype: torch.dtype
    pad: float | int | bool


@dataclass(frozen=True)
class TokenColumn:
    """One value per token, aligned with `input_ids`."""

    name: str
    dtype: torch.dtype
    pad: float | int | bool


UNCERTAINTY = SampleColumn("ual_uncertainty", torch.float32, 0.0)
INSTRUCTION = TokenColumn("ual_instruction", torch.bool, False)
# ual_objective: ulma / pointwise_dpo: the sample's label (1 good, 0 bad, or a score in [0, 1])
PREFERENCE = SampleColumn("ual_preference", torch.float32, -1.0)
# the reference model's log p(token t | tokens < t), precomputed for full fine-tuning (0 at t=0)
REFERENCE = TokenColumn("ual_reference_logprob", torch.float32, 0.0)

COLUMNS: dict[str, SampleColumn | TokenColumn] = {
    c.name: c for c in (UNCERTAINTY, INSTRUCTION, PREFERENCE, REFERENCE)
}

SEGMENT = TokenColumn("ual_segment", torch.int64, -1)  # added by the collator, never stored
BATCH_COLUMNS = {**COLUMNS, SEGMENT.name: SEGMENT}  # what the trainer pops before the forward
