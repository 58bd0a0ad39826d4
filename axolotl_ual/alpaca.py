"""`type: axolotl_ual.alpaca`: axolotl's `alpaca` tokenization + UAL's side columns.

Rows have `instruction`, optional `input`, and `output`, formatted with axolotl's standard
alpaca prompt; `train_on_inputs` and `sequence_len` come from the config as for `type: alpaca`.
"""

from __future__ import annotations

from axolotl.prompt_tokenizers import AlpacaPromptTokenizingStrategy
from axolotl.prompters import AlpacaPrompter

from .dataset_strategy import UALDatasetStrategy, dataset_name, require_plugin
from .rows import ALPACA, content_fields
from .signals import signals_for


def load(tokenizer, cfg, ds_cfg=None):
    require_plugin(cfg, "axolotl_ual.alpaca")
    inner = AlpacaPromptTokenizingStrategy(
        AlpacaPrompter(None), tokenizer, cfg.train_on_inputs, cfg.sequence_len
    )
    sample, token = signals_for(inner, cfg, content_fields(ALPACA))
    return UALDatasetStrategy(
        inner, dataset_name=dataset_name(ds_cfg or {}), sample_signals=sample, token_signals=token
    )
