"""`type: axolotl_ual.alpaca`: axolotl's `alpaca` tokenization + per-token uncertainty.

Rows have `instruction`, optional `input`, and `output`, formatted with axolotl's standard
alpaca prompt; `train_on_inputs` and `sequence_len` come from the config as for `type: alpaca`.
"""

from __future__ import annotations

from axolotl.prompt_tokenizers import AlpacaPromptTokenizingStrategy
from axolotl.prompters import AlpacaPrompter

from .dataset_strategy import UALDatasetStrategy, dataset_name, require_plugin
from .rows import ALPACA, content_fields
from .uncertainty import UncertaintySettings


def load(tokenizer, cfg, ds_cfg=None):
    require_plugin(cfg, "axolotl_ual.alpaca")
    inner = AlpacaPromptTokenizingStrategy(
        AlpacaPrompter(None), tokenizer, cfg.train_on_inputs, cfg.sequence_len
    )
    return UALDatasetStrategy(
        inner,
        UncertaintySettings.from_cfg(cfg),
        dataset_name=dataset_name(ds_cfg or {}),
        content_fields=content_fields(ALPACA),
    )
