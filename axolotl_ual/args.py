"""The `ual_*` YAML keys: validated by pydantic when axolotl loads the config.

`UALArgs` is merged into axolotl's config schema by the plugin (`get_input_args`), so its
fields become top-level YAML keys and its validators see the whole config.
`UALTrainingArgsMixin` carries what the trainer needs into `TrainingArguments`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, field_validator, model_validator

PLUGIN_PATH = "axolotl_ual.UALPlugin"
UAL_DATASET_TYPES = ("axolotl_ual.chat_template", "axolotl_ual.alpaca")

# Settings that change what `axolotl preprocess` writes (see `data_fingerprint`); the
# smoothing range and mapping are applied in the trainer, so changing them needs no re-tokenizing.
DATA_KEYS = (
    "ual_uncertainty_source",
    "ual_uncertainty_field",
    "ual_uncertainty_file",
    "ual_missing_uncertainty",
    "ual_default_uncertainty",
)


class UncertaintySource(StrEnum):
    field = "field"  # a column of each row
    sidecar = "sidecar"  # a separate file keyed by sample content (`axolotl-ual elicit --sidecar`)
    constant = "constant"  # no uncertainty: eps = ual_smoothing_max everywhere


class Mapping(StrEnum):
    linear = "linear"
    power = "power"
    rank = "rank"


class MissingUncertainty(StrEnum):
    error = "error"
    default = "default"


def is_ual_dataset_type(ds_type: Any) -> bool:
    """True for `axolotl_ual.chat_template`, `axolotl_ual.alpaca` and `axolotl_ual.alpaca:<style>`."""
    return isinstance(ds_type, str) and ds_type.split(":")[0] in UAL_DATASET_TYPES


def _dataset_types(datasets: Any) -> list[Any]:
    types = []
    for ds in datasets or []:
        types.append(ds.get("type") if isinstance(ds, dict) else getattr(ds, "type", None))
    return types


# Other ways to compute the loss that cannot be combined with UAL's.
_LOSS_KEYS = (
    "label_smoothing_factor",  # HF's global smoothing (axolotl drops it; it would be ignored)
    "liger_fused_linear_cross_entropy",
    "liger_cross_entropy",
    "chunked_cross_entropy",
    "use_eaft",
)
_CCE_PLUGIN = "cut_cross_entropy.CutCrossEntropyPlugin"


def _conflicting_loss_keys(data: dict) -> list[str]:
    found = [f"{key}: {data[key]}" for key in _LOSS_KEYS if data.get(key)]
    cce_plugin = any(str(p).endswith(_CCE_PLUGIN) for p in data.get("plugins") or [])
    if cce_plugin and data.get("cut_cross_entropy", True) is not False:  # on by default
        found.append(f"the {_CCE_PLUGIN} plugin (cut_cross_entropy)")
    return found


class UALArgs(BaseModel):
    """Uncertainty-Aware Learning settings."""

    ual_uncertainty_source: UncertaintySource = Field(
        default=UncertaintySource.field,
        json_schema_extra={"description": "where each sample's uncertainty comes from"},
    )
    ual_uncertainty_field: str = Field(
        default="uncertainty",
        json_schema_extra={"description": "row column holding the uncertainty (source: field)"},
    )
    ual_uncertainty_file: str | None = Field(
        default=None,
        json_schema_extra={"description": "sidecar annotations keyed by sample (source: sidecar)"},
    )
    ual_smoothing_min: float = Field(default=0.0, json_schema_extra={"description": "eps at u=0"})
    ual_smoothing_max: float = Field(default=0.2, json_schema_extra={"description": "eps at u=1"})
    ual_mapping: Mapping = Field(
        default=Mapping.linear,
        json_schema_extra={"description": "linear (paper) | power | rank (dataset quantile)"},
    )
    ual_mapping_power: float = Field(
        default=1.0, gt=0, json_schema_extra={"description": "gamma of the power mapping"}
    )
    ual_missing_uncertainty: MissingUncertainty = Field(
        default=MissingUncertainty.error,
        json_schema_extra={"description": "missing/null uncertainty: error, or use the default"},
    )
    ual_default_uncertainty: float = Field(default=0.5, ge=0.0, le=1.0)
    ual_fused_loss: bool = Field(
        default=True,
        json_schema_extra={"description": "compute the loss from hidden states, chunk by chunk"},
    )
    ual_loss_chunk_size: int | None = Field(
        default=None,
        gt=0,
        json_schema_extra={"description": "tokens per logits chunk of the fused loss"},
    )
    ual_eval_buckets: list[float] = Field(
        default_factory=lambda: [1 / 3, 2 / 3],
        json_schema_extra={"description": "uncertainty cut points for the bucketed eval metrics"},
    )

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
    def _check_datasets_match_plugin(cls, data: Any) -> Any:
        # Runs on axolotl's merged schema, so `data` is the whole config.
        if not isinstance(data, dict) or "datasets" not in data:
            return data
        types = _dataset_types(data.get("datasets")) + _dataset_types(data.get("test_datasets"))
        if PLUGIN_PATH in (data.get("plugins") or []) and not any(map(is_ual_dataset_type, types)):
            raise ValueError(
                f"the {PLUGIN_PATH} plugin is enabled but no dataset uses a UAL type, so no sample "
                f"carries an uncertainty: set `type:` of your datasets to one of {UAL_DATASET_TYPES} "
                f"(found types {types}), or remove the plugin"
            )
        conflicts = _conflicting_loss_keys(data)
        if conflicts:
            raise ValueError(
                "UAL computes the training loss itself (label smoothing per sample, fused with "
                "the output layer so the full logits are never built), so these settings would "
                f"replace it or add a second one: {', '.join(conflicts)}. Remove them: UAL's fused "
                "loss already saves the logits' memory (ual_fused_loss), and "
                "ual_uncertainty_source: constant gives plain label smoothing"
            )
        return data


@dataclass
class UALTrainingArgsMixin:
    """What `UALTrainer` reads from `TrainingArguments`."""

    ual_uncertainty_source: str = "field"
    ual_smoothing_min: float = 0.0
    ual_smoothing_max: float = 0.2
    ual_mapping: str = "linear"
    ual_mapping_power: float = 1.0
    ual_fused_loss: bool = True
    ual_loss_chunk_size: int | None = None
    ual_eval_buckets: list[float] = field(default_factory=lambda: [1 / 3, 2 / 3])


def training_args_from_cfg(cfg: Any) -> dict[str, Any]:
    """The `UALTrainingArgsMixin` values of a validated axolotl config."""

    def plain(value):
        return value.value if isinstance(value, Enum) else value

    return {name: plain(cfg.get(name)) for name in UALTrainingArgsMixin.__dataclass_fields__}
