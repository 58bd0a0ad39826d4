"""Build a tiny Llama model and BPE tokenizer locally, with no download.

The demo (`axolotl-ual demo`) and the end-to-end tests train on this model: it is small
enough for a CPU step to take milliseconds, yet it is a real `LlamaForCausalLM` that axolotl
loads through its normal path (`base_model: <dir>`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>"]


def corpus_from_jsonl(path: str | Path) -> list[str]:
    """Every string found in a JSONL file (messages, instructions, outputs...)."""

    def strings(value):
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for item in value.values():
                yield from strings(item)
        elif isinstance(value, list):
            for item in value:
                yield from strings(item)

    texts: list[str] = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                texts.extend(strings(json.loads(line)))
    return texts


def build_tiny_tokenizer(corpus: Iterable[str], vocab_size: int = 512):
    """A byte-level BPE tokenizer trained on `corpus`, with chatml special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [*list(corpus), "user assistant system"]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="<unk>",
        bos_token="<s>",
        # chatml ends every turn with <|im_end|>: making it the EOS lets axolotl train the
        # turn terminator exactly as it would for a real chatml model
        eos_token="<|im_end|>",
        pad_token="<pad>",
        additional_special_tokens=["<|im_start|>", "</s>"],
        chat_template=CHATML_TEMPLATE,
        padding_side="right",
    )


def build_tiny_model(
    out_dir: str | Path,
    corpus: Iterable[str],
    *,
    vocab_size: int = 512,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    tie_word_embeddings: bool = False,
    fit_steps: int = 0,
    seed: int = 0,
) -> Path:
    """Train a tokenizer on `corpus`, build a tiny Llama and save both to `out_dir`.

    A randomly initialized model predicts a target no better than any other token, so its
    cross entropy against the target and against the uniform distribution are about equal and
    label smoothing barely changes its loss. `fit_steps` > 0 first fits the model to `corpus`
    for that many steps, so that smoothing (and any mistake in it) shows clearly in the loss.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out_dir = Path(out_dir)
    corpus = list(corpus)
    tokenizer = build_tiny_tokenizer(corpus, vocab_size=vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=tie_word_embeddings,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    if fit_steps:
        _fit(model, tokenizer, texts=list(corpus), steps=fit_steps)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def _fit(model, tokenizer, texts: list[str], steps: int, lr: float = 3e-3) -> None:
    """A few full-batch language-modelling steps on `texts` (seconds on a CPU)."""
    import torch

    batch = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
