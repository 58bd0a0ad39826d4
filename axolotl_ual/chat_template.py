"""`type: axolotl_ual.chat_template`: axolotl's `chat_template` tokenization + per-token uncertainty.

Accepts every option of axolotl's `chat_template` type (field_messages, roles_to_train,
train_on_eos, message_property_mappings, ...); they are passed through unchanged.
"""

from __future__ import annotations

from axolotl.prompt_strategies.chat_template import load as load_axolotl_chat_template

from .dataset_strategy import UALDatasetStrategy, dataset_name, require_plugin
from .rows import CHAT, DEFAULT_MESSAGES_FIELD, content_fields
from .uncertainty import UncertaintySettings


def load(tokenizer, cfg, ds_cfg=None, processor=None):
    require_plugin(cfg, "axolotl_ual.chat_template")
    ds_cfg = ds_cfg or {}
    inner = load_axolotl_chat_template(tokenizer, cfg, ds_cfg, processor=processor)
    field_messages = ds_cfg.get("field_messages") or DEFAULT_MESSAGES_FIELD
    return UALDatasetStrategy(
        inner,
        UncertaintySettings.from_cfg(cfg),
        dataset_name=dataset_name(ds_cfg),
        content_fields=content_fields(CHAT, field_messages),
    )
