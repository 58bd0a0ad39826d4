"""Trainer: side columns -> the objective's per-token terms -> the loss, fused or from logits.

`UALTrainer` is axolotl's `AxolotlTrainer` with one loss change. It plugs into Hugging Face's
own extension point for custom losses (`compute_loss_func`), so the Trainer still skips its
division by the accumulation steps and rescales for data parallelism; the normalizer it passes
as `num_items_in_batch` is the objective's (`objectives.py`), summed over the whole accumulated
step and across data-parallel ranks. For UAL's smoothed SFT that is the (weighted) count of
trained tokens, exactly as HF normalizes its plain cross entropy, so with eps = 0 the loss
equals axolotl's SFT loss.

By default the model is run with its output head stood in for (see `output_head.py`): the loss
comes from the last hidden states through `loss.linear_token_loss`, chunk by chunk, and the
full logits never exist. Where that cannot reproduce the model's logits, it falls back to the
logits path and logs why, once.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from axolotl.core.trainers.base import AxolotlTrainer
from axolotl.utils.logging import get_logger

from .args import SAMPLE_SMOOTHING, Objective, PreferenceLabels
from .columns import BATCH_COLUMNS, INSTRUCTION, REFERENCE, UNCERTAINTY
from .compat import gathered_for_each_call, keep_batch_columns
from .errors import DataError, UsageError
from .loss import (
    linear_token_loss,
    linear_token_statistics,
    token_loss_from_logits,
    token_statistics,
)
from .mapping import epsilon_mapping
from .metrics import EvalBuckets, PreferenceMeter, TrainingMeter
from .objectives import PointwisePreference, PredictionBatch, SmoothedSFT
from .output_head import OutputHead, UnsupportedHead, find_output_head
from .reference import (
    Ranks,
    adapter_reference,
    describe,
    has_adapter,
    local_part,
    parameters_partitioned,
    with_reference_column,
)

LOG = get_logger(__name__)
_CHECK_TOKENS = 64  # tokens of the first batch used to check the fused path against the logits
_TINY = torch.finfo(torch.float32).tiny


def sample_uncertainties(dataset: Any) -> torch.Tensor:
    """One uncertainty per training sample (the rank mapping's reference)."""
    if dataset is None or UNCERTAINTY.name not in (dataset.column_names or []):
        raise DataError(
            "ual_mapping: rank needs the training dataset's uncertainties, but the train "
            f"dataset has no {UNCERTAINTY.name!r} column"
        )
    table = dataset.select_columns([UNCERTAINTY.name]).with_format("arrow")[:]
    values = table.column(UNCERTAINTY.name).to_numpy(zero_copy_only=False)
    return torch.as_tensor(values, dtype=torch.float64)


def build_objective(args: Any, train_dataset: Any) -> SmoothedSFT | PointwisePreference:
    """The objective the `ual_*` training arguments ask for."""
    mapping = epsilon_mapping(args, reference=lambda: sample_uncertainties(train_dataset))
    smoothing = args.ual_instruction_smoothing
    instructions = {
        "instruction_weight": args.ual_instruction_weight,
        "instruction_smoothing": None if smoothing == SAMPLE_SMOOTHING else float(smoothing),
    }
    if args.ual_objective == Objective.sft:
        return SmoothedSFT(mapping, **instructions)
    return PointwisePreference(
        mapping,
        variant=args.ual_objective,
        continuous=args.ual_preference_labels == PreferenceLabels.continuous,
        beta=args.ual_preference_beta,
        constant=args.ual_preference_constant,
        **instructions,
    )


class UALTrainer(AxolotlTrainer):
    """AxolotlTrainer whose loss is UAL's objective (label smoothing with one epsilon per sample)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.compute_loss_func is not None:
            raise UsageError(
                "another loss function is already set on the trainer (e.g. use_eaft); UAL "
                "replaces the loss, so only one of them can be used"
            )
        self.compute_loss_func = self._ual_loss
        self.ual_objective = build_objective(self.args, self.train_dataset)
        self.ual_mapping = self.ual_objective.epsilon_of
        self.ual_head: OutputHead | None = None
        self.ual_loss_path: str | None = None  # "fused" or "logits", decided on the first batch
        self._batch: PredictionBatch | None = None  # the micro-batch being computed
        self._batch_training = True
        self._fused_results: list | None = None  # what the head's forward computed
        self._training_meter = TrainingMeter()
        self._eval_buckets = EvalBuckets(self.args.ual_eval_buckets)
        self._preference_meters = {True: PreferenceMeter(), False: PreferenceMeter()}
        LOG.info(
            f"UAL: epsilon = {self.ual_mapping!r} of each sample's uncertainty "
            f"(source: {self.args.ual_uncertainty_source})"
        )
        if self.ual_objective.needs_reference:
            self._prepare_reference()

    def _prepare_reference(self) -> None:
        """Full fine-tuning: the initial weights' log-probabilities, once, as a column."""
        model = self.accelerator.unwrap_model(self.model)
        LOG.info(
            f"UAL: {self.ual_objective.name} objective, reference model: {describe(model)}, "
            f"beta={self.args.ual_preference_beta}, c={self.args.ual_preference_constant}"
        )
        if has_adapter(model):
            return
        head = None
        if self.args.ual_fused_loss:
            try:
                head = find_output_head(model)
            except UnsupportedHead as exc:
                LOG.info(f"UAL: reference log-probabilities from the logits: {exc}")
        ranks = self._reference_ranks(model)
        # before training, nothing gathers ZeRO-3's partitions for a forward yet: gather each
        # module's own weights for its call, one module at a time
        gathering = gathered_for_each_call(model) if ranks.collective else contextlib.nullcontext()
        with gathering:
            for split in ("train_dataset", "eval_dataset"):
                dataset = getattr(self, split)
                if isinstance(dataset, dict):
                    raise UsageError(
                        "ual_objective with several named eval datasets is not supported"
                    )
                reference = with_reference_column(
                    dataset,
                    model,
                    head,
                    cache_dir=self.args.ual_prepared_path,
                    ranks=ranks,
                    log=LOG.info,
                )
                setattr(self, split, reference)

    def _reference_ranks(self, model) -> Ranks:
        partitioned = parameters_partitioned(model)
        if self.accelerator.num_processes == 1 and not partitioned:
            return Ranks()
        import torch.distributed as dist

        device = self.accelerator.device
        if not partitioned:

            def from_main(value):
                shared = [value]
                dist.broadcast_object_list(shared, src=0)
                return shared[0]

            return Ranks(
                is_main_process=self.accelerator.is_main_process,
                main_process_first=self.accelerator.main_process_first,
                from_main=from_main,
            )

        # ZeRO-3 partitioned the weights when the model was loaded: every rank takes part
        def all_agree(ok: bool) -> bool:
            flag = torch.tensor([int(ok)], device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            return bool(flag.item())

        def total(values: torch.Tensor) -> torch.Tensor:
            values = values.to(device)
            dist.all_reduce(values)
            return values.cpu()

        return Ranks(
            collective=True,
            is_main_process=dist.get_rank() == 0,
            all_agree=all_agree,
            sum=total,
        )

    # --- data ---------------------------------------------------------------------------

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        keep_batch_columns(self, BATCH_COLUMNS)

    def _get_num_items_in_batch(self, batch_samples: list, device):
        """The objective's normalizer over the accumulated step, summed over ranks.

        HF's own hook for the token count it divides by (private; transformers 5.16-5.20, see
        `compat.py`): called once per accumulated step with all its micro-batches.
        """
        if not batch_samples or "labels" not in batch_samples[0]:
            return super()._get_num_items_in_batch(batch_samples, device)
        total = sum(
            self.ual_objective.normalizer(self._prediction_batch(batch["labels"], batch))
            for batch in batch_samples
        )
        total = torch.as_tensor(total, dtype=torch.float64, device=device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            total = self.accelerator.gather(total.reshape(1)).sum()
        return total

    @staticmethod
    def _prediction_batch(labels: torch.Tensor, columns: dict) -> PredictionBatch:
        present = {name: columns[name] for name in BATCH_COLUMNS if name in columns}
        return PredictionBatch.shifted(labels, present)

    # --- loss ---------------------------------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        columns = {name: inputs.pop(name) for name in BATCH_COLUMNS if name in inputs}
        if UNCERTAINTY.name not in columns:
            raise DataError(
                f"the batch has no {UNCERTAINTY.name!r}: train with UAL dataset types "
                "(axolotl_ual.chat_template / axolotl_ual.alpaca) and the UAL collator"
            )
        self._batch_training = model.training
        if self.ual_loss_path is None:
            self._choose_loss_path(model, inputs)
        if self.ual_objective.needs_reference and REFERENCE.name not in columns:
            # LoRA / QLoRA: the same model without its adapters is the reference
            head = self.ual_head if self.ual_loss_path == "fused" else None
            unwrapped = self.accelerator.unwrap_model(model)
            columns[REFERENCE.name] = adapter_reference(unwrapped, head, inputs, inputs["labels"])
        batch = self._prediction_batch(inputs["labels"], columns)
        self._batch = batch
        use_fused = self.ual_loss_path == "fused" and (
            model.training or self.compute_metrics is None  # metrics would need the logits
        )
        if not use_fused:
            self._fused_results = None
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        # the loss (or the eval statistics) is computed inside the head's call, from its input
        reduce = self._fused_loss(batch) if model.training else self._fused_statistics(batch)
        with self.ual_head.reduce_in_forward(reduce) as results:
            self._fused_results = results
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def _ual_loss(self, outputs, labels, num_items_in_batch=None):
        """HF `compute_loss_func`: the objective's terms / its normalizer over the step."""
        batch, fused = self._batch, self._fused_result()
        uncertainty = batch.column(UNCERTAINTY)
        instruction = batch.column(INSTRUCTION)
        if self._batch_training:
            if fused is None:
                result = token_loss_from_logits(
                    outputs.logits, batch.labels, self.ual_objective.terms(batch)
                )
                total = result.loss
            else:  # tied to the model's (empty) logits, which carry its sharding hooks
                result, total = fused, fused.loss + outputs.logits.sum()
            nll = result.nll
            epsilon = self.ual_objective.epsilon(batch)
            self._training_meter.add(uncertainty, epsilon, batch.trained, instruction)
        else:
            stats = token_statistics(outputs.logits, batch.labels) if fused is None else fused
            terms = self.ual_objective.terms(batch)
            total, nll = terms.value(stats.nll, stats.uniform_ce), stats.nll
            self._eval_buckets.add(uncertainty, stats, instruction)
        if self.ual_objective.needs_reference:
            self._preference_meters[self._batch_training].add(
                self.ual_objective.statistics(batch, nll)
            )
        self._batch = self._fused_results = None

        normalizer = num_items_in_batch
        if normalizer is None:
            normalizer = self.ual_objective.normalizer(batch)
        normalizer = torch.as_tensor(normalizer, device=total.device, dtype=torch.float64)
        # a step without any trained token gives 0, not 0/0
        return total / normalizer.clamp(min=_TINY).to(total.dtype)

    def _fused_result(self):
        if self._fused_results is None:
            return None
        if len(self._fused_results) != 1:
            raise RuntimeError(
                f"expected one call of the output head per forward pass, saw "
                f"{len(self._fused_results)}; set ual_fused_loss: false"
            )
        return self._fused_results[0]

    def _fused_loss(self, batch: PredictionBatch):
        terms = self.ual_objective.terms(batch)

        def reduce(hidden, weight, bias):
            return linear_token_loss(
                hidden,
                weight,
                batch.labels,
                terms,
                bias=bias,
                softcap=self.ual_head.softcap,
                chunk_size=self.args.ual_loss_chunk_size,
            )

        return reduce

    def _fused_statistics(self, batch: PredictionBatch):
        def reduce(hidden, weight, bias):
            return linear_token_statistics(
                hidden,
                weight,
                batch.labels,
                bias=bias,
                softcap=self.ual_head.softcap,
                chunk_size=self.args.ual_loss_chunk_size,
            )

        return reduce

    def _choose_loss_path(self, model, inputs) -> None:
        reason = self._fused_unavailable_reason(model, inputs)
        self.ual_loss_path = "logits" if reason else "fused"
        if reason:
            LOG.warning(f"UAL: computing the loss from full logits: {reason}")
            self.ual_head = None
        else:
            LOG.info(
                "UAL: fused loss from hidden states (no full logits; "
                f"scale={self.ual_head.scale}, softcap={self.ual_head.softcap})"
            )
        self._write_run_record(model, reason)

    def _fused_unavailable_reason(self, model, inputs) -> str | None:
        if not self.args.ual_fused_loss:
            return "ual_fused_loss is false"
        # sharded parameters (FSDP, ZeRO-3) are fine: the loss runs inside the head's call
        unwrapped = self.accelerator.unwrap_model(model)
        try:
            self.ual_head = find_output_head(unwrapped)
        except UnsupportedHead as exc:
            return str(exc)
        ok, detail = self.ual_head.matches_model(unwrapped, _first_tokens(inputs))
        LOG.info(f"UAL: fused-loss check on the first batch: {detail}")
        return None if ok else detail

    def _head_sharded(self) -> bool | None:
        """Whether the head's weight is a shard outside the forward (the fused loss then
        depends on running inside the head's call); None on the logits path."""
        if self.ual_head is None:
            return None
        weight, _ = self.ual_head.weight_and_bias()
        return weight is not local_part(weight) or hasattr(weight, "device_mesh")

    def _sharding(self) -> str | None:
        """How the parameters are sharded across ranks, for the run record."""
        if self.is_fsdp_enabled:
            return "fsdp2" if getattr(self.accelerator, "is_fsdp2", False) else "fsdp1"
        plugin = self.accelerator.state.deepspeed_plugin if self.is_deepspeed_enabled else None
        if plugin is not None and plugin.zero_stage == 3:
            return "deepspeed_zero3"
        return None

    # --- metrics ------------------------------------------------------------------------

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        meter = self._training_meter
        if "loss" in logs and meter.totals is not None:
            logs.update(meter.metrics(self._reduce(meter.totals)))
            meter.totals = None
        preference = self._preference_meters[True]
        if "loss" in logs and preference.totals is not None:
            logs.update(preference.metrics(self._reduce(preference.totals)))
            preference.totals = None
        super().log(logs, start_time)

    def evaluation_loop(
        self,
        dataloader,
        description,
        prediction_loss_only=None,
        ignore_keys=None,
        metric_key_prefix="eval",
    ):
        buckets, preference = self._eval_buckets, self._preference_meters[False]
        buckets.totals = preference.totals = None
        output = super().evaluation_loop(
            dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix
        )
        if buckets.totals is not None:
            output.metrics.update(buckets.metrics(self._reduce(buckets.totals), metric_key_prefix))
            buckets.totals = None
        if preference.totals is not None:
            totals = self._reduce(preference.totals)
            output.metrics.update(preference.metrics(totals, metric_key_prefix))
            preference.totals = None
        return output

    def _reduce(self, totals: torch.Tensor) -> torch.Tensor:
        """Sum over data-parallel ranks (collective: every rank logs and evaluates)."""
        if self.accelerator.num_processes > 1:
            totals = self.accelerator.reduce(totals.to(self.accelerator.device), reduction="sum")
        return totals.cpu()

    # --- run record ---------------------------------------------------------------------

    def _write_run_record(self, model, fallback_reason: str | None) -> None:
        if not self.is_world_process_zero():
            return
        unwrapped = self.accelerator.unwrap_model(model)
        # bitsandbytes' own layers (PEFT's LoRA wrappers around them reuse the class names)
        layers = [
            type(m).__name__
            for m in unwrapped.modules()
            if type(m).__module__.startswith("bitsandbytes")
        ]
        record = {
            "objective": self.ual_objective.name,
            "reference": describe(unwrapped) if self.ual_objective.needs_reference else None,
            "loss_path": self.ual_loss_path,
            "fallback_reason": fallback_reason,
            "sharding": self._sharding(),
            "mapping": self.ual_mapping.kind,
            "smoothing_min": self.ual_mapping.eps_min,
            "smoothing_max": self.ual_mapping.eps_max,
            "uncertainty_source": self.args.ual_uncertainty_source,
            "linear_4bit_layers": layers.count("Linear4bit"),
            "linear_8bit_layers": layers.count("Linear8bitLt"),
            # a ZeRO-3 partition's full size is its `ds_numel`
            "trainable_parameters": sum(
                getattr(p, "ds_numel", p.numel()) for p in unwrapped.parameters() if p.requires_grad
            ),
            "head_sharded_outside_forward": self._head_sharded(),
            "world_size": self.accelerator.num_processes,
        }
        path = Path(self.args.output_dir) / "ual_run.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        os.replace(tmp, path)


def _first_tokens(inputs: dict[str, Any]) -> dict[str, Any]:
    """The first sample's first tokens, with the tensors that are laid out per token cut alike."""
    ids = inputs["input_ids"]
    length = min(ids.shape[-1], _CHECK_TOKENS)
    sample = {}
    for key, value in inputs.items():
        if key == "labels":
            continue
        if torch.is_tensor(value) and value.dim() >= 2 and value.shape[:2] == ids.shape[:2]:
            sample[key] = value[:1, :length]
        else:
            sample[key] = value
    return sample
