"""Judge through any OpenAI-compatible chat-completions server (`openai.AsyncOpenAI`).

The client's own retries are off (`max_retries=0`): this module retries, so every retry is
counted and its policy is ours. Retried: 408, 409, 425, 429 and 5xx answers, timeouts and
connection errors, with exponential backoff and jitter, waiting exactly as long as a
`Retry-After` (or `retry-after-ms`) header asks when there is one. Stops the run: 401, 403, 404
(a bad key or model name fails every row alike). Leaves the row null: any other 4xx (e.g. a
sample longer than the judge's context) and retries exhausted.

The API key is read from the environment and handed to the client only; error texts are
scrubbed of it before they are shown, and nothing here logs requests or headers.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import random
import time
import urllib.parse
from typing import Any

from ..methods import Judgement, Logprob, LogprobTally, Verbalized, VerbalizedTally
from ..prompts import TokenPosition
from ..samples import Sample
from .base import AsyncJudge, BackendError, BackendOptions, RequestStats

RETRYABLE_STATUS = frozenset({408, 409, 425, 429})
FATAL_STATUS = frozenset({401, 403, 404})
RETRY_AFTER_CAP = 600.0


class RowFailed(Exception):
    """This sample's request failed for good; the row stays null."""

    def __init__(self, message: str, *, transient: bool):
        super().__init__(message)
        self.transient = transient


def retry_after_seconds(headers: Any) -> float | None:
    """The wait a 429/503 answer asks for (`retry-after-ms`, `Retry-After` seconds or date)."""
    if headers is None:
        return None
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(float(millis) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def display_url(url: str | None) -> str:
    """The server URL as it may be printed: the default filled in, credentials removed."""
    url = url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
    parts = urllib.parse.urlsplit(url)
    if parts.username or parts.password:  # never print credentials embedded in a URL
        parts = parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else ""))
    return urllib.parse.urlunsplit(parts)


class OpenAIJudge(AsyncJudge):
    def __init__(self, method: Verbalized | Logprob, options: BackendOptions):
        if not isinstance(method, (Verbalized, Logprob)):
            raise BackendError(
                f"the {method.name} method needs the model's full predictive distribution, which an "
                "API does not give: use --backend hf or --backend vllm with a local model"
            )
        from openai import AsyncOpenAI

        self.method = method
        self.options = options
        self.stats = RequestStats()
        # Kept only to scrub it from error texts; never printed or stored.
        self._secret = os.environ.get(options.api_key_env) or None
        self._client = AsyncOpenAI(
            # Local servers (vLLM, llama.cpp) need no key, but the client insists on one.
            api_key=self._secret or "EMPTY",
            base_url=options.base_url,
            timeout=options.timeout,
            max_retries=0,
        )

    def describe(self) -> str:
        key = (
            ""
            if self._secret
            else f" ({self.options.api_key_env} is not set: sending a placeholder key)"
        )
        return (
            f"model {self.options.model!r} at {display_url(self.options.base_url)}, "
            f"concurrency {self.options.concurrency}{key}"
        )

    def scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    async def aclose(self) -> None:
        await self._client.close()

    async def judge(self, sample: Sample) -> Judgement:
        messages = self.method.messages(sample)
        try:
            if isinstance(self.method, Verbalized):
                return await self._verbalized(messages)
            return await self._logprob(messages)
        except RowFailed as exc:
            return Judgement.failed(str(exc), transient=exc.transient)

    async def _verbalized(self, messages) -> Judgement:
        tally = VerbalizedTally(self.method)
        while request := tally.next_request():
            n, temperature = request
            extra = {"n": n} if n > 1 else {}  # servers that ignore `n` are asked again
            reply = await self._create(
                messages=messages,
                temperature=temperature,
                max_tokens=self.method.max_tokens,
                **extra,
            )
            texts = [_message_text(choice) for choice in _choices(reply)][:n]
            self.stats.unparsable += tally.add(texts)
        return tally.judgement()

    async def _logprob(self, messages) -> Judgement:
        tally = LogprobTally(self.method)
        while (temperature := tally.next_request()) is not None:
            reply = await self._create(
                messages=messages,
                temperature=temperature,
                max_tokens=self.method.max_tokens,
                logprobs=True,
                top_logprobs=self.method.top_logprobs,
            )
            choice = (_choices(reply) or [{}])[0]
            if choice and choice.get("logprobs") is None:
                raise BackendError(
                    "the server answered without logprobs: the logprob method needs a server "
                    "that supports `logprobs` and `top_logprobs` (vLLM, OpenAI); use "
                    "--method verbalized otherwise"
                )
            if not tally.add(_token_positions(choice), _message_text(choice)):
                self.stats.unparsable += 1
        return tally.judgement()

    async def _create(self, **params) -> dict[str, Any]:
        """One chat completion as a dict, retried on transient failures.

        The body is posted as is and the reply parsed with `json`: the client's typed
        `chat.completions.create` spends about 0.5 ms of CPU per request converting parameters
        and building response models, which at high concurrency is the client's main cost.
        """
        import openai

        body = {"model": self.options.model, **params}
        for attempt in range(self.options.max_retries + 1):
            self.stats.requests += 1
            try:
                text = await self._client.post("/chat/completions", cast_to=str, body=body)
                return _json_object(text)
            except openai.APITimeoutError:
                cause, wait = "timeout", None
            except openai.APIConnectionError:
                cause, wait = "connection error", None
            except openai.APIStatusError as exc:
                status = exc.status_code
                detail = self.scrub(_error_message(exc))
                if status in FATAL_STATUS:
                    raise BackendError(f"the server answered HTTP {status}: {detail}") from None
                if status not in RETRYABLE_STATUS and status < 500:
                    raise RowFailed(f"HTTP {status}: {detail}", transient=False) from None
                cause, wait = f"HTTP {status}", retry_after_seconds(exc.response.headers)
            except openai.OpenAIError as exc:
                raise RowFailed(
                    self.scrub(f"{type(exc).__name__}: {exc}"), transient=False
                ) from None
            if attempt == self.options.max_retries:
                raise RowFailed(f"{cause} after {attempt + 1} attempts", transient=True)
            self.stats.retries[cause] += 1
            await asyncio.sleep(self._delay(attempt, wait))
        raise AssertionError("unreachable")

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, RETRY_AFTER_CAP)
        # Full-size exponential steps with jitter, so a burst of failures does not retry in step.
        backoff = min(self.options.backoff_max, self.options.backoff_base * 2**attempt)
        return backoff * random.uniform(0.5, 1.0)


def _error_message(exc) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:300]
        if isinstance(error, str):
            return error[:300]
    return str(getattr(exc, "message", "") or exc)[:300]


def _json_object(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except (TypeError, json.JSONDecodeError):
        raise RowFailed(f"the reply is not JSON: {str(text)[:80]!r}", transient=False) from None
    if not isinstance(data, dict):
        raise RowFailed(f"the reply is not a chat completion: {str(text)[:80]!r}", transient=False)
    return data


def _choices(reply: dict[str, Any]) -> list[dict[str, Any]]:
    choices = reply.get("choices")
    return [c for c in choices if isinstance(c, dict)] if isinstance(choices, list) else []


def _message_text(choice: dict[str, Any]) -> str | None:
    message = choice.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else None


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
