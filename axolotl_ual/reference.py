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
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .columns import REFERENCE
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

    With `head` the logits are never built: its input is captured and reduced chunk by chunk.
    """
    inputs = {key: value for key, value in inputs.items() if key != "labels"}
    predicted = F.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:]
    was_training = model.training
    model.eval()  # deterministic: no dropout in the reference
    try:
        if head is None:
            stats = token_statistics(model(**inputs).logits, predicted)
        else:
            with head.capture() as captured:
                model(**inputs)
            hidden, weight, bias = head.linear_inputs(captured[0])
            stats = linear_token_statistics(
                hidden, weight, predicted, bias=bias, softcap=head.softcap
            )
    finally:
        model.train(was_training)
    # the prediction at position t is of token t + 1
    return F.pad(-stats.nll, (1, 0))[..., :-1].float()


def adapter_reference(model, head: OutputHead | None, inputs: dict, labels: torch.Tensor):
    """`token_logprobs` of the base model: `model` (a PEFT model) with its adapters disabled."""
    with model.disable_adapter():
        return token_logprobs(model, head, inputs, labels)


def with_reference_column(
    dataset,
    model,
    head: OutputHead | None,
    *,
    cache_dir: str | Path | None,
    batch_size: int = 8,
    main_process_first=contextlib.nullcontext,
    log=print,
):
    """`dataset` plus `ual_reference_logprob` (one value per token) under `model` as it is now.

    Cached in `<cache_dir>/ual-reference-<key>`, the key covering the model's weights and the
    dataset's fingerprint; `main_process_first` lets rank 0 compute it while the others wait
    and then read it.
    """
    if dataset is None or REFERENCE.name in dataset.column_names:
        return dataset
    key = _cache_key(model, dataset)
    path = Path(cache_dir or ".") / f"ual-reference-{key}"
    with main_process_first():
        values = _load(path, len(dataset))
        if values is None:
            log(f"UAL: reference log-probabilities of {len(dataset)} rows (initial weights)...")
            values = _compute(dataset, model, head, batch_size)
            _save(path, values)
            log(f"UAL: reference log-probabilities cached in {path}")
        else:
            log(f"UAL: reference log-probabilities read from {path}")
    return dataset.add_column(REFERENCE.name, values)


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


def _cache_key(model, dataset) -> str:
    digest = hashlib.sha256()
    digest.update(str(getattr(model.config, "_name_or_path", "")).encode())
    digest.update(str(getattr(dataset, "_fingerprint", len(dataset))).encode())
    with torch.no_grad():  # the weights themselves, cheaply: one float64 sum per tensor
        for name, tensor in model.state_dict().items():
            digest.update(name.encode())
            digest.update(repr(float(tensor.detach().double().sum())).encode())
    return digest.hexdigest()[:16]


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
