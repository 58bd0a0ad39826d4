"""The `ual_*` keys through axolotl's own config validation (schema merged by the plugin)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from axolotl_ual.args import UALArgs, training_args_from_cfg
from tests.support import SAMPLE_CHAT

UAL_DATASET = {"path": str(SAMPLE_CHAT), "type": "axolotl_ual.chat_template"}


def validate(tiny_model, **overrides):
    """axolotl's `validate_config`, with the plugin registered as `axolotl train` does."""
    from axolotl.cli.config import prepare_plugins
    from axolotl.utils.config import validate_config
    from axolotl.utils.dict import DictDefault

    cfg = DictDefault(
        {
            "base_model": str(tiny_model),
            "plugins": ["axolotl_ual.UALPlugin"],
            "datasets": [dict(UAL_DATASET)],
            "micro_batch_size": 1,
            "gradient_accumulation_steps": 1,
            "learning_rate": 1e-4,
            "sequence_len": 128,
            **overrides,
        }
    )
    cfg = DictDefault({k: v for k, v in cfg.items() if v is not None})
    prepare_plugins(cfg)
    return validate_config(cfg)


def test_defaults_and_values_reach_the_trainer(tiny_model):
    cfg = validate(tiny_model, ual_smoothing_max=0.3, ual_mapping="rank")
    args = training_args_from_cfg(cfg)
    assert args["ual_smoothing_max"] == 0.3 and args["ual_mapping"] == "rank"
    assert args["ual_uncertainty_source"] == "field" and args["ual_fused_loss"] is True
    assert cfg.ual_uncertainty_field == "uncertainty"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            {"ual_smoothing_min": 0.3, "ual_smoothing_max": 0.2},
            "ual_smoothing_min <= ual_smoothing_max",
        ),
        ({"ual_smoothing_max": 1.0}, "< 1"),
        ({"ual_smoothing_min": -0.1}, "0 <= ual_smoothing_min"),
        ({"ual_uncertainty_source": "judge"}, "ual_uncertainty_source"),
        ({"ual_mapping": "sigmoid"}, "ual_mapping"),
        ({"ual_uncertainty_source": "sidecar"}, "needs ual_uncertainty_file"),
        (
            {
                "ual_uncertainty_source": "sidecar",
                "ual_uncertainty_file": "/nonexistent/scores.jsonl",
            },
            "does not exist",
        ),
        (
            {"ual_uncertainty_file": str(SAMPLE_CHAT)},
            "only read with ual_uncertainty_source: sidecar",
        ),
        ({"ual_default_uncertainty": 1.5}, "ual_default_uncertainty"),
        ({"ual_eval_buckets": [0.7, 0.3]}, "increasing cut points"),
        ({"label_smoothing_factor": 0.1}, "label_smoothing_factor: 0.1"),
        ({"liger_fused_linear_cross_entropy": True}, "liger_fused_linear_cross_entropy: True"),
        ({"chunked_cross_entropy": True}, "chunked_cross_entropy: True"),
        ({"use_eaft": True}, "use_eaft: True"),
        (
            {
                "plugins": [
                    "axolotl_ual.UALPlugin",
                    "axolotl.integrations.cut_cross_entropy.CutCrossEntropyPlugin",
                ]
            },
            "CutCrossEntropyPlugin",
        ),
        (
            {"datasets": [{"path": str(SAMPLE_CHAT), "type": "chat_template"}]},
            "no dataset uses a UAL type",
        ),
        (  # would crash in the collator mid-training
            {"datasets": [UAL_DATASET, {"path": str(SAMPLE_CHAT), "type": "chat_template"}]},
            r"these do not: datasets\[1\] \(path '.*sample_chat.jsonl', type 'chat_template'\)",
        ),
        (
            {"test_datasets": [{"path": str(SAMPLE_CHAT), "type": "alpaca"}], "val_set_size": 0},
            r"test_datasets\[0\]",
        ),
        # misspelt or unknown keys would be dropped by axolotl's schema without a word
        (
            {"ual_smothing_max": 0.5},
            "unknown UAL key.*ual_smothing_max .did you mean ual_smoothing_max",
        ),
        ({"ual_no_such_key": 1}, "unknown UAL key.*ual_no_such_key"),
        # instruction modelling keys
        ({"ual_instruction_weight": 0.5}, "ual_instruction_weight set, but no instruction token"),
        (
            {
                "ual_instruction_smoothing": 0.1,
                "datasets": [dict(UAL_DATASET, roles_to_train=["assistant"])],
            },
            "ual_instruction_smoothing set, but no instruction token is trained",
        ),
        (
            {"ual_instruction_smoothing": 1.0, "train_on_inputs": True},
            r"number in \[0, 1\) or 'sample'",
        ),
        ({"ual_instruction_weight": -1.0, "train_on_inputs": True}, "ual_instruction_weight"),
        # an explicit default that cannot apply is refused too (seen in the raw config)
        ({"ual_instruction_weight": 1.0}, "ual_instruction_weight set, but no instruction token"),
        ({"ual_instruction_smoothing": "sample"}, "ual_instruction_smoothing set, but no"),
        # point-wise preference keys
        ({"ual_preference_beta": 0.5}, "ual_preference_beta only apply to the point-wise"),
        ({"ual_preference_beta": 0.1}, "ual_preference_beta only apply to the point-wise"),
        (
            {"ual_objective": "sft", "ual_preference_field": "label", "ual_preference_constant": 0},
            "ual_preference_field, ual_preference_constant only apply to the point-wise",
        ),
        ({"ual_objective": "kto"}, "ual_objective"),
        ({"ual_objective": "ulma", "ual_preference_beta": 0.0}, "ual_preference_beta"),
        ({"ual_objective": "ulma", "ual_preference_labels": "stars"}, "ual_preference_labels"),
    ],
)
def test_invalid_configs_name_the_key(tiny_model, overrides, message):
    with pytest.raises((ValidationError, ValueError), match=message):
        validate(tiny_model, **overrides)


@pytest.mark.parametrize(
    "overrides",
    [
        {"train_on_inputs": True},
        {"datasets": [dict(UAL_DATASET, roles_to_train=["user", "assistant"])]},
        {"datasets": [dict(UAL_DATASET, message_field_training="train")]},
    ],
    ids=["train_on_inputs", "roles_to_train", "per-turn"],
)
def test_instruction_keys_where_instruction_tokens_are_trained(tiny_model, overrides):
    cfg = validate(
        tiny_model, ual_instruction_weight=0.3, ual_instruction_smoothing=0.0, **overrides
    )
    args = training_args_from_cfg(cfg)
    assert args["ual_instruction_weight"] == 0.3 and args["ual_instruction_smoothing"] == 0.0
    assert training_args_from_cfg(validate(tiny_model))["ual_instruction_smoothing"] == "sample"


def test_explicit_defaults_where_they_apply(tiny_model):
    validate(tiny_model, ual_instruction_weight=1.0, train_on_inputs=True)
    validate(tiny_model, ual_objective="ulma", ual_preference_beta=0.1, ual_preference_constant=0)


def test_register_on_a_validated_config_passes(tiny_model):
    """axolotl's Ray workers run `register` again on the driver's validated config, which holds
    every key with its default: that is not the user writing them."""
    from axolotl_ual.plugin import UALPlugin

    cfg = validate(tiny_model)
    assert cfg.ual_preference_beta == 0.1 and cfg.ual_instruction_weight == 1.0
    UALPlugin().register(cfg)


def test_a_validated_config_validates_again(tiny_model):
    """axolotl hands the dataset strategies its validated config, every key with its default:
    reading our keys from it must not take a default for a key the user set."""
    from axolotl_ual.args import data_settings
    from axolotl_ual.uncertainty import UncertaintySettings

    cfg = validate(tiny_model)
    assert cfg.ual_preference_field == "label" and cfg.ual_instruction_weight == 1.0
    assert data_settings(cfg).ual_objective == "sft"
    assert UncertaintySettings.from_cfg(cfg).field == "uncertainty"
    UALArgs.model_validate({k: v for k, v in cfg.items() if k.startswith("ual_")})


def test_preference_keys_reach_the_trainer(tiny_model):
    cfg = validate(
        tiny_model,
        ual_objective="pointwise_dpo",
        ual_preference_labels="continuous",
        ual_preference_beta=0.3,
        ual_preference_constant=-0.2,
    )
    args = training_args_from_cfg(cfg)
    assert (
        args["ual_objective"] == "pointwise_dpo" and args["ual_preference_labels"] == "continuous"
    )
    assert args["ual_preference_beta"] == 0.3 and args["ual_preference_constant"] == -0.2
    assert training_args_from_cfg(validate(tiny_model))["ual_objective"] == "sft"


def test_cut_cross_entropy_plugin_switched_off_is_fine(tiny_model):
    cfg = validate(
        tiny_model,
        cut_cross_entropy=False,
        plugins=[
            "axolotl_ual.UALPlugin",
            "axolotl.integrations.cut_cross_entropy.CutCrossEntropyPlugin",
        ],
    )
    assert cfg.cut_cross_entropy is False


def test_ual_args_alone():
    assert UALArgs().ual_smoothing_max == 0.2
    with pytest.raises(ValidationError, match="ual_smoothing_min"):
        UALArgs(ual_smoothing_min=0.5, ual_smoothing_max=0.4)


def test_ual_dataset_without_the_plugin_says_what_to_add(tiny_tokenizer):
    from axolotl.utils.dict import DictDefault

    from axolotl_ual import alpaca, chat_template

    cfg = DictDefault({"sequence_len": 128, "chat_template": "tokenizer_default", "plugins": []})
    for module in (chat_template, alpaca):
        with pytest.raises(ValueError, match=r"add `plugins: \[axolotl_ual.UALPlugin\]`"):
            module.load(tiny_tokenizer, cfg, DictDefault(UAL_DATASET))


EXAMPLES = sorted((SAMPLE_CHAT.parents[2] / "example_configs").glob("*.yml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_configs_validate(tiny_model, path):
    """Each example passes axolotl's validation (model and data swapped for local ones)."""
    import yaml

    cfg = yaml.safe_load(path.read_text())
    assert "axolotl_ual.UALPlugin" in cfg["plugins"]
    cfg["datasets"] = [dict(d, path=str(SAMPLE_CHAT)) for d in cfg["datasets"]]
    cfg.pop("deepspeed", None)  # a file users fetch with `axolotl fetch deepspeed_configs`
    cfg.pop("base_model")
    validated = validate(tiny_model, **cfg)
    assert 0 <= validated.ual_smoothing_min <= validated.ual_smoothing_max < 1


def test_examples_exist():
    assert {p.name for p in EXAMPLES} >= {
        "tiny_cpu_demo.yml",
        "qlora_8b_24gb.yml",
        "lora_7b.yml",
        "full_finetune.yml",
        "baseline_fixed_smoothing.yml",
        "baseline_sft.yml",
        "instruction_modelling.yml",
        "ulma_qlora.yml",
    }
