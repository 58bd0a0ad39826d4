"""`type: axolotl_ual.chat_template`: axolotl's `chat_template` tokenization + UAL's side columns.

Accepts every option of axolotl's `chat_template` type (field_messages, roles_to_train,
train_on_eos, message_property_mappings, ...); they are passed through unchanged.
"""

from __future__ import annotations

from axolotl.prompt_strategies.chat_template import load as load_axolotl_chat_template

from .dataset_strategy import UALDatasetStrategy, dataset_name, require_plugin
from .rows import CHAT, DEFAULT_MESSAGES_FIELD, content_fields
from .signals import signals_for


def load(tokenizer, cfg, ds_cfg=None, processor=None):
    require_plugin(cfg, "axolotl_ual.chat_template")
    ds_cfg = ds_cfg or {}
    inner = load_axolotl_chat_template(tokenizer, cfg, ds_cfg, processor=processor)
    field_messages = ds_cfg.get("field_messages") or DEFAULT_MESSAGES_FIELD
    sample, token = signals_for(inner, cfg, content_fields(CHAT, field_messages))
    return UALDatasetStrategy(
        inner, dataset_name=dataset_name(ds_cfg), sample_signals=sample, token_signals=token
    )
