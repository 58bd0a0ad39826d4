"""Judge with vLLM's offline engine (`vllm.LLM`), a batch of samples per call.

- `verbalized`: `LLM.chat` with `n` samples per prompt.
- `logprob`: `LLM.chat` with `logprobs=top_logprobs`; the same digit expectation as the API path.
- `entropy`: `LLM.generate` over the tokenized sample with `prompt_logprobs=top_logprobs`. vLLM
  returns only the top logprobs of each position, so the entropy is estimated from them with the
  rest of the probability spread evenly over the other tokens (an upper bound, exact when the
  top tokens hold all the mass); the hf backend computes it exactly.

vLLM is an optional extra: `pip install 'axolotl-ual[vllm]'`.
"""

from __future__ import annotations

import math

from ..entropy import entropy_from_top_logprobs
from ..methods import (
    Entropy,
    Judgement,
    Logprob,
    LogprobTally,
    Verbalized,
    drive_tallies,
)
from ..prompts import TokenPosition
from .base import BackendError, BackendOptions, BatchJudge, RequestStats, judge_verbalized_batch

INSTALL_HINT = "pip install 'axolotl-ual[vllm]'"


def import_vllm():
    try:
        import vllm
    except ImportError as exc:
        raise BackendError(
            f"the vllm backend needs vLLM, which is not installed ({exc}): {INSTALL_HINT}"
        ) from None
    return vllm


def completion_positions(completion) -> list[TokenPosition]:
    """A vLLM `CompletionOutput` with logprobs as the generated tokens and their alternatives."""
    positions = []
    for token_id, alternatives in zip(
        completion.token_ids, completion.logprobs or [], strict=False
    ):
        chosen = alternatives.get(token_id)
        positions.append(
            TokenPosition(
                token=(chosen.decoded_token or "") if chosen else "",
                logprob=chosen.logprob if chosen else -math.inf,
                alternatives=[(lp.decoded_token or "", lp.logprob) for lp in alternatives.values()],
            )
        )
    return positions


def prompt_entropy(prompt_logprobs, response_mask, vocab_size: int) -> tuple[float, int]:
    """(mean estimated entropy over the response tokens' predictions, token count)."""
    values = [
        entropy_from_top_logprobs([lp.logprob for lp in prompt_logprobs[t].values()], vocab_size)
        for t in range(1, len(response_mask))
        if response_mask[t] and prompt_logprobs[t]
    ]
    return (math.fsum(values) / len(values) if values else math.nan), len(values)


class VLLMJudge(BatchJudge):
    def __init__(self, method, options: BackendOptions):
        vllm = import_vllm()
        self.method = method
        self.model_name = options.model
        self.stats = RequestStats()
        self.batch_size = options.batch_size or 512
        self._vllm = vllm
        kwargs = {
            "model": options.model,
            "max_logprobs": max(getattr(method, "top_logprobs", 20), 1),
        }
        if options.dtype != "auto":
            kwargs["dtype"] = options.dtype
        self.llm = vllm.LLM(**kwargs)
        self._tokenizer = None

    def describe(self) -> str:
        return f"vllm model {self.model_name!r}, batches of {self.batch_size}"

    def close(self) -> None:
        self.llm = None

    def judge_batch(self, samples) -> list[Judgement]:
        if isinstance(self.method, Verbalized):
            return judge_verbalized_batch(self.method, samples, self._generate, self.stats)
        if isinstance(self.method, Logprob):
            return self._logprob(samples)
        if isinstance(self.method, Entropy):
            return self._entropy(samples)
        raise BackendError(f"the vllm backend cannot run the {self.method.name} method")

    def _chat(self, conversations, params):
        self.stats.requests += len(conversations)
        return self.llm.chat(conversations, params, use_tqdm=False)

    def _generate(self, conversations, n: int, temperature: float) -> list[list[str]]:
        params = self._vllm.SamplingParams(
            n=n, temperature=temperature, max_tokens=self.method.max_tokens
        )
        return [
            [choice.text for choice in output.outputs]
            for output in self._chat(conversations, params)
        ]

    def _logprob(self, samples) -> list[Judgement]:
        tallies = [LogprobTally(self.method) for _ in samples]
        conversations = [self.method.messages(sample) for sample in samples]

        def ask(temperature: float, indices: list[int]) -> None:
            params = self._vllm.SamplingParams(
                temperature=temperature,
                max_tokens=self.method.max_tokens,
                logprobs=self.method.top_logprobs,
            )
            outputs = self._chat([conversations[i] for i in indices], params)
            for index, output in zip(indices, outputs, strict=True):
                completion = output.outputs[0]
                if not tallies[index].add(completion_positions(completion), completion.text):
                    self.stats.unparsable += 1

        return drive_tallies(tallies, ask)

    def _entropy(self, samples) -> list[Judgement]:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.llm.llm_engine.model_config.model)
        encoded = [self.method.encode(self._tokenizer, sample) for sample in samples]
        todo = Entropy.measurable(encoded)
        judgements = [Entropy.no_response() for _ in samples]
        if not todo:
            return judgements
        params = self._vllm.SamplingParams(max_tokens=1, prompt_logprobs=self.method.top_logprobs)
        self.stats.requests += len(todo)
        outputs = self.llm.generate(
            [{"prompt_token_ids": encoded[i][0]} for i in todo], params, use_tqdm=False
        )
        vocab_size = self.llm.llm_engine.model_config.get_vocab_size()
        for index, output in zip(todo, outputs, strict=True):
            mean, count = prompt_entropy(output.prompt_logprobs, encoded[index][1], vocab_size)
            judgements[index] = (
                Entropy.judgement(mean, vocab_size, count) if count else judgements[index]
            )
        return judgements
