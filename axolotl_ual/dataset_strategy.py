"""Dataset strategy: axolotl's own tokenization, plus a per-token uncertainty.

`type: axolotl_ual.chat_template` / `axolotl_ual.alpaca` build axolotl's strategy for the same
options and wrap it here:

1. `UALDatasetStrategy.wrap_dataset` sees the whole raw dataset: it resolves and validates every
   row's uncertainty (errors name the dataset, rows and values) and adds it as a hidden column.
2. `UncertaintyTokenizingStrategy.tokenize_prompt` removes that column, lets axolotl's strategy
   tokenize the row exactly as it would without UAL, and adds `ual_uncertainty`: the row's value
   repeated once per token, so it stays aligned with `input_ids`/`labels` through packing.
"""

from __future__ import annotations

from typing import Any

from axolotl.prompt_tokenizers import DatasetWrappingStrategy, PromptTokenizingStrategy
from axolotl.utils.logging import get_logger
from datasets import Dataset

from .args import PLUGIN_PATH
from .compat import strategy_init_args, wrap_dataset_for_tokenized_prompt
from .uncertainty import UncertaintySettings, resolve_uncertainties

LOG = get_logger(__name__)
UNCERTAINTY_COLUMN = "ual_uncertainty"
_RAW_COLUMN = "__ual_row_uncertainty"


def require_plugin(cfg: Any, ds_type: str) -> None:
    if PLUGIN_PATH not in (cfg.get("plugins") or []):
        raise ValueError(
            f"dataset type {ds_type!r} needs the UAL plugin to train with its uncertainties: "
            f"add `plugins: [{PLUGIN_PATH}]` to the config (or use axolotl's own type without "
            "the `axolotl_ual.` prefix)"
        )


def dataset_name(ds_cfg: Any) -> str:
    path = ds_cfg.get("path") if ds_cfg else None
    split = ds_cfg.get("split") if ds_cfg else None
    return f"{path} (split {split})" if split else str(path)


class UncertaintyTokenizingStrategy(PromptTokenizingStrategy):
    """Delegates tokenization to axolotl's strategy and appends `ual_uncertainty`."""

    def __init__(self, inner: PromptTokenizingStrategy):
        super().__init__(*strategy_init_args(inner))
        self.inner = inner
        self.filter_rows = inner.filter_rows

    @property
    def supports_batched(self) -> bool:
        return self.inner.supports_batched

    def tokenize_prompt(self, prompt: dict[str, Any]) -> dict[str, Any]:
        row = {key: value for key, value in prompt.items() if key != _RAW_COLUMN}
        uncertainty = prompt[_RAW_COLUMN]
        tokenized = dict(self.inner.tokenize_prompt(row))
        if not self.supports_batched:
            tokenized[UNCERTAINTY_COLUMN] = [uncertainty] * len(tokenized["input_ids"])
            return tokenized
        if not tokenized:  # every row of the batch was dropped by the inner strategy
            return tokenized
        ids = tokenized["input_ids"]
        if len(ids) != len(uncertainty):
            raise RuntimeError(
                f"{type(self.inner).__name__} returned {len(ids)} rows for a batch of "
                f"{len(uncertainty)}; UAL cannot align uncertainties with its output"
            )
        tokenized[UNCERTAINTY_COLUMN] = [
            [u] * len(seq) for u, seq in zip(uncertainty, ids, strict=True)
        ]
        return tokenized


class UALDatasetStrategy(DatasetWrappingStrategy):
    """Validates the raw dataset's uncertainties, then tokenizes with the wrapped strategy."""

    def __init__(
        self,
        inner: PromptTokenizingStrategy,
        settings: UncertaintySettings,
        *,
        dataset_name: str,
        content_fields: tuple[str, ...],
    ):
        self.inner = inner
        self.settings = settings
        self.dataset_name = dataset_name
        self.content_fields = content_fields

    def wrap_dataset(self, dataset, process_count=None, keep_in_memory=False, **kwargs):
        if not isinstance(dataset, Dataset):
            raise ValueError(
                f"dataset {self.dataset_name!r}: UAL dataset types need a map-style dataset so "
                "every row's uncertainty can be checked before training; streaming is not "
                "supported (remove `streaming: true`)"
            )
        resolved = resolve_uncertainties(
            dataset,
            self.settings,
            dataset_name=self.dataset_name,
            content_fields=self.content_fields,
        )
        report = resolved.default_report(self.dataset_name, self.settings.default)
        if report:
            message, loud = report
            (LOG.warning if loud else LOG.info)(f"UAL: {message}")
        with_column = dataset.add_column(_RAW_COLUMN, resolved.values)
        return wrap_dataset_for_tokenized_prompt(
            UncertaintyTokenizingStrategy(self.inner),
            with_column,
            process_count=process_count,
            keep_in_memory=keep_in_memory,
            **kwargs,
        )
