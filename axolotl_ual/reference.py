"""The reference model's log-probabilities, for the point-wise preference objectives.

Delta_i of `objectives.PointwisePreference` compares the policy with a reference model, which
is never a second copy of the model in memory:

- LoRA / QLoRA: the same model with its adapters disabled (`disable_adapter`), once per
  micro-batch, without gradients (`adapter_reference`);
- full fine-tuning: the initial weights, once before training, for every row of the train and
  eval datasets, stored as the `ual_reference_logprob` column (`with_reference_column`) and
  cached beside the prepared data, keyed by the model and the dataset, so a re-run (or another
  rank) reads it instead of computing it again.

Both go through the output head without building the full logits where the fused loss can
(`linear_token_statistics`), and through the logits otherwise. No axolotl imports.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .columns import REFERENCE
from .errors import DataError
from .loss import linear_token_statistics, token_statistics
from .output_head import OutputHead

IGNORE_INDEX = -100


def has_adapter(model) -> bool:
    """A PEFT model whose adapters can be switched off for a reference forward."""
    return callable(getattr(model, "disable_adapter", None))


@torch.no_grad()
def token_logprobs(model, head: OutputHead | None, inputs: dict, labels: torch.Tensor):
    """(B, T) log p(token t | tokens < t) of the labelled tokens under `model` as it is (0 at
    t = 0 and where the label is ignored), in eval mode, without gradients.

    With `head` the logits are never built: the head's input is reduced chunk by chunk inside
    its call (where sharded parameters are whole).
    """
    inputs = {key: value for key, value in inputs.items() if key != "labels"}
    predicted = F.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:]
    was_training = model.training
    model.eval()  # deterministic: no dropout in the reference
    try:
        if head is None:
            stats = token_statistics(model(**inputs).logits, predicted)
        else:

            def reduce(hidden, weight, bias):
                return linear_token_statistics(
                    hidden, weight, predicted, bias=bias, softcap=head.softcap
                )

            with head.reduce_in_forward(reduce) as results:
                model(**inputs)
            stats = results[0]
    finally:
        model.train(was_training)
    # the prediction at position t is of token t + 1
    return F.pad(-stats.nll, (1, 0))[..., :-1].float()


def adapter_reference(model, head: OutputHead | None, inputs: dict, labels: torch.Tensor):
    """`token_logprobs` of the base model: `model` (a PEFT model) with its adapters disabled."""
    with model.disable_adapter():
        return token_logprobs(model, head, inputs, labels)


@dataclass
class Ranks:
    """How data-parallel ranks share the one-off reference pass.

    Whole weights on the main process (one process, DDP; FSDP shards only when training
    starts, and with `cpu_ram_efficient_loading` only the main process holds real weights
    until then): the main process computes the cache key and the values while the others wait
    in `main_process_first`, then they read its cache (`from_main` hands them its key).
    Weights partitioned already (DeepSpeed ZeRO-3 loads them so): each forward needs every
    rank, so all compute together (`collective`; `sum` adds a tensor over ranks, `all_agree`
    tells whether every rank found the cache) and only the main process writes the cache.
    """

    collective: bool = False
    is_main_process: bool = True
    main_process_first: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    from_main: Callable[[Any], Any] = lambda value: value
    all_agree: Callable[[bool], bool] = bool
    sum: Callable[[torch.Tensor], torch.Tensor] = lambda t: t


def with_reference_column(
    dataset,
    model,
    head: OutputHead | None,
    *,
    cache_dir: str | Path | None,
    batch_size: int = 8,
    ranks: Ranks | None = None,
    log=print,
):
    """`dataset` plus `ual_reference_logprob` (one value per token) under `model` as it is now.

    Cached in `<cache_dir>/ual-reference-<key>`, the key covering the model's weights and the
    dataset's fingerprint, so a re-run (or another rank, see `Ranks`) reads it.
    """
    if dataset is None or REFERENCE.name in dataset.column_names:
        return dataset
    ranks = ranks or Ranks()
    if ranks.collective:
        path = _cache_path(cache_dir, _cache_key(model, dataset, ranks.sum))
        values = _load(path, len(dataset))
        if not ranks.all_agree(values is not None):
            values = _compute_logged(dataset, model, head, batch_size, log)
            if ranks.is_main_process:
                _save_logged(path, values, log)
        else:
            log(f"UAL: reference log-probabilities read from {path}")
        return dataset.add_column(REFERENCE.name, values)

    key = _cache_key(model, dataset) if ranks.is_main_process else None
    path = _cache_path(cache_dir, ranks.from_main(key))
    with ranks.main_process_first():
        values = _load(path, len(dataset))
        if values is None and not ranks.is_main_process:
            raise DataError(
                f"the reference log-probabilities the main process computed are not readable "
                f"at {path} on this rank: put dataset_prepared_path on storage every rank shares"
            )
        if values is None:
            values = _compute_logged(dataset, model, head, batch_size, log)
            _save_logged(path, values, log)
        else:
            log(f"UAL: reference log-probabilities read from {path}")
    return dataset.add_column(REFERENCE.name, values)


def _cache_path(cache_dir: str | Path | None, key: str) -> Path:
    return Path(cache_dir or ".") / f"ual-reference-{key}"


def _compute_logged(dataset, model, head, batch_size: int, log) -> list[list[float]]:
    log(f"UAL: reference log-probabilities of {len(dataset)} rows (initial weights)...")
    return _compute(dataset, model, head, batch_size)


def _save_logged(path: Path, values: list[list[float]], log) -> None:
    _save(path, values)
    log(f"UAL: reference log-probabilities cached in {path}")


def _compute(dataset, model, head, batch_size: int) -> list[list[float]]:
    device = next(model.parameters()).device
    lengths = [len(ids) for ids in dataset["input_ids"]]
    order = sorted(range(len(dataset)), key=lengths.__getitem__)  # less padding
    values: list[list[float] | None] = [None] * len(dataset)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        width = max(lengths[i] for i in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros(len(rows), width, dtype=torch.long)
        for r, i in enumerate(rows):
            row = dataset[i]
            n = lengths[i]
            ids[r, :n] = torch.tensor(row["input_ids"])
            labels[r, :n] = torch.tensor(row["labels"])
            mask[r, :n] = 1
        inputs = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
        logp = token_logprobs(model, head, inputs, labels.to(device)).cpu()
        for r, i in enumerate(rows):
            values[i] = logp[r, : lengths[i]].tolist()
    return values


def _cache_key(model, dataset, sum_over_ranks=lambda t: t) -> str:
    digest = hashlib.sha256()
    digest.update(str(getattr(model.config, "_name_or_path", "")).encode())
    digest.update(str(getattr(dataset, "_fingerprint", len(dataset))).encode())
    tensors = [*model.named_parameters(), *model.named_buffers()]
    with torch.no_grad():  # the weights themselves, cheaply: one float64 sum per tensor
        sums = torch.stack([local_part(t).sum(dtype=torch.float64) for _, t in tensors])
    for (name, _), total in zip(tensors, sum_over_ranks(sums).tolist(), strict=True):
        digest.update(name.encode())
        digest.update(repr(total).encode())
    return digest.hexdigest()[:16]


def local_part(tensor: torch.Tensor) -> torch.Tensor:
    """What this rank holds of a parameter: DeepSpeed ZeRO-3's partition (`ds_tensor`), or the
    tensor itself."""
    return getattr(tensor, "ds_tensor", tensor)


def parameters_partitioned(model) -> bool:
    """Whether the model's parameters are DeepSpeed ZeRO-3 partitions right now."""
    return any(hasattr(p, "ds_tensor") for p in model.parameters())


def _load(path: Path, rows: int) -> list[list[float]] | None:
    if not path.is_dir():
        return None
    import datasets

    try:
        stored = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError):
        return None
    if len(stored) != rows or REFERENCE.name not in stored.column_names:
        return None
    return stored[REFERENCE.name]


def _save(path: Path, values: list[list[float]]) -> None:
    import datasets

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    datasets.Dataset.from_dict({REFERENCE.name: values}).save_to_disk(str(tmp))
    shutil.rmtree(path, ignore_errors=True)  # ours: a stale copy under the same key
    os.replace(tmp, path)


def describe(model: Any) -> str:
    return "the model with its adapters disabled" if has_adapter(model) else "the initial weights"
