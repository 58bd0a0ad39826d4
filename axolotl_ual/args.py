"""The `ual_*` YAML keys: the one place that names them, their defaults and their allowed values.

`UALArgs` is merged into axolotl's config schema by the plugin (`get_input_args`), so its
fields become top-level YAML keys and its validators see the whole config. Every field says
at which stage it applies (`json_schema_extra["stage"]`):

- `data`: decides the tokenized rows (part of the prepared-data fingerprint, `DATA_KEYS`);
- `training`: read by the trainer from `TrainingArguments` (`UALTrainingArgsMixin`, whose
  fields and defaults are generated from these, `TRAINING_KEYS`);
- both, for a key that decides what the rows carry and what the trainer does with it.

No axolotl imports: `axolotl-ual inspect` validates the keys of a YAML with `UALArgs` alone.
"""

from __future__ import annotations

import difflib
from dataclasses import field, make_dataclass
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from .compat import (
    CCE_PLUGIN,
    LOSS_REPLACING_KEYS,
    RESPONSE_ROLE_NAMES,
    cut_cross_entropy_enabled,
)
from .errors import UsageError

PLUGIN_PATH = "axolotl_ual.UALPlugin"
UAL_DATASET_TYPES = ("axolotl_ual.chat_template", "axolotl_ual.alpaca")
KEY_PREFIX = "ual_"
DATA, TRAINING = "data", "training"
SAMPLE_SMOOTHING = "sample"  # ual_instruction_smoothing: use the sample's own epsilon
INSTRUCTION_KEYS = ("ual_instruction_weight", "ual_instruction_smoothing")


class UncertaintySource(StrEnum):
    field = "field"  # a column of each row
    sidecar = "sidecar"  # a separate file keyed by sample content (`axolotl-ual elicit --sidecar`)
    constant = "constant"  # no uncertainty: eps = ual_smoothing_max everywhere


class EpsilonMapping(StrEnum):
    """How an uncertainty becomes a label-smoothing epsilon (see `mapping.py`)."""

    linear = "linear"
    power = "power"
    rank = "rank"


class MissingUncertainty(StrEnum):
    error = "error"
    default = "default"


class Objective(StrEnum):
    """What the trainer optimizes (see `objectives.py`)."""

    sft = "sft"  # UAL-smoothed SFT (with Instruction Modelling's instruction tokens)
    ulma = "ulma"  # point-wise preference: positives by smoothed SFT, negatives by point-wise DPO
    pointwise_dpo = "pointwise_dpo"  # point-wise DPO for positives too (ULMA's baseline)


class PreferenceLabels(StrEnum):
    binary = "binary"  # 1 good, 0 bad
    continuous = "continuous"  # a score in [0, 1]; 1 is a demonstration


def _key(default: Any, stage: str | tuple[str, ...], description: str, **constraints) -> Any:
    extra = {
        "stage": [stage] if isinstance(stage, str) else list(stage),
        "description": description,
    }
    if callable(default):
        return Field(default_factory=default, json_schema_extra=extra, **constraints)
    return Field(default=default, json_schema_extra=extra, **constraints)


def is_ual_dataset_type(ds_type: Any) -> bool:
    """True for `axolotl_ual.chat_template`, `axolotl_ual.alpaca` and `axolotl_ual.alpaca:<style>`."""
    return isinstance(ds_type, str) and ds_type.split(":")[0] in UAL_DATASET_TYPES


def _dataset_entries(data: dict) -> list[tuple[str, Any]]:
    """(`datasets[i]` / `test_datasets[i]`, the entry) for every dataset of a raw config."""
    entries = []
    for section in ("datasets", "test_datasets"):
        for index, ds in enumerate(data.get(section) or []):
            entries.append((f"{section}[{index}]", ds))
    return entries


def _entry_value(ds: Any, name: str) -> Any:
    return ds.get(name) if isinstance(ds, dict) else getattr(ds, name, None)


class UALArgs(BaseModel):
    """Uncertainty-Aware Learning settings."""

    ual_uncertainty_source: UncertaintySource = _key(
        # training too: "constant" is plain label smoothing at ual_smoothing_max
        UncertaintySource.field,
        (DATA, TRAINING),
        "where each sample's uncertainty comes from",
    )
    ual_uncertainty_field: str = _key(
        "uncertainty", DATA, "row column holding the uncertainty (source: field)"
    )
    ual_uncertainty_file: str | None = _key(
        None, DATA, "sidecar annotations keyed by sample (source: sidecar)"
    )
    ual_missing_uncertainty: MissingUncertainty = _key(
        MissingUncertainty.error, DATA, "missing/null uncertainty: error, or use the default"
    )
    ual_default_uncertainty: float = _key(
        0.5, DATA, "u for rows without one (ual_missing_uncertainty: default)", ge=0.0, le=1.0
    )
    ual_smoothing_min: float = _key(0.0, TRAINING, "eps at u=0")
    ual_smoothing_max: float = _key(0.2, TRAINING, "eps at u=1")
    ual_mapping: EpsilonMapping = _key(
        EpsilonMapping.linear, TRAINING, "linear (paper) | power | rank (dataset quantile)"
    )
    ual_mapping_power: float = _key(1.0, TRAINING, "gamma of the power mapping", gt=0)
    ual_fused_loss: bool = _key(
        True, TRAINING, "compute the loss from hidden states, chunk by chunk"
    )
    ual_loss_chunk_size: int | None = _key(
        None, TRAINING, "tokens per logits chunk of the fused loss", gt=0
    )
    ual_eval_buckets: list[float] = _key(
        lambda: [1 / 3, 2 / 3], TRAINING, "uncertainty cut points for the bucketed eval metrics"
    )
    ual_instruction_weight: float = _key(
        1.0,
        TRAINING,
        "loss weight of trained instruction tokens relative to response tokens "
        "(1 = Instruction Modelling, 0 = plain SFT)",
        ge=0.0,
    )
    ual_instruction_smoothing: float | Literal["sample"] = _key(
        SAMPLE_SMOOTHING,
        TRAINING,
        "epsilon of instruction tokens: a number in [0, 1), or `sample` (the sample's own)",
    )

    ual_objective: Objective = _key(Objective.sft, (DATA, TRAINING), "sft | ulma | pointwise_dpo")
    ual_preference_field: str = _key(
        "label", DATA, "row column with the preference label (ual_objective: ulma / pointwise_dpo)"
    )
    ual_preference_labels: PreferenceLabels = _key(
        PreferenceLabels.binary, (DATA, TRAINING), "binary (0 / 1) or continuous (in [0, 1])"
    )
    ual_preference_beta: float = _key(0.1, TRAINING, "beta of the point-wise DPO terms", gt=0.0)
    ual_preference_constant: float = _key(
        0.0, TRAINING, "c, the constant standing in for log Z(x) in the point-wise DPO terms"
    )

    @field_validator("ual_instruction_smoothing")
    @classmethod
    def _instruction_smoothing_range(cls, value: float | str) -> float | str:
        if value != SAMPLE_SMOOTHING and not 0.0 <= float(value) < 1.0:
            raise ValueError(
                f"ual_instruction_smoothing must be a number in [0, 1) or 'sample', got {value}"
            )
        return value

    @field_validator("ual_eval_buckets")
    @classmethod
    def _buckets_sorted(cls, edges: list[float]) -> list[float]:
        if any(not 0.0 < e < 1.0 for e in edges) or edges != sorted(set(edges)):
            raise ValueError(
                f"ual_eval_buckets must be increasing cut points strictly inside (0, 1), got {edges}"
            )
        return edges

    @model_validator(mode="after")
    def _check_ual_keys(self):
        lo, hi = self.ual_smoothing_min, self.ual_smoothing_max
        if not 0.0 <= lo <= hi < 1.0:
            raise ValueError(
                "need 0 <= ual_smoothing_min <= ual_smoothing_max < 1, got "
                f"ual_smoothing_min={lo}, ual_smoothing_max={hi}"
            )
        source = self.ual_uncertainty_source
        path = self.ual_uncertainty_file
        if source == UncertaintySource.sidecar:
            if not path:
                raise ValueError(
                    "ual_uncertainty_source: sidecar needs ual_uncertainty_file "
                    "(the annotations written by `axolotl-ual elicit --sidecar ...`)"
                )
            if not Path(path).is_file():
                raise ValueError(f"ual_uncertainty_file={path!r} does not exist or is not a file")
        elif path:
            raise ValueError(
                f"ual_uncertainty_file={path!r} is only read with ual_uncertainty_source: sidecar "
                f"(the source is {source.value!r}); remove it or change the source"
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _check_whole_config(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        check_unknown_keys(data)
        _check_preference_keys(data, _set_keys(data, PREFERENCE_KEYS))
        if "datasets" in data:  # axolotl's merged schema: `data` is the whole config
            _check_datasets(data)
            _check_single_loss(data)
            _check_instruction_tokens_can_be_trained(data, _set_keys(data, INSTRUCTION_KEYS))
        return data


def check_unknown_keys(data: dict) -> None:
    """A misspelt `ual_*` key would otherwise be dropped by axolotl's schema without a word."""
    unknown = [
        key for key in data if key.startswith(KEY_PREFIX) and key not in UALArgs.model_fields
    ]
    if not unknown:
        return
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key, UALArgs.model_fields, n=1, cutoff=0.6)
        hints.append(f"{key} (did you mean {close[0]}?)" if close else key)
    raise UsageError(
        f"unknown UAL key(s): {', '.join(hints)}. The keys this version of axolotl-ual knows are "
        f"{', '.join(UALArgs.model_fields)}"
    )


PREFERENCE_KEYS = (
    "ual_preference_field",
    "ual_preference_labels",
    "ual_preference_beta",
    "ual_preference_constant",
)


def _set_keys(data: dict, keys) -> list[str]:
    """The `keys` set to something other than their default (a validated config, which
    axolotl re-reads in each process, holds every key with its default)."""
    fields = UALArgs.model_fields
    return [
        key
        for key in keys
        if data.get(key) is not None and _plain(data[key]) != _plain(fields[key].get_default())
    ]


def check_written_keys(raw: dict) -> None:
    """The keys that apply only with others, checked on what the user wrote: the plugin's
    `register` hook gets the config before axolotl fills in the defaults. The validator sees
    configs with every default filled in, so it can only tell values that differ from the
    default; here an explicit default that cannot apply (`ual_instruction_weight: 1.0` with no
    trained instruction token, `ual_preference_beta: 0.1` with `ual_objective: sft`) is refused
    by name like any other value.

    A config that holds every `ual_*` key with a default was validated already (axolotl's Ray
    workers run `register` again on the driver's validated config): what was written cannot be
    told there, and the validator has checked what it can.
    """
    defaulted = [k for k, f in UALArgs.model_fields.items() if f.get_default() is not None]
    if all(raw.get(key) is not None for key in defaulted):
        return

    def written(keys) -> list[str]:
        return [key for key in keys if raw.get(key) is not None]

    _check_preference_keys(raw, written(PREFERENCE_KEYS))
    _check_instruction_tokens_can_be_trained(raw, written(INSTRUCTION_KEYS))


def _check_preference_keys(data: dict, given: list[str]) -> None:
    objective = data.get("ual_objective") or Objective.sft
    if given and str(objective) == Objective.sft:
        raise UsageError(
            f"{', '.join(given)} only apply to the point-wise preference objectives: set "
            "ual_objective: ulma (or pointwise_dpo), or remove the key(s)"
        )


def _check_datasets(data: dict) -> None:
    if PLUGIN_PATH not in (data.get("plugins") or []):
        return
    entries = _dataset_entries(data)
    plain = [
        (where, ds) for where, ds in entries if not is_ual_dataset_type(_entry_value(ds, "type"))
    ]
    if plain and len(plain) == len(entries):
        types = [_entry_value(ds, "type") for _, ds in entries]
        raise UsageError(
            f"the {PLUGIN_PATH} plugin is enabled but no dataset uses a UAL type, so no sample "
            f"carries an uncertainty: set `type:` of your datasets to one of {UAL_DATASET_TYPES} "
            f"(found types {types}), or remove the plugin"
        )
    if plain:
        named = "; ".join(
            f"{where} (path {_entry_value(ds, 'path')!r}, type {_entry_value(ds, 'type')!r})"
            for where, ds in plain
        )
        raise UsageError(
            f"with the {PLUGIN_PATH} plugin every dataset needs a UAL type, so that each sample "
            f"has an uncertainty; these do not: {named}. Use axolotl_ual.chat_template / "
            "axolotl_ual.alpaca for them (with ual_uncertainty_source: constant, or "
            "ual_missing_uncertainty: default, if they have no scores)"
        )


def _check_instruction_tokens_can_be_trained(data: dict, given: list[str]) -> None:
    """The instruction keys (`given`) do nothing unless some instruction token is trained."""
    if not given or data.get("train_on_inputs"):
        return
    for _, ds in _dataset_entries(data):
        roles = _entry_value(ds, "roles_to_train") or []
        per_turn = _entry_value(ds, "message_field_training") or _entry_value(
            ds, "message_field_training_detail"
        )
        if per_turn or any(role not in RESPONSE_ROLE_NAMES for role in roles):
            return  # trains non-assistant turns (or decides per turn, which only the data knows)
    raise UsageError(
        f"{' and '.join(given)} set, but no instruction token is trained: the loss covers the "
        "assistant turns only. Set `train_on_inputs: true` (Instruction Modelling: every "
        "system/user turn), or add the roles to train to a dataset's `roles_to_train` "
        "(e.g. [user, assistant]); or remove the key(s)"
    )


def _check_single_loss(data: dict) -> None:
    found = [f"{key}: {data[key]}" for key in LOSS_REPLACING_KEYS if data.get(key)]
    if cut_cross_entropy_enabled(data):
        found.append(f"the {CCE_PLUGIN} plugin (cut_cross_entropy)")
    if found:
        raise UsageError(
            "UAL computes the training loss itself (label smoothing per sample, fused with "
            "the output layer so the full logits are never built), so these settings would "
            f"replace it or add a second one: {', '.join(found)}. Remove them: UAL's fused "
            "loss already saves the logits' memory (ual_fused_loss), and "
            "ual_uncertainty_source: constant gives plain label smoothing"
        )


def _keys_of_stage(stage: str) -> tuple[str, ...]:
    return tuple(
        name
        for name, info in UALArgs.model_fields.items()
        if stage in (info.json_schema_extra or {}).get("stage", ())
    )


DATA_KEYS = _keys_of_stage(DATA)
TRAINING_KEYS = _keys_of_stage(TRAINING)
# Every key at its default: where code outside this module reads a default (function
# signatures included), so that each default is written once, above.
DEFAULTS = UALArgs()
# What the plugin hands axolotl (`get_input_args`, `get_training_args_mixin`), also read by
# `axolotl-ual phases` to know the plugin's keys without importing the plugin (and torch).
UAL_ARGS_PATH = f"{__name__}.{UALArgs.__name__}"


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


def _mixin_field(name: str):
    info = UALArgs.model_fields[name]
    if info.default_factory is not None:
        return name, Any, field(default_factory=info.default_factory)
    return name, Any, field(default=_plain(info.default))


# What `UALTrainer` reads from `TrainingArguments` (axolotl adds it to its training-args class):
# the training-stage keys, and where the prepared data lives (the plugin passes
# `dataset_prepared_path`; the precomputed reference log-probabilities are cached beside it).
UALTrainingArgsMixin = make_dataclass(
    "UALTrainingArgsMixin",
    [
        *(_mixin_field(name) for name in TRAINING_KEYS),
        ("ual_prepared_path", Any, field(default=None)),
    ],
)
UALTrainingArgsMixin.__module__ = __name__
UALTrainingArgsMixin.__doc__ = "The training-stage `ual_*` keys, with `UALArgs`'s defaults."
UAL_TRAINING_ARGS_MIXIN_PATH = f"{__name__}.{UALTrainingArgsMixin.__name__}"


def data_settings(cfg: Any) -> UALArgs:
    """The data-stage `ual_*` keys of a config (raw or validated), validated, defaults filled."""
    return UALArgs.model_validate({k: cfg.get(k) for k in DATA_KEYS if cfg.get(k) is not None})


def training_args_from_cfg(cfg: Any) -> dict[str, Any]:
    """The `UALTrainingArgsMixin` values of a validated axolotl config (enums as plain values)."""
    values = {}
    for name in TRAINING_KEYS:
        value = cfg.get(name)
        values[name] = _plain(
            UALArgs.model_fields[name].get_default(call_default_factory=True)
            if value is None
            else value
        )
    return values
