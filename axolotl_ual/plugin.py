"""`axolotl_ual.UALPlugin`: the axolotl hooks, each delegating to the module that does the work.

Data flow of one sample: row with `uncertainty` -> `dataset_strategy` (per-token uncertainty
aligned with labels) -> `collator` (padding, packing) -> `trainer` (uncertainty -> epsilon
via `mapping`) -> `loss`.
"""

from __future__ import annotations

from axolotl.integrations.base import BasePlugin
from axolotl.utils.logging import get_logger

from . import error_display
from .args import (
    UAL_ARGS_PATH,
    UAL_TRAINING_ARGS_MIXIN_PATH,
    check_written_keys,
    training_args_from_cfg,
)
from .compat import (
    non_sft_setting,
    place_cpu_ranks_on_cpu,
    skip_cuda_peer_check_without_gpus,
    telemetry_would_hang_offline,
)
from .errors import UsageError
from .prepared_data import isolate_prepared_path

LOG = get_logger(__name__)


class UALPlugin(BasePlugin):
    """Uncertainty-Aware Learning: label smoothing whose strength follows each sample's uncertainty."""

    def get_input_args(self) -> str:
        return UAL_ARGS_PATH

    def get_training_args_mixin(self) -> str:
        return UAL_TRAINING_ARGS_MIXIN_PATH

    def register(self, cfg: dict):
        error_display.install()
        check_written_keys(cfg)  # the raw config: the keys the user wrote, before defaults
        skip_cuda_peer_check_without_gpus()
        if telemetry_would_hang_offline():
            LOG.warning(
                "UAL: this run looks offline (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE is set) but "
                "axolotl's telemetry is on: without internet it waits forever after the model is "
                "saved. Set AXOLOTL_DO_NOT_TRACK=1."
            )
        path = isolate_prepared_path(cfg)
        LOG.info(f"UAL: prepared datasets for these uncertainty settings live in {path}")

    def load_datasets(self, cfg, preprocess: bool = False):
        # Loads nothing (axolotl does, with our dataset types); the device-map fix must run
        # between config normalization and the model loader, and this is the only hook there.
        if place_cpu_ranks_on_cpu(cfg):
            LOG.info("UAL: CPU-only multi-process run, loading each rank's model on the CPU")
        return None

    def get_trainer_cls(self, cfg):
        if setting := non_sft_setting(cfg):
            raise UsageError(
                f"axolotl_ual.UALPlugin trains with axolotl's supervised fine-tuning trainer; "
                f"`{setting}` asks for another one: remove it, or the plugin"
            )
        from .trainer import UALTrainer

        return UALTrainer

    def get_training_args(self, cfg):
        # axolotl turns average_tokens_across_devices off, so each data-parallel rank divides by
        # its own token count; UAL divides by the token count of the whole step, on all ranks
        return {
            **training_args_from_cfg(cfg),
            "ual_prepared_path": cfg.dataset_prepared_path,  # reference log-probs are cached there
            "average_tokens_across_devices": True,
        }

    def get_collator_cls_and_kwargs(self, cfg, is_eval=False):
        from .collator import UALDataCollator
        from .compat import axolotl_collator_cls

        return UALDataCollator, {"base_collator_cls": axolotl_collator_cls(cfg, is_eval)}
