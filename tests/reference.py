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


@torch.no_grad()
def instruction_loss_reference(
    model_dir: Path,
    tokenized: list[dict],
    response_only: list[dict],
    uncertainties: list[float],
    *,
    eps_max: float,
    instruction_weight: float,
    instruction_eps: float | None,
):
    """Instruction Modelling with its own weight and smoothing, token by token in float64:
    sum_t w_t CE_{eps_t} / sum_t w_t, where a trained token is an instruction token when
    axolotl's response-only tokenization (`response_only`) does not train it.

    Returns (loss, mean eps over trained tokens, fraction of trained tokens that are instruction
    tokens)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float64).eval()
    total = weights = eps_sum = 0.0
    tokens = instruction_tokens = 0
    for row, reference, u in zip(tokenized, response_only, uncertainties, strict=True):
        assert row["input_ids"] == reference["input_ids"]
        logits = model(input_ids=torch.tensor(row["input_ids"])[None]).logits[0][:-1]
        for t, (label, response_label) in enumerate(
            zip(row["labels"][1:], reference["labels"][1:], strict=True)
        ):
            if label == -100:
                continue
            instruction = response_label == -100
            eps = instruction_eps if instruction and instruction_eps is not None else eps_max * u
            w = instruction_weight if instruction else 1.0
            ce = F.cross_entropy(logits[t : t + 1], torch.tensor([label]), label_smoothing=eps)
            total += w * ce.item()
            weights += w
            eps_sum += eps
            tokens += 1
            instruction_tokens += instruction
    return total / weights, eps_sum / tokens, instruction_tokens / tokens


@torch.no_grad()
def pointwise_preference_reference(
    policy,
    reference,
    tokenized: list[dict],
    labels: list[float],
    uncertainties: list[float],
    *,
    eps_max: float,
    beta: float,
    constant: float = 0.0,
    variant: str = "ulma",
    continuous: bool = False,
):
    """ULMA / point-wise DPO, sequence by sequence in float64 from two models' logits:
    Delta_i = mean over the trained tokens of (log pi - log pi_ref); positives (label 1):
    the mean smoothed CE (ulma) or -log sigmoid(beta Delta + c) (pointwise_dpo); negatives:
    -log sigmoid(-beta Delta - c), or (s - beta Delta - c)^2 when continuous; the mean over
    sequences. `policy` / `reference`: causal LMs in float64."""
    total = 0.0
    for row, s, u in zip(tokenized, labels, uncertainties, strict=True):
        ids = torch.tensor(row["input_ids"])[None]
        target = torch.tensor(row["labels"])[1:]
        mask = target != -100
        logits = policy(input_ids=ids).logits[0][:-1][mask]
        ref_logits = reference(input_ids=ids).logits[0][:-1][mask]
        y = target[mask]
        logp = torch.log_softmax(logits, -1).gather(1, y[:, None]).squeeze(1)
        ref_logp = torch.log_softmax(ref_logits, -1).gather(1, y[:, None]).squeeze(1)
        delta = (logp - ref_logp).mean()
        if s == 1 and variant == "ulma":
            term = F.cross_entropy(logits, y, label_smoothing=eps_max * u)  # mean over tokens
        elif s == 1:
            term = -F.logsigmoid(beta * delta + constant)
        elif continuous:
            term = (s - beta * delta - constant) ** 2
        else:
            term = -F.logsigmoid(-beta * delta - constant)
        total += float(term)
    return total / len(tokenized)
