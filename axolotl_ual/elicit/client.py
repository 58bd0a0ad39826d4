"""An OpenAI-compatible chat-completions client with one error policy, for any task.

`OpenAIChatClient.complete(messages, **params)` posts one chat completion and returns the
server's JSON reply as a dict. What it does about failures:

- **The whole request is bounded by `timeout`** (connect, send, every byte of the answer): a
  server that trickles a byte now and then cannot hold a request forever. Counted as a timeout.
- **Retried** with exponential backoff and jitter (`backoff_base` doubling up to `backoff_max`),
  at most `max_retries` times: HTTP 408, 409, 425, 429 and 5xx, timeouts, connection errors. A
  `Retry-After` or `retry-after-ms` header is waited for exactly (capped at 10 minutes). The
  openai client's own retries are off, so every retry is counted in `stats`.
- **Stops the run** (`BackendError`, with a hint): 401/403 (the key), 404/405 (the URL, or the
  model when the server's message quotes it), 400/422 whose message quotes the model, and
  connection errors before the server has ever answered (nothing is listening at the URL).
  These fail every request alike, so retrying or going on would only null every row.
- **Fails this request only** (`RequestFailed`): any other 4xx (e.g. a prompt longer than the
  context), a 5xx that says the request itself is not supported, retries exhausted, a reply that
  is not a JSON object.

Every HTTP error message carries the server's own words (`error.message`, FastAPI's `detail`
as a string or a list of validation errors, a top-level `message`, or the start of a text body).
`choices_of`, `message_text` and `why_no_text` read a reply, saying what was wrong with one
that has no usable choice or text.

The API key is read from the environment and given to the HTTP client only; this module never
prints it, and the command entry points mask it in all output (`redact.redacted_output`). A
reply can quote it (a server echoing the request, a model repeating its prompt): a caller that
writes reply text to a file takes it through `without_key` first.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import random
import re
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

from ..errors import BackendError
from .backends.base import BackendOptions, RequestStats
from .redact import kept_secrets, redact

RETRYABLE_STATUS = frozenset({408, 409, 425, 429})
KEY_STATUS = frozenset({401, 403})
ROUTE_STATUS = frozenset({404, 405})
MODEL_STATUS = frozenset({400, 404, 405, 422})
RETRY_AFTER_CAP = 600.0
# Tries before "nothing is listening" stops the run; only while the server never answered.
UNREACHABLE_ATTEMPTS = 3
MESSAGE_LIMIT = 300
# A 5xx saying the request itself is unsupported (llama.cpp answers `n` > 1 with a 500 "Only one
# completion choice is allowed"): asking again cannot help.
UNSUPPORTED_REQUEST = re.compile(
    r"only one completion choice|(?:unsupported|illegal|invalid) param|not supported", re.I
)


class RequestFailed(Exception):
    """This request failed for good; the caller's row stays without a result.

    `transient`: the server could not be reached or kept failing (timeouts, 429, 5xx), not
    because of this request; `status` and `server_message` say what the server answered.
    """

    def __init__(
        self,
        message: str,
        *,
        transient: bool,
        status: int | None = None,
        server_message: str = "",
    ):
        super().__init__(message)
        self.transient = transient
        self.status = status
        self.server_message = server_message


@dataclass(frozen=True)
class _Retry:
    """A failed attempt that may be retried: why, how long the server asked to wait."""

    cause: str
    wait: float | None = None
    server_message: str = ""


def display_url(url: str | None) -> str:
    """The server URL as it may be printed: the default filled in, credentials removed."""
    url = url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
    parts = urllib.parse.urlsplit(url)
    if parts.username or parts.password:  # never print credentials embedded in a URL
        parts = parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else ""))
    return urllib.parse.urlunsplit(parts)


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


def server_message(body: Any) -> str:
    """The server's own message in an error body (JSON text, parsed JSON or plain text)."""
    if isinstance(body, (str, bytes)):
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        try:
            body = json.loads(text)
        except json.JSONDecodeError:
            return _shorten(text)
        if isinstance(body, str):
            return _shorten(body)
    return _shorten(_message_in(body) or (json.dumps(body) if body not in (None, "") else ""))


def _message_in(data: Any) -> str:
    if isinstance(data, str):
        return data
    if isinstance(data, dict):
        for key in ("error", "detail", "message", "msg"):  # OpenAI, FastAPI, vLLM (old), ...
            if found := _message_in(data.get(key)):
                return found
        return ""
    if isinstance(data, list):  # FastAPI / pydantic: [{"loc": ["body", "temperature"], "msg": ...}]
        parts = []
        for item in data:
            message = _message_in(item)
            location = item.get("loc") if isinstance(item, dict) else None
            if message and isinstance(location, list):
                where = ".".join(str(part) for part in location if part != "body")
                message = f"{where}: {message}" if where else message
            if message:
                parts.append(message)
        return "; ".join(parts)
    return ""


def _shorten(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 3] + "..."


def names_model(message: str, model: str) -> bool:
    """Whether an error message is about `model`: it quotes the name ('x', "x" or `x`, as
    vLLM, OpenAI, Ollama and transformers serve do). Unquoted mentions are not enough: "This
    model's maximum context length..." is about one prompt, whatever the model is called."""
    return re.search(rf"['\"`]{re.escape(model)}['\"`]", message) is not None


class OpenAIChatClient:
    """Chat completions from one OpenAI-compatible server, with the module's error policy."""

    def __init__(self, options: BackendOptions):
        from openai import AsyncOpenAI

        self.options = options
        self.stats = RequestStats()
        self.url = display_url(options.base_url)
        self._has_key = bool(os.environ.get(options.api_key_env))
        self._secrets = kept_secrets(os.environ.get(options.api_key_env))
        self._answered = False  # any HTTP answer at all: the server exists at this URL
        self._client = AsyncOpenAI(
            # Local servers (vLLM, llama.cpp) need no key, but the client insists on one.
            api_key=os.environ.get(options.api_key_env) or "EMPTY",
            base_url=options.base_url,
            timeout=options.timeout,  # per phase; the whole request is bounded in `complete`
            max_retries=0,
        )

    def describe(self) -> str:
        key = (
            ""
            if self._has_key
            else f" ({self.options.api_key_env} is not set: sending a placeholder key)"
        )
        return f"model {self.options.model!r} at {self.url}{key}"

    async def aclose(self) -> None:
        await self._client.close()

    def without_key(self, text: str | None) -> str | None:
        """`text` (from a reply) with the API key masked as `redact` masks it in the console:
        for what is written to files, which the console masking does not reach."""
        return redact(text, self._secrets) if text and self._secrets else text

    async def complete(self, messages: list[dict[str, Any]], **params: Any) -> dict[str, Any]:
        """One chat completion (`params`: temperature, max_tokens, n, logprobs...) as the
        server's JSON object, retried per the module's policy."""
        body = {"model": self.options.model, "messages": messages, **params}
        for attempt in range(self.options.max_retries + 1):
            result = await self._attempt(body, attempt)
            if not isinstance(result, _Retry):
                return result
            if attempt == self.options.max_retries:
                said = f": {result.server_message}" if result.server_message else ""
                raise RequestFailed(
                    f"{result.cause} after {attempt + 1} attempts{said}",
                    transient=True,
                    server_message=result.server_message,
                )
            self.stats.retries[result.cause] += 1
            await asyncio.sleep(self._delay(attempt, result.wait))
        raise AssertionError("unreachable")

    async def _attempt(self, body: dict[str, Any], attempt: int) -> dict[str, Any] | _Retry:
        """The reply, or what to retry; raises what is not retried."""
        import openai

        self.stats.requests += 1
        try:
            # The body is posted as is and the reply parsed with `json`: the typed
            # `chat.completions.create` costs ~0.5 ms of CPU per request, the client's main
            # cost at high concurrency.
            request = self._client.post("/chat/completions", cast_to=str, body=body)
            text = await asyncio.wait_for(request, self.options.timeout)
        except (TimeoutError, openai.APITimeoutError):
            return _Retry("timeout")
        except openai.APIConnectionError as exc:
            tries = min(UNREACHABLE_ATTEMPTS, self.options.max_retries + 1)
            if not self._answered and attempt + 1 >= tries:
                cause = f": {exc.__cause__}" if exc.__cause__ else ""
                raise BackendError(
                    f"the server is not reachable at {self.url} (connection failed {attempt + 1} "
                    f"times{cause}): is it running, and is --base-url right?"
                ) from None
            return _Retry("connection error")
        except openai.APIStatusError as exc:
            self._answered = True
            status = exc.status_code
            message = server_message(exc.response.text)
            self._raise_for(status, message)
            if status in RETRYABLE_STATUS or (
                status >= 500 and not UNSUPPORTED_REQUEST.search(message)
            ):
                return _Retry(f"HTTP {status}", retry_after_seconds(exc.response.headers), message)
            raise RequestFailed(
                f"HTTP {status}: {message}", transient=False, status=status, server_message=message
            ) from None
        except openai.OpenAIError as exc:
            raise RequestFailed(f"{type(exc).__name__}: {exc}", transient=False) from None
        self._answered = True
        return _json_object(text)

    def _raise_for(self, status: int, message: str) -> None:
        """Stop the run on the answers that every request would get alike."""
        said = f"HTTP {status}: {message}" if message else f"HTTP {status}"
        if status in KEY_STATUS:
            raise BackendError(
                f"the server refused the API key ({said}): check {self.options.api_key_env}"
            )
        model = self.options.model
        if status in MODEL_STATUS and names_model(message, model):
            raise BackendError(
                f"the server does not serve the model {model!r} ({said}): check --model "
                f"(most servers list theirs at GET {self.url.rstrip('/')}/models)"
            )
        if status in ROUTE_STATUS:
            raise BackendError(
                f"the server has no chat completions at {self.url.rstrip('/')}/chat/completions "
                f"({said}): check --base-url (for most servers it ends in /v1)"
            )

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, RETRY_AFTER_CAP)
        # Full-size exponential steps with jitter, so a burst of failures does not retry in step.
        backoff = min(self.options.backoff_max, self.options.backoff_base * 2**attempt)
        return backoff * random.uniform(0.5, 1.0)


def _json_object(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except (TypeError, json.JSONDecodeError):
        raise RequestFailed(f"the reply is not JSON: {str(text)[:80]!r}", transient=False) from None
    if not isinstance(data, dict):
        raise RequestFailed(
            f"the reply is not a chat completion: {str(text)[:80]!r}", transient=False
        )
    return data


# --------------------------------------------------------------------------- reading replies


def choices_of(reply: dict[str, Any]) -> list[dict[str, Any]]:
    """The reply's choices; a reply without any fails the request, saying what it held."""
    if "choices" not in reply:
        said = server_message(reply) if reply else "an empty object"
        raise RequestFailed(f"the reply has no 'choices': {said}", transient=False)
    choices = reply["choices"]
    if not isinstance(choices, list) or not any(isinstance(c, dict) for c in choices):
        what = "an empty list" if choices == [] else f"{type(choices).__name__} {choices!r:.60}"
        raise RequestFailed(f"the reply's 'choices' is {what}", transient=False)
    return [choice for choice in choices if isinstance(choice, dict)]


def message_text(choice: dict[str, Any]) -> str | None:
    message = choice.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else None


def why_no_text(choice: dict[str, Any]) -> str:
    """What was wrong with a choice that has no reply text, for the row's error."""
    message = choice.get("message")
    if not isinstance(message, dict):
        return "a choice without a 'message'"
    content = message.get("content")
    if content is None:
        if message.get("reasoning_content") or message.get("reasoning"):
            return "null message content, only reasoning (raise --max-tokens)"
        if message.get("tool_calls"):
            return "null message content, a tool call instead"
        return "null message content"
    if not isinstance(content, str):
        return f"message content of type {type(content).__name__}"
    return "empty message content"
