"""An axolotl plugin that sets up and measures a run from inside the trainer, the same way on
every path.

Listed in every arm's `plugins:` (the UAL plugin's SFT path and axolotl's `rl: kto` path alike).

- **Seeds the LoRA adapter.** axolotl creates the adapter before anything seeds torch (the
  Trainer seeds itself later), and on the `rl: kto` path TRL creates it inside the trainer, so
  the initial adapter differs from run to run and between the two paths. Once the trainer is
  built, every LoRA layer is re-initialized as PEFT does (A Kaiming-uniform, B zero) from the
  run's `seed:` alone, in a forked RNG so nothing else is affected: a run is reproducible, and
  all arms of a seed start from the same adapter (`initial_adapter_sha256` in probe.json).
- **Measures.** It writes `<output_dir>/probe.json`:

- `step_wall_s` / `step_cpu_s`: wall-clock and process CPU seconds between consecutive ends of
  training steps (forward, backward, optimizer, and the data loading and logging in between);
  the first step, which pays one-off costs, is measured from the start of training.
- `rss_at_train_begin_mib`, `peak_rss_at_train_begin_mib`, `peak_rss_at_train_end_mib`: the
  process's resident memory when training starts, and its high-water mark (ru_maxrss) then and
  when training ends: whether training itself raised the peak.
- `trained`: what the trainer actually trains on, row by row, read from its train dataset after
  the trainer built it: prompt tokens, the tokens the loss covers, the label. The experiment's
  test compares them between the arms (same prompts, responses, labels, tokens).
"""

from __future__ import annotations

import hashlib
import json
import math
import resource
import time
from pathlib import Path

import torch
from axolotl.integrations.base import BasePlugin
from transformers import TrainerCallback

MIB = 1024 * 1024


def _rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * resource.getpagesize() / MIB


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def trained_rows(dataset) -> list[dict]:
    """Each training row as {"prompt", "trained", "label"} in token ids, whichever trainer.

    KTO (TRL): `prompt_ids` / `completion_ids` / `label`. The UAL plugin's SFT path: the tokens
    before the first labelled one / the labelled tokens / the sample's preference label (absent
    when the objective is plain SFT).
    """
    rows = []
    for row in dataset:
        if "completion_ids" in row:
            rows.append(
                {
                    "prompt": list(row["prompt_ids"]),
                    "trained": list(row["completion_ids"]),
                    "label": int(row["label"]),
                }
            )
            continue
        labels = list(row["labels"])
        first = next(i for i, t in enumerate(labels) if t != -100)
        label = row.get("ual_preference")
        rows.append(
            {
                "prompt": list(row["input_ids"][:first]),
                "trained": [t for t in labels if t != -100],
                "label": None if label is None else int(label),
            }
        )
    return rows


def seed_adapters(model, seed: int) -> str:
    """Re-initialize every LoRA layer of `model` from `seed` (PEFT's default init); returns a
    digest of the adapter weights, in module order, to compare across runs."""
    digest = hashlib.sha256()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _, module in model.named_modules():
            for name, linear in getattr(module, "lora_A", {}).items():
                torch.nn.init.kaiming_uniform_(linear.weight, a=math.sqrt(5))
                torch.nn.init.zeros_(module.lora_B[name].weight)
                for weight in (linear.weight, module.lora_B[name].weight):
                    digest.update(weight.detach().cpu().float().numpy().tobytes())
    return digest.hexdigest()


class _Probe(TrainerCallback):
    def __init__(self, trainer, output_dir: Path, adapter_sha256: str):
        self.trainer = trainer
        self.output_dir = output_dir
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.record: dict = {"initial_adapter_sha256": adapter_sha256}

    def on_train_begin(self, args, state, control, **kwargs):
        self.record.update(
            rss_at_train_begin_mib=_rss_mib(),
            peak_rss_at_train_begin_mib=_peak_rss_mib(),
            trained=trained_rows(self.trainer.train_dataset),
        )
        self.last = (time.perf_counter(), time.process_time())

    def on_step_end(self, args, state, control, **kwargs):
        now = (time.perf_counter(), time.process_time())
        self.wall.append(now[0] - self.last[0])
        self.cpu.append(now[1] - self.last[1])
        self.last = now

    def on_train_end(self, args, state, control, **kwargs):
        self.record.update(
            peak_rss_at_train_end_mib=_peak_rss_mib(),
            step_wall_s=self.wall,
            step_cpu_s=self.cpu,
            trainer=type(self.trainer).__name__,
        )
        if args.process_index == 0:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / "probe.json").write_text(json.dumps(self.record))


class ProbePlugin(BasePlugin):
    """`plugins: [experiments.pointwise_preference.probe.ProbePlugin]`"""

    def add_callbacks_post_trainer(self, cfg, trainer):
        # the trainer (and, on the KTO path, its PEFT model) exists; the optimizer not yet
        adapter = seed_adapters(trainer.model, cfg.seed)
        return [_Probe(trainer, Path(cfg.output_dir), adapter)]
