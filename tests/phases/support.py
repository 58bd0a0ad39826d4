"""Helpers of the phases tests: recipes written into a temporary folder, a small key set."""

from __future__ import annotations

from pathlib import Path

import yaml

from axolotl_ual.phases.recipe import load_recipe
from axolotl_ual.toolkit import write_jsonl

# axolotl keys the unit tests' recipes use (the real set comes from axolotl's schema: see
# test_recipe.py::test_keys_come_from_axolotls_schema_and_the_plugins)
KEYS = frozenset(
    {
        "base_model",
        "tokenizer_config",
        "lora_model_dir",
        "adapter",
        "lora_r",
        "datasets",
        "test_datasets",
        "val_set_size",
        "learning_rate",
        "lr_scheduler",
        "warmup_steps",
        "num_epochs",
        "max_steps",
        "micro_batch_size",
        "gradient_accumulation_steps",
        "save_steps",
        "save_strategy",
        "eval_steps",
        "evals_per_epoch",
        "saves_per_epoch",
        "eval_strategy",
        "output_dir",
        "plugins",
        "ual_smoothing_max",
        "seed",
    }
)


def chat_rows(n: int, *, start: int = 0, u=lambda i: round(i / 100, 3)) -> list[dict]:
    return [
        {
            "messages": [
                {"role": "user", "content": f"question {i}"},
                {"role": "assistant", "content": f"answer {i}"},
            ],
            "uncertainty": u(i),
        }
        for i in range(start, start + n)
    ]


def entry(path: str, **options) -> dict:
    return {
        "path": path,
        "type": "axolotl_ual.chat_template",
        "field_messages": "messages",
        **options,
    }


def write_recipe(folder: Path, phases: list[dict], base: dict | None = None, **top) -> Path:
    """recipe.yml + base.yml in `folder`; the base has an eval split unless told otherwise."""
    folder.mkdir(parents=True, exist_ok=True)
    base = {"base_model": "org/model", "test_datasets": [entry("eval.jsonl")], **(base or {})}
    (folder / "base.yml").write_text(yaml.safe_dump(base, sort_keys=False))
    recipe = {"base_config": "base.yml", **top, "phases": phases}
    path = folder / "recipe.yml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    for cfg in [base, *phases]:  # the data files named must exist: an empty one unless written
        for key in ("datasets", "test_datasets"):
            for item in cfg.get(key) or []:
                file = folder / item["path"]
                if file.suffix == ".jsonl" and not file.exists():
                    file.parent.mkdir(parents=True, exist_ok=True)
                    file.write_text("")
    return path


def write_data(folder: Path, **files: list[dict]) -> None:
    for name, rows in files.items():
        write_jsonl(folder / name, rows)


def load(path: Path, **kwargs):
    return load_recipe(path, known_keys=lambda plugins: KEYS, **kwargs)
