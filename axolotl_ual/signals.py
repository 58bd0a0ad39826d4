"""The signals a UAL dataset type adds to each tokenized row (see `dataset_strategy.py`).

- `UncertaintySignal` (sample): the row's uncertainty, from a column, a sidecar or nothing
  (`ual_uncertainty_source`), validated on the whole raw dataset.
- `PreferenceLabel` (sample): the row's good / bad label or score, for the point-wise
  preference objectives (`ual_objective: ulma / pointwise_dpo`).
- `InstructionTokens` (token): which trained tokens are instruction tokens, i.e. trained only
  because of `train_on_inputs` / a non-assistant role in `roles_to_train`. Where the dataset
  can train such tokens at all, it tokenizes the row a second time with axolotl's own strategy
  set to train the assistant turns only, and marks the tokens trained in the real labels but
  not in those; elsewhere every token is False. Every dataset has the column, so datasets
  with and without instruction tokens merge into one.

`signals_for` picks the signals of a dataset from the config.
"""

from __future__ import annotations

from typing import Any

from axolotl.utils.logging import get_logger

from .args import Objective, PreferenceLabels, data_settings
from .columns import INSTRUCTION, PREFERENCE, UNCERTAINTY
from .compat import response_only_twin, trains_instructions
from .errors import DataError
from .rows import InvalidLabel, parse_preference
from .uncertainty import UncertaintySettings, bad_rows_message, resolve_uncertainties

LOG = get_logger(__name__)
IGNORE_INDEX = -100


class UncertaintySignal:
    column = UNCERTAINTY

    def __init__(self, settings: UncertaintySettings, content_fields: tuple[str, ...]):
        self.settings = settings
        self.content_fields = content_fields

    def resolve(self, dataset, dataset_name: str) -> list[float]:
        resolved = resolve_uncertainties(
            dataset, self.settings, dataset_name=dataset_name, content_fields=self.content_fields
        )
        report = resolved.default_report(dataset_name, self.settings.default)
        if report:
            message, loud = report
            (LOG.warning if loud else LOG.info)(f"UAL: {message}")
        return resolved.values


class InstructionTokens:
    column = INSTRUCTION

    def __init__(self, inner):
        self.response_only = response_only_twin(inner) if trains_instructions(inner) else None

    def annotate(self, row: dict[str, Any], tokenized: dict[str, Any]) -> list[bool]:
        if self.response_only is None:
            return [False] * len(tokenized["input_ids"])
        reference = self.response_only.tokenize_prompt(dict(row))
        if list(reference["input_ids"]) != list(tokenized["input_ids"]):
            raise RuntimeError(
                "tokenizing a row again with only the assistant turns trained gave other token "
                "ids, so UAL cannot tell its instruction tokens from its response tokens; "
                "please report the dataset's options (train_on_inputs: false avoids this)"
            )
        return [
            label != IGNORE_INDEX and response == IGNORE_INDEX
            for label, response in zip(tokenized["labels"], reference["labels"], strict=True)
        ]


class PreferenceLabel:
    """The sample's preference label for `ual_objective: ulma / pointwise_dpo`, validated on the
    whole raw dataset like uncertainties (errors name the dataset, rows and values)."""

    column = PREFERENCE

    def __init__(self, field: str, kind: PreferenceLabels):
        self.field = field
        self.kind = kind

    def resolve(self, dataset, dataset_name: str) -> list[float]:
        if self.field not in dataset.column_names:
            raise DataError(
                f"dataset {dataset_name!r} has no column {self.field!r} "
                f"(ual_preference_field), which ual_objective needs; its columns are "
                f"{dataset.column_names}"
            )
        values, problems = [], []
        for index, raw in enumerate(dataset[self.field]):
            try:
                values.append(parse_preference(raw, binary=self.kind == PreferenceLabels.binary))
            except InvalidLabel as exc:
                problems.append((index, str(exc)))
        if problems:
            rule = (
                "each label must be 1 (good) or 0 (bad)"
                if self.kind == PreferenceLabels.binary
                else "each label must be a number in [0, 1]"
            )
            raise DataError(
                bad_rows_message(
                    problems,
                    dataset_name=dataset_name,
                    what=f"valid preference label in field {self.field!r}",
                    rule=rule,
                )
            )
        positives = sum(v == 1.0 for v in values)
        LOG.info(
            f"UAL: dataset {dataset_name!r}: {positives} of {len(values)} rows are positives "
            "(label 1)"
        )
        return values


def signals_for(inner, cfg: Any, content_fields: tuple[str, ...]):
    """(sample signals, token signals) of one UAL dataset."""
    sample = [UncertaintySignal(UncertaintySettings.from_cfg(cfg), content_fields)]
    ual = data_settings(cfg)
    if ual.ual_objective != Objective.sft:
        sample.append(PreferenceLabel(ual.ual_preference_field, ual.ual_preference_labels))
    return sample, [InstructionTokens(inner)]
