"""How axolotl finds the plugin, and that installing the package changes nothing else."""

from __future__ import annotations

from importlib.metadata import entry_points

from axolotl_ual.args import UALArgs


def test_plugin_class_path_resolves_as_axolotl_loads_it():
    from axolotl.integrations.base import BasePlugin, load_plugin

    plugin = load_plugin("axolotl_ual.UALPlugin")
    assert isinstance(plugin, BasePlugin)
    assert plugin.get_input_args() == "axolotl_ual.args.UALArgs"
    assert plugin.get_training_args_mixin() == "axolotl_ual.args.UALTrainingArgsMixin"


def test_not_registered_as_an_always_on_entry_point():
    """axolotl 0.21 loads every `axolotl.plugins` entry point on every run; UAL must only run
    where a config lists it, so the package registers none."""
    names = [ep.value for ep in entry_points(group="axolotl.plugins")]
    assert not any(value.startswith("axolotl_ual") for value in names)


def test_plain_axolotl_config_is_untouched(tiny_model):
    """Without the plugin in `plugins:`, axolotl's schema has no ual_* keys and no UAL hook runs."""
    from axolotl.utils.config import validate_config
    from axolotl.utils.dict import DictDefault

    from tests.support import SAMPLE_CHAT

    cfg = DictDefault(
        {
            "base_model": str(tiny_model),
            "micro_batch_size": 1,
            "gradient_accumulation_steps": 1,
            "learning_rate": 1e-4,
            "sequence_len": 128,
            "dataset_prepared_path": "prepared",
            "datasets": [{"path": str(SAMPLE_CHAT), "type": "chat_template"}],
            "ual_smoothing_max": 0.3,  # a UAL key in a config without the plugin is dropped
        }
    )
    validated = validate_config(cfg)
    assert "ual_smoothing_max" not in validated
    assert validated.dataset_prepared_path == "prepared"  # no ual-<fingerprint> folder
    assert set(UALArgs.model_fields) & set(validated) == set()
