"""Score samples through any OpenAI-compatible chat-completions server.

This is the scoring half: which requests a method needs and how to read their replies.
Sending them (whole-request timeouts, retries, backoff, the error policy, server messages) is
`client.OpenAIChatClient`'s job; a reply that cannot be used names what was wrong with it.
"""

from __future__ import annotations

import re
from typing import Any

from ...errors import UsageError
from ..client import OpenAIChatClient, RequestFailed, choices_of, message_text, why_no_text
from ..methods import Judgement, Logprob, LogprobTally, Verbalized, VerbalizedTally
from ..prompts import TokenPosition
from ..samples import Sample
from .base import AsyncJudge, BackendError, BackendOptions

# A server's refusal of `n` > 1 (llama.cpp: "Only one completion choice is allowed").
N_REFUSED = re.compile(r"completion choice|\bn\b.*(?:must|only|support)", re.I)


class OpenAIJudge(AsyncJudge):
    def __init__(self, method: Verbalized | Logprob, options: BackendOptions):
        if not isinstance(method, (Verbalized, Logprob)):
            raise UsageError(
                f"the {method.name} method needs the model's full predictive distribution, which an "
                "API does not give: use --backend hf or --backend vllm with a local model"
            )
        self.method = method
        self.client = OpenAIChatClient(options)
        self.stats = self.client.stats
        self.concurrency = options.concurrency
        self.one_choice = False  # the server refused `n` > 1: ask for one completion at a time

    def describe(self) -> str:
        return f"{self.client.describe()}, concurrency {self.concurrency}"

    async def aclose(self) -> None:
        await self.client.aclose()

    async def judge(self, sample: Sample) -> Judgement:
        messages = self.method.messages(sample)
        try:
            if isinstance(self.method, Verbalized):
                return await self._verbalized(messages)
            return await self._logprob(messages)
        except RequestFailed as exc:
            return Judgement.failed(str(exc), transient=exc.transient)

    async def _verbalized(self, messages) -> Judgement:
        tally = VerbalizedTally(self.method)
        while request := tally.next_request():
            n, temperature = request
            # one completion per request where `n` is refused; one that ignores it is asked again
            extra = {"n": n} if n > 1 and not self.one_choice else {}
            try:
                reply = await self.client.complete(
                    messages, temperature=temperature, max_tokens=self.method.max_tokens, **extra
                )
            except RequestFailed as exc:
                if extra and N_REFUSED.search(exc.server_message):
                    self.one_choice = True  # for every sample from now on
                    continue
                raise
            choices = choices_of(reply)[:n]
            self.stats.ignored_n += bool(extra) and len(choices) < n
            texts = [message_text(choice) for choice in choices]
            self.stats.unparsable += tally.add(texts, missing=why_no_text(choices[0]))
        self.stats.count_replies(tally)
        return tally.judgement()

    async def _logprob(self, messages) -> Judgement:
        tally = LogprobTally(self.method)
        while (temperature := tally.next_request()) is not None:
            reply = await self.client.complete(
                messages,
                temperature=temperature,
                max_tokens=self.method.max_tokens,
                logprobs=True,
                top_logprobs=self.method.top_logprobs,
            )
            choice = choices_of(reply)[0]
            if choice.get("logprobs") is None:
                raise BackendError(
                    "the server answered without logprobs: the logprob method needs a server "
                    "that supports `logprobs` and `top_logprobs` (vLLM, llama.cpp, OpenAI; see "
                    "docs/elicit.md); use --method verbalized otherwise"
                )
            text = message_text(choice)
            if not tally.add(_token_positions(choice), text, missing=why_no_text(choice)):
                self.stats.unparsable += 1
        return tally.judgement()


def _token_positions(choice: dict[str, Any]) -> list[TokenPosition]:
    """The `logprobs.content` entries of a choice: each token and its `top_logprobs`."""
    logprobs = choice.get("logprobs")
    items = logprobs.get("content") if isinstance(logprobs, dict) else None
    positions = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict) or not isinstance(item.get("token"), str):
            continue
        alternatives = [
            (alt.get("token"), _number(alt.get("logprob")))
            for alt in item.get("top_logprobs") or []
            if isinstance(alt, dict)
        ]
        positions.append(TokenPosition(item["token"], _number(item.get("logprob")), alternatives))
    return positions


def _number(value: Any) -> float:
    return (
        float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool)
        else float("-inf")
    )
