"""Independent references for end-to-end checks.

Tokenization comes from axolotl's own strategies (not ours), the loss from
`F.cross_entropy(..., label_smoothing=eps)` per sample in float64 on the initial weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from axolotl_ual.toolkit import read_jsonl

__all__ = ["read_jsonl"]


def axolotl_tokenized(
    tokenizer,
    rows: list[dict],
    ds_type: str = "chat_template",
    *,
    sequence_len: int = 256,
    train_on_inputs: bool = False,
    **ds_options,
):
    """Rows tokenized by axolotl's own `chat_template` or `alpaca` strategy."""
    from axolotl.utils.dict import DictDefault

    cfg = DictDefault(
        {
            "sequence_len": sequence_len,
            "train_on_inputs": train_on_inputs,
            "chat_template": "tokenizer_default",
        }
    )
    if ds_type == "chat_template":
        from axolotl.prompt_strategies.chat_template import load

        strategy = load(tokenizer, cfg, {"field_messages": "messages", **ds_options})
    elif ds_type == "alpaca":
        from axolotl.prompt_tokenizers import AlpacaPromptTokenizingStrategy
        from axolotl.prompters import AlpacaPrompter

        strategy = AlpacaPromptTokenizingStrategy(
            AlpacaPrompter(None), tokenizer, train_on_inputs, sequence_len
        )
    else:
        raise ValueError(ds_type)
    return [strategy.tokenize_prompt(dict(row)) for row in rows]


@torch.no_grad()
def smoothed_loss_reference(model_dir: Path, tokenized: list[dict], epsilons: list[float]):
    """sum over samples and trained tokens of CE_eps / number of trained tokens, and mean eps."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float64).eval()
    total, tokens, eps_sum = 0.0, 0, 0.0
    for row, eps in zip(tokenized, epsilons, strict=True):
        ids = torch.tensor(row["input_ids"])[None]
        logits = model(input_ids=ids).logits[0]
        target = torch.tensor(row["labels"])[1:]
        mask = target != -100
        total += F.cross_entropy(
            logits[:-1][mask], target[mask], label_smoothing=eps, reduction="sum"
        ).item()
        tokens += int(mask.sum())
        eps_sum += eps * int(mask.sum())
    return total / tokens, eps_sum / tokens
