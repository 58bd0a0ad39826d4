"""Every place axolotl-ual depends on axolotl's or Hugging Face's internals, with the versions it
is known for, and the workarounds for their gaps: config keys and the config schema, strategy
attributes, the collator choice, private Trainer methods, DeepSpeed, the environment, and the
text `axolotl train` prints.

What is not here is the plugin API itself, imported where it is used: the classes a plugin
builds on (`BasePlugin`, `AxolotlTrainer`, the prompt strategies, prompters and collators it
wraps) and `get_logger`.

Known for axolotl 0.19 (transformers 5.16) and 0.21 (transformers 5.20), the two versions CI
tests. A new axolotl version is supported by checking each function here against it (the
README's "Contributing" section lists what to run). The rest of the package reads as if there
were one axolotl. axolotl is imported inside the functions that need it, so `args.py` (and with
it `axolotl-ual inspect`) works without it.
"""

from __future__ import annotations

import ast
import contextlib
import os
import re
from typing import Any

# --- config keys ----------------------------------------------------------------------------

# Settings that replace or add a training loss, so they cannot be combined with UAL's.
# axolotl 0.19-0.21 schema keys (`label_smoothing_factor` is HF's, which axolotl drops).
LOSS_REPLACING_KEYS = (
    "label_smoothing_factor",
    "liger_fused_linear_cross_entropy",
    "liger_cross_entropy",
    "chunked_cross_entropy",
    "use_eaft",
)
CCE_PLUGIN = "cut_cross_entropy.CutCrossEntropyPlugin"
# Trainers UAL does not replace (0.19-0.21): preference / reward-model training.
NON_SFT_KEYS = ("rl", "reward_model", "process_reward_model")


def cut_cross_entropy_enabled(cfg: dict) -> bool:
    """axolotl's CCE plugin is listed and not switched off (`cut_cross_entropy` defaults on)."""
    listed = any(str(p).endswith(CCE_PLUGIN) for p in cfg.get("plugins") or [])
    return listed and cfg.get("cut_cross_entropy", True) is not False


def non_sft_setting(cfg: Any) -> str | None:
    """The first key that asks for a non-SFT trainer, as `key: value`, or None."""
    return next((f"{key}: {cfg.get(key)}" for key in NON_SFT_KEYS if cfg.get(key)), None)


def config_schema() -> type:
    """axolotl's config schema, a pydantic model whose fields (and aliases) are the top-level
    YAML keys: `axolotl.utils.schemas.config.AxolotlInputConfig` (0.19-0.21)."""
    from axolotl.utils.schemas.config import AxolotlInputConfig

    return AxolotlInputConfig


def plugin_input_args(dotted: str) -> str | None:
    """The dotted path of the config model of the plugin named `dotted` in `plugins:`, as
    axolotl's plugin API gives it (`BasePlugin.get_input_args()` on an instance, 0.19-0.21).
    Imports the plugin."""
    import importlib

    module_name, _, class_name = dotted.rpartition(".")
    return getattr(importlib.import_module(module_name), class_name)().get_input_args()


# --- dataset strategies ---------------------------------------------------------------------


def strategy_init_args(inner) -> tuple:
    """The constructor arguments of axolotl's `PromptTokenizingStrategy` (0.19-0.21), read from
    a built strategy, so a wrapper can be one too."""
    return inner.prompter, inner.tokenizer, inner.train_on_inputs, inner.sequence_len


RESPONSE_ROLE = "assistant"  # axolotl's chat_template role names after its `roles` mapping
# The names a config's `roles_to_train` may give the response by, before that mapping: the
# ones chat_template's default `roles` (0.19-0.21) send to RESPONSE_ROLE.
RESPONSE_ROLE_NAMES = (RESPONSE_ROLE, "gpt")


def trains_instructions(inner) -> bool:
    """Whether axolotl's strategy trains tokens outside the assistant turns (`train_on_inputs`,
    or another role in chat_template's `roles_to_train`; attributes as of 0.19-0.21)."""
    roles = getattr(inner, "roles_to_train", None) or []
    return bool(inner.train_on_inputs) or any(role != RESPONSE_ROLE for role in roles)


def response_only_twin(inner):
    """A copy of axolotl's strategy that trains the assistant turns only (end-of-turn tokens as
    configured): the same tokenization, with the labels axolotl's defaults give."""
    import copy

    twin = copy.copy(inner)
    twin.train_on_inputs = False
    if hasattr(twin, "roles_to_train"):
        twin.roles_to_train = [RESPONSE_ROLE]
    return twin


def wrap_dataset_for_tokenized_prompt(strategy, dataset, **kwargs):
    """axolotl's `wrap_dataset_for_tokenized_prompt` (maps `strategy` over `dataset`).

    In axolotl 0.21 `axolotl.datasets` and `axolotl.utils.data` import each other; importing
    `axolotl.datasets` first fails half-way, so enter through `axolotl.utils.data` as axolotl does.
    """
    import axolotl.utils.data  # noqa: F401
    from axolotl.datasets import wrap_dataset_for_tokenized_prompt as wrap

    return wrap(strategy, dataset, **kwargs)


# --- collators ------------------------------------------------------------------------------


def axolotl_collator_cls(cfg: Any, is_eval: bool) -> type:
    """The collator class axolotl's causal builder picks for this config.

    A copy of the choice in `HFCausalTrainerBuilder.build_collator` (0.19-0.21), which a plugin
    cannot ask for: UAL wraps that class instead of replacing it.
    """
    from axolotl.monkeypatch.multipack import SUPPORTED_MULTIPACK_MODEL_TYPES
    from axolotl.utils.collators import (
        BatchSamplerDataCollatorForSeq2Seq,
        DataCollatorForSeq2Seq,
        V2BatchSamplerDataCollatorForSeq2Seq,
    )
    from transformers import DataCollatorWithFlattening

    packing = cfg.eval_sample_packing if is_eval else cfg.sample_packing
    if packing:
        if (
            cfg.attn_implementation == "flex_attention"
            or cfg.model_config_type in SUPPORTED_MULTIPACK_MODEL_TYPES
            or (cfg.model_config_type == "llama" and cfg.attn_implementation != "flash_attention_2")
        ):
            return V2BatchSamplerDataCollatorForSeq2Seq
        return BatchSamplerDataCollatorForSeq2Seq
    if cfg.batch_flattening:
        return DataCollatorWithFlattening
    return DataCollatorForSeq2Seq


def collator_layout(collator_cls: type) -> str:
    """How a collator class lays samples out: "packs" (axolotl's multipack collators, a list of
    samples per row), "flat" (HF's flattening collator, one row) or "rows" (one per sample)."""
    from axolotl.utils.collators import (
        BatchSamplerDataCollatorForSeq2Seq,
        V2BatchSamplerDataCollatorForSeq2Seq,
    )
    from transformers import DataCollatorWithFlattening

    if issubclass(
        collator_cls, (BatchSamplerDataCollatorForSeq2Seq, V2BatchSamplerDataCollatorForSeq2Seq)
    ):
        return "packs"
    if issubclass(collator_cls, DataCollatorWithFlattening):
        return "flat"
    return "rows"


# --- trainer --------------------------------------------------------------------------------
# `UALTrainer` also overrides two private methods of HF's Trainer (transformers 5.16-5.20):
# `_set_signature_columns_if_needed` (with `keep_batch_columns` below) and
# `_get_num_items_in_batch(batch_samples, device)`, which returns what the loss is divided by.


def keep_batch_columns(trainer, columns) -> None:
    """Stop HF's Trainer from dropping `columns` as unknown to the model's forward.

    transformers 5.16-5.20: `_remove_unused_columns` keeps `trainer._signature_columns`, filled
    by `_set_signature_columns_if_needed` (call this right after it).
    """
    signature = getattr(trainer, "_signature_columns", None)
    if signature is not None:
        signature.extend(name for name in columns if name not in signature)


# --- DeepSpeed ZeRO-3 ------------------------------------------------------------------------


@contextlib.contextmanager
def gathered_for_each_call(model):
    """Within the block, each module of a ZeRO-3-partitioned `model` gathers its own weights
    for its forward and releases them after, as DeepSpeed's engine does once training runs
    (collective: every rank must run the same forwards). For forwards before the engine
    exists, e.g. the reference pass at trainer construction; DeepSpeed 0.19
    (`deepspeed.zero.GatheredParameters`)."""
    import deepspeed

    open_gathers = {}

    def gather(module, args):
        gathered = deepspeed.zero.GatheredParameters(list(module.parameters(recurse=False)))
        gathered.__enter__()
        open_gathers[module] = gathered

    def release(module, args, output):
        open_gathers.pop(module).__exit__(None, None, None)

    handles = []
    for module in model.modules():
        if next(module.parameters(recurse=False), None) is not None:
            handles.append(module.register_forward_pre_hook(gather))
            handles.append(module.register_forward_hook(release))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        for gathered in open_gathers.values():  # a forward that raised
            gathered.__exit__(None, None, None)


# --- what `axolotl train` prints -------------------------------------------------------------
# Read by `axolotl-ual demo` and `axolotl-ual phases` to show progress, and by the tests. Seen
# in axolotl 0.19 / transformers 5.16 output; the metric dicts and the step count are checked
# on 0.21 / 5.20 too (tests/e2e/test_train_setups.py::test_demo_command, CI's second leg). A
# line that stops matching loses a progress message, never a result.

# axolotl's "Maximum number of steps set at N" (`utils/data/sft.py`) once the data is ready.
TOTAL_STEPS = re.compile(r"Maximum number of steps set at (\d+)")
# axolotl's console log format, "[time] [LEVEL] [logger] message" (`logging_config.py`): our
# own plugin's INFO / WARNING / ERROR lines, the message in group 1.
PLUGIN_LOG = re.compile(r"\] \[(?:INFO|WARNING|ERROR)\] \[axolotl_ual[\w.]*\] (.+)$")
# axolotl's messages that mark where a run is (data loading, `train.py`).
LOADING_RAW_DATA = "Loading raw datasets"
LOADING_PREPARED_DATA = "Loading prepared dataset from disk"
TRAINING_STARTS = "Starting trainer"
TRAINING_DONE = "Training completed"
# The Trainer's tqdm progress bar, "  33%|###       | 1/3 [00:06<00:10,  1.70s/it]".
PROGRESS_BAR = re.compile(r"(\d+)/(\d+) \[")


def logged_metrics(log_text: str) -> list[dict]:
    """The metric dicts the Hugging Face Trainer prints to the console, e.g. {'loss': '6.2',
    'ual_epsilon_mean': '0.1'} (values as strings since transformers 5; read as floats where
    they are numbers), in order, from any text holding such lines."""
    records = []
    for line in log_text.replace("\r", "\n").splitlines():
        start = line.find("{'")
        if start < 0 or not line.rstrip().endswith("}"):
            continue
        try:
            record = ast.literal_eval(line[start:].strip())
        except (ValueError, SyntaxError):
            continue
        if isinstance(record, dict):
            records.append({k: _number(v) for k, v in record.items()})
    return records


def _number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


# --- offline runs ---------------------------------------------------------------------------


def _truthy_env(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def telemetry_would_hang_offline() -> bool:
    """axolotl's telemetry (PostHog, on unless AXOLOTL_DO_NOT_TRACK or DO_NOT_TRACK is truthy,
    0.19-0.21) waits forever at exit without internet; say so where the run says it is offline."""
    tracked = not (_truthy_env("AXOLOTL_DO_NOT_TRACK") or _truthy_env("DO_NOT_TRACK"))
    offline = any(_truthy_env(n) for n in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return tracked and offline


# --- distributed runs without accelerators --------------------------------------------------


def _cpu_only_multi_process() -> bool:
    import torch

    return not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1


def skip_cuda_peer_check_without_gpus() -> bool:
    """Let a multi-process run without GPUs get past axolotl's CUDA peer-to-peer probe.

    While loading the config, axolotl asks `torch.cuda.can_device_access_peer` whether GPUs can
    talk to each other. With a CUDA build of torch (what pip installs on Python 3.12) and no GPU
    that raises "Found no NVIDIA driver", stopping a CPU data-parallel run before it starts;
    without GPUs the answer is simply "no". Returns whether it changed anything.
    """
    if not _cpu_only_multi_process():
        return False
    import axolotl.utils.trainer

    axolotl.utils.trainer.check_cuda_p2p_ib_support = lambda: False
    return True


def place_cpu_ranks_on_cpu(cfg: Any) -> bool:
    """Let a multi-process run without accelerators load its model on the CPU.

    axolotl (0.19 to 0.21) sets `device_map = {"": LOCAL_RANK}` for every multi-process run,
    which transformers reads as an accelerator index and fails on with "Cannot access
    accelerator device when none is available". On a CPU-only machine (data parallelism over
    gloo, as in our tests) each rank belongs on the CPU. Returns whether it changed the config.

    Must run after axolotl normalizes the config (which sets the device map) and before its
    model loader reads it, which happens before the `pre_model_load` hook: `load_datasets` is
    the last hook in between.
    """
    if not _cpu_only_multi_process():
        return False
    device_map = cfg.get("device_map")
    if (
        isinstance(device_map, dict)
        and list(device_map) == [""]
        and isinstance(device_map[""], int)
    ):
        cfg["device_map"] = {"": "cpu"}
        return True
    return False
