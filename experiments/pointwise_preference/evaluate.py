"""Held-out likelihood of the good and the bad response of every test prompt.

For each held-out prompt x with its good response g and bad response b (both known, see
`data.py`), the model's log-probabilities of the response tokens, each response followed by the
end-of-turn token: exactly the tokens axolotl's `chat_template` strategy and TRL's KTOTrainer
train on (the tokenization is `harness.evaluate.encode_rows`).

- `good_token_logp` / `bad_token_logp`: the mean over prompts of the response's mean per-token
  log-probability (ULMA's per-token average), and `token_margin`, their difference;
- `good_prob` / `bad_prob`: the mean over prompts of the whole response's probability
  q(g | x) = exp(sum of its token log-probabilities), and `good_logp` / `bad_logp`, the mean of
  those sums;
- `preference_accuracy`: the share of prompts where q(g | x) > q(b | x).

Overall and per task. Models are read through the shared `Scorer`s
(`experiments/harness/evaluate.py`).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..harness.evaluate import HFScorer, Scorer, encode_rows, response_stats


def scoring_rows(prompts: list[dict]) -> list[dict]:
    """Test prompts as `encode_rows` rows: option 0 is the good response, option 1 the bad one
    (the truth puts all its mass on the good one)."""
    return [
        {
            "messages": [
                {"role": "user", "content": p["prompt"]},
                {"role": "assistant", "content": p["good"]},
            ],
            "task": p["task"],
            "kind": "low",
            "responses": [p["good"], p["bad"]],
            "probs": [1.0, 0.0],
        }
        for p in prompts
    ]


def response_logps(tokenizer, scorer: Scorer, prompts: list[dict]) -> list[dict]:
    """Per prompt: the token log-probabilities of its good and its bad response."""
    encoded = encode_rows(tokenizer, scoring_rows(prompts))
    stats = response_stats(
        scorer,
        [e.prompt for e in encoded for _ in (0, 1)],
        [e.options[k] for e in encoded for k in (0, 1)],
    )
    return [
        {"task": e.task, "good": stats[2 * i].logq, "bad": stats[2 * i + 1].logq}
        for i, e in enumerate(encoded)
    ]


def summarize(per_prompt: list[dict]) -> dict:
    n = len(per_prompt)

    def mean(values) -> float:
        return sum(values) / n

    good_sum = [float(p["good"].sum()) for p in per_prompt]
    bad_sum = [float(p["bad"].sum()) for p in per_prompt]
    good_tok = [float(p["good"].mean()) for p in per_prompt]
    bad_tok = [float(p["bad"].mean()) for p in per_prompt]
    return {
        "prompts": n,
        "good_token_logp": mean(good_tok),
        "bad_token_logp": mean(bad_tok),
        "token_margin": mean(g - b for g, b in zip(good_tok, bad_tok, strict=True)),
        "good_logp": mean(good_sum),
        "bad_logp": mean(bad_sum),
        "good_prob": mean(math.exp(v) for v in good_sum),
        "bad_prob": mean(math.exp(v) for v in bad_sum),
        "preference_accuracy": mean(g > b for g, b in zip(good_sum, bad_sum, strict=True)),
    }


def evaluate(tokenizer, scorer: Scorer, prompts: list[dict]) -> dict:
    per_prompt = response_logps(tokenizer, scorer, prompts)
    out = {"all": summarize(per_prompt), "tasks": {}}
    for task in dict.fromkeys(p["task"] for p in per_prompt):
        out["tasks"][task] = summarize([p for p in per_prompt if p["task"] == task])
    return out


def load_model(model_dir: Path, base_model: Path):
    """A trained model in float32: a LoRA adapter is merged into the base it was trained on."""
    from transformers import AutoModelForCausalLM

    if (Path(model_dir) / "adapter_config.json").exists():
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
        return PeftModel.from_pretrained(base, model_dir).merge_and_unload()
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)


def evaluate_model(model_dir: Path, base_model: Path, prompts: list[dict]) -> dict:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    scorer = HFScorer(load_model(model_dir, base_model), tokenizer.pad_token_id)
    return evaluate(tokenizer, scorer, prompts)
