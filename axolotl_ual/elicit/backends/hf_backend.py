"""Judge with a local transformers model, in batches, on CPU or GPU.

- `verbalized`: batched `generate` (left padding), K sampled replies per sample.
- `logprob`: one forward pass; the expected digit under the model's exact next-token
  distribution, renormalized over every token that decodes to a digit ("7", " 7").
- `entropy`: one forward pass over the sample itself (right padding); see `methods.Entropy`.
"""

from __future__ import annotations

import math

from ...errors import UsageError
from ..chat_render import render_plain
from ..entropy import mean_response_entropy
from ..methods import Entropy, Judgement, Logprob, Verbalized
from ..prompts import token_digit
from .base import BackendError, BackendOptions, BatchJudge, RequestStats, judge_verbalized_batch


def resolve_device(device: str) -> str:
    import torch

    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str, device: str):
    import torch

    if dtype != "auto":
        try:
            return getattr(torch, dtype)
        except AttributeError:
            raise UsageError(
                f"unknown --dtype {dtype!r}; use float32, bfloat16 or float16"
            ) from None
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


class HFJudge(BatchJudge):
    def __init__(self, method, options: BackendOptions):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.method = method
        self.model_name = options.model
        self.stats = RequestStats()
        self.batch_size = options.batch_size or 8
        self.device = resolve_device(options.device)
        dtype = resolve_dtype(options.dtype, self.device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(options.model)
            self.model = AutoModelForCausalLM.from_pretrained(options.model, dtype=dtype)
        except (OSError, ValueError) as exc:
            raise BackendError(
                f"cannot load the model {options.model!r} with transformers: {exc}"
            ) from None
        self.model.to(self.device).eval()
        tok = self.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
        self._torch = torch
        self._digit_ids: list[list[int]] | None = None

    def describe(self) -> str:
        return f"hf model {self.model_name!r} on {self.device}, batches of {self.batch_size}"

    def close(self) -> None:
        self.model = None

    def judge_batch(self, samples) -> list[Judgement]:
        with self._torch.inference_mode():
            if isinstance(self.method, Entropy):
                return self._entropy(samples)
            if isinstance(self.method, Logprob):
                return self._logprob(samples)
            if isinstance(self.method, Verbalized):
                return judge_verbalized_batch(self.method, samples, self._generate, self.stats)
        raise BackendError(f"the hf backend cannot run the {self.method.name} method")

    # ------------------------------------------------------------------ judge prompts

    def _prompt_text(self, messages) -> str:
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        return render_plain(messages)[0] + "### Assistant:\n"

    def _encode_prompts(self, conversations):
        """Left-padded judge prompts, with position ids that ignore the padding."""
        texts = [self._prompt_text(messages) for messages in conversations]
        batch = self.tokenizer(
            texts,
            return_tensors="pt",
            padding=True,
            padding_side="left",
            add_special_tokens=not self.tokenizer.chat_template,
        )
        batch = {name: tensor.to(self.device) for name, tensor in batch.items()}
        batch.pop("token_type_ids", None)
        return batch

    def _generate(self, conversations, n: int, temperature: float) -> list[list[str]]:
        replies: list[list[str]] = []
        for start in range(0, len(conversations), self.batch_size):
            batch = self._encode_prompts(conversations[start : start + self.batch_size])
            sampling = (
                {"do_sample": True, "temperature": temperature}
                if temperature > 0
                else {"do_sample": False}
            )
            output = self.model.generate(
                **batch,
                max_new_tokens=self.method.max_tokens,
                num_return_sequences=n,
                pad_token_id=self.pad_id,
                **sampling,
            )
            texts = self.tokenizer.batch_decode(
                output[:, batch["input_ids"].shape[1] :], skip_special_tokens=True
            )
            replies.extend(texts[i : i + n] for i in range(0, len(texts), n))
        return replies

    def _digit_token_ids(self) -> list[list[int]]:
        """For each digit 0-9, every vocabulary token that decodes to it."""
        if self._digit_ids is None:
            ids: list[list[int]] = [[] for _ in range(10)]
            vocab = len(self.tokenizer)
            for token_id, text in enumerate(
                self.tokenizer.batch_decode([[i] for i in range(vocab)])
            ):
                digit = token_digit(text)
                if digit is not None:
                    ids[digit].append(token_id)
            if not any(ids):
                raise BackendError("the tokenizer has no digit tokens: use --method verbalized")
            self._digit_ids = ids
        return self._digit_ids

    def _logprob(self, samples) -> list[Judgement]:
        torch = self._torch
        digit_ids = self._digit_token_ids()
        judgements = []
        for start in range(0, len(samples), self.batch_size):
            chunk = samples[start : start + self.batch_size]
            batch = self._encode_prompts([self.method.messages(sample) for sample in chunk])
            positions = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
            logits = self.model(**batch, position_ids=positions).logits[:, -1, :]
            self.stats.requests += len(chunk)
            probs = torch.softmax(logits.float(), dim=-1)
            mass = torch.stack(
                [
                    probs[:, ids].sum(-1) if ids else probs.new_zeros(len(chunk))
                    for ids in digit_ids
                ],
                dim=-1,
            )  # [B, 10]
            expected = (mass * torch.arange(10, device=mass.device)).sum(-1) / mass.sum(-1)
            for value, total in zip(expected.tolist(), mass.sum(-1).tolist(), strict=True):
                if not (total > 0 and math.isfinite(value)):
                    judgements.append(Judgement.failed("no probability on any digit token"))
                    continue
                judgements.append(self.method.from_digits(value, total))
        return judgements

    # ------------------------------------------------------------------ entropy

    def _entropy(self, samples) -> list[Judgement]:
        torch = self._torch
        encoded = [self.method.encode(self.tokenizer, sample) for sample in samples]
        judgements = [Entropy.no_response() for _ in samples]
        todo = Entropy.measurable(encoded)
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            width = max(len(encoded[i][0]) for i in chunk)
            input_ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
            attention = torch.zeros((len(chunk), width), dtype=torch.long)
            response = torch.zeros((len(chunk), width), dtype=torch.bool)
            for row, index in enumerate(chunk):
                ids, mask = encoded[index]
                input_ids[row, : len(ids)] = torch.tensor(ids)
                attention[row, : len(ids)] = 1
                response[row, : len(ids)] = torch.tensor(mask)
            logits = self.model(
                input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device)
            ).logits
            self.stats.requests += len(chunk)
            vocab_size = logits.shape[-1]
            for index, (mean, count) in zip(
                chunk, mean_response_entropy(logits, response), strict=True
            ):
                judgements[index] = Entropy.judgement(mean, vocab_size, count)
        return judgements
