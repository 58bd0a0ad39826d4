"""Dataset strategy: axolotl's own tokenization, plus the declared side columns (`columns.py`).

`type: axolotl_ual.chat_template` / `axolotl_ual.alpaca` build axolotl's strategy for the same
options and wrap it here, with the signals the config asks for:

1. `UALDatasetStrategy.wrap_dataset` sees the whole raw dataset: each `SampleSignal` resolves
   and validates one value per row (errors name the dataset, rows and values) into a hidden
   column, so a bad row stops preprocessing before anything is tokenized.
2. `SignalTokenizingStrategy.tokenize_prompt` lets axolotl's strategy tokenize each row exactly
   as it would without UAL, then adds the sample values (one scalar per row) and each
   `TokenSignal`'s per-token values, aligned with `input_ids`.

A new signal is one class in `signals.py` and one entry in `columns.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from axolotl.prompt_tokenizers import DatasetWrappingStrategy, PromptTokenizingStrategy
from datasets import Dataset

from .args import PLUGIN_PATH
from .columns import SampleColumn, TokenColumn
from .compat import strategy_init_args, wrap_dataset_for_tokenized_prompt
from .errors import UsageError

_HIDDEN = "__ual_row_"  # prefix of the raw columns that carry sample values to tokenize_prompt


class SampleSignal(Protocol):
    """Resolves one validated value per raw row (raising `DataError` naming the bad rows)."""

    column: SampleColumn

    def resolve(self, dataset: Dataset, dataset_name: str) -> list[Any]: ...


class TokenSignal(Protocol):
    """One value per token of a row that axolotl's strategy has tokenized."""

    column: TokenColumn

    def annotate(self, row: dict[str, Any], tokenized: dict[str, Any]) -> list[Any]: ...


def require_plugin(cfg: Any, ds_type: str) -> None:
    if PLUGIN_PATH not in (cfg.get("plugins") or []):
        raise UsageError(
            f"dataset type {ds_type!r} needs the UAL plugin to train with its uncertainties: "
            f"add `plugins: [{PLUGIN_PATH}]` to the config (or use axolotl's own type without "
            "the `axolotl_ual.` prefix)"
        )


def dataset_name(ds_cfg: Any) -> str:
    path = ds_cfg.get("path") if ds_cfg else None
    split = ds_cfg.get("split") if ds_cfg else None
    return f"{path} (split {split})" if split else str(path)


class SignalTokenizingStrategy(PromptTokenizingStrategy):
    """Delegates tokenization to axolotl's strategy and appends the side columns."""

    def __init__(
        self,
        inner: PromptTokenizingStrategy,
        sample_columns: Sequence[str],
        token_signals: Sequence[TokenSignal],
    ):
        super().__init__(*strategy_init_args(inner))
        self.inner = inner
        self.filter_rows = inner.filter_rows
        self.sample_columns = tuple(sample_columns)
        self.token_signals = tuple(token_signals)

    @property
    def supports_batched(self) -> bool:
        return self.inner.supports_batched

    def tokenize_prompt(self, prompt: dict[str, Any]) -> dict[str, Any]:
        row = {key: value for key, value in prompt.items() if not key.startswith(_HIDDEN)}
        tokenized = dict(self.inner.tokenize_prompt(row))
        if not self.supports_batched:
            for name in self.sample_columns:
                tokenized[name] = prompt[_HIDDEN + name]
            for signal in self.token_signals:
                tokenized[signal.column.name] = signal.annotate(row, tokenized)
            return tokenized
        if not tokenized:  # every row of the batch was dropped by the inner strategy
            return tokenized
        n_rows = len(tokenized["input_ids"])
        for name in self.sample_columns:
            values = prompt[_HIDDEN + name]
            if len(values) != n_rows:
                raise RuntimeError(
                    f"{type(self.inner).__name__} returned {n_rows} rows for a batch of "
                    f"{len(values)}; UAL cannot align its side columns with its output"
                )
            tokenized[name] = list(values)
        if self.token_signals:
            rows = [
                dict(zip(row, values, strict=True)) for values in zip(*row.values(), strict=True)
            ]
            outputs = [{key: tokenized[key][i] for key in tokenized} for i in range(n_rows)]
            for signal in self.token_signals:
                tokenized[signal.column.name] = [
                    signal.annotate(r, out) for r, out in zip(rows, outputs, strict=True)
                ]
        return tokenized


class UALDatasetStrategy(DatasetWrappingStrategy):
    """Resolves the sample signals on the raw dataset, then tokenizes with the wrapped strategy."""

    def __init__(
        self,
        inner: PromptTokenizingStrategy,
        *,
        dataset_name: str,
        sample_signals: Sequence[SampleSignal],
        token_signals: Sequence[TokenSignal] = (),
    ):
        self.inner = inner
        self.dataset_name = dataset_name
        self.sample_signals = tuple(sample_signals)
        self.token_signals = tuple(token_signals)

    def wrap_dataset(self, dataset, process_count=None, keep_in_memory=False, **kwargs):
        if not isinstance(dataset, Dataset):
            raise UsageError(
                f"dataset {self.dataset_name!r}: UAL dataset types need a map-style dataset so "
                "every row can be checked before training; streaming is not supported "
                "(remove `streaming: true`)"
            )
        for signal in self.sample_signals:
            values = signal.resolve(dataset, self.dataset_name)
            dataset = dataset.add_column(_HIDDEN + signal.column.name, values)
        strategy = SignalTokenizingStrategy(
            self.inner, [s.column.name for s in self.sample_signals], self.token_signals
        )
        return wrap_dataset_for_tokenized_prompt(
            strategy, dataset, process_count=process_count, keep_in_memory=keep_in_memory, **kwargs
        )
