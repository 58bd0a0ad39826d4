"""Differences between the axolotl versions we support, and workarounds for their gaps.

Everything version- or environment-specific that the plugin needs lives here, so the rest of
the code reads as if there were one axolotl.
"""

from __future__ import annotations

import os
from typing import Any

import torch


def _cpu_only_multi_process() -> bool:
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


def wrap_dataset_for_tokenized_prompt(strategy, dataset, **kwargs):
    """axolotl's `wrap_dataset_for_tokenized_prompt` (maps `strategy` over `dataset`).

    In axolotl 0.21 `axolotl.datasets` and `axolotl.utils.data` import each other; importing
    `axolotl.datasets` first fails half-way, so enter through `axolotl.utils.data` as axolotl does.
    """
    import axolotl.utils.data  # noqa: F401
    from axolotl.datasets import wrap_dataset_for_tokenized_prompt as wrap

    return wrap(strategy, dataset, **kwargs)
