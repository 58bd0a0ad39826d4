"""A loopback OpenAI-compatible chat-completions server, for tests, benchmarks and dry runs.

It binds 127.0.0.1 only, answers `POST /v1/chat/completions` (with `n`, `logprobs` and
`top_logprobs`) and `GET /v1/models`, and lets a *policy* decide each reply: a score, an HTTP
error with headers (429 + Retry-After) and a body of any shape (OpenAI's `{"error": ...}`,
FastAPI's `{"detail": ...}`, plain text), a delay (to cause client timeouts), a body trickled
a byte at a time, an unparsable text. By default it scores like a judge for `elicit` and
answers `generate`'s prompts like a teacher (see `default_policy`). `shape` writes the
completion the way a given server does (see `SHAPES`); `prefixes` says under which paths it
answers (`("/v1",)`: like vLLM, a URL without `/v1` gets FastAPI's 404). It serves at most
`max_requests` requests and stops by itself after `lifetime` seconds.

    with FakeOpenAIServer(latency=0.5) as server:
        ...  # point `--base-url server.base_url` at it; server.requests records every request

    python -m axolotl_ual.elicit.fake_server --latency 0.5   # prints its base URL, then serves
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ..errors import ExitCode

HOST = "127.0.0.1"


@dataclass
class Token:
    """A generated token with its logprob and the top alternatives at its position."""

    text: str
    logprob: float
    alternatives: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class Reply:
    """What the server answers to one request."""

    contents: list[str | None] = field(default_factory=list)  # one per choice
    tokens: list[Token] | None = None  # logprobs of the first choice
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    error: str = "error injected by the test server"  # as {"error": {"message": error}}
    body: str | dict | list | None = None  # sent as is instead (a str as text/plain)
    delay: float = 0.0
    trickle: float = 0.0  # seconds between the bytes of the body (0: all at once)


@dataclass
class Request:
    index: int
    time: float
    body: dict[str, Any]
    authorization: str | None

    @property
    def prompt(self) -> str:
        """The last user message's text."""
        users = [m for m in self.body.get("messages", []) if m.get("role") == "user"]
        return str(users[-1].get("content", "")) if users else ""

    @property
    def n(self) -> int:
        return int(self.body.get("n") or 1)

    @property
    def wants_logprobs(self) -> bool:
        return bool(self.body.get("logprobs"))


Policy = Callable[[Request], Reply]


def hashed_score(text: str, low: int, high: int) -> int:
    digest = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")
    return low + digest % (high - low + 1)


def default_policy(request: Request) -> Reply:
    """A score from a hash of the prompt: 1-10 as text, or a 0-9 digit distribution; the
    requests of `axolotl-ual generate` get the fake teacher's answers instead (contexts,
    questions, answers, judge verdicts: `axolotl_ual.generate.fake_teacher`)."""
    from ..generate.fake_teacher import FakeTeacher

    if (generated := FakeTeacher()(request)) is not None:
        return generated
    if request.wants_logprobs:
        digit = hashed_score(request.prompt, 0, 9)
        alternatives = [
            (str(digit), math.log(0.7)),
            (str((digit + 1) % 10), math.log(0.2)),
            ("The", math.log(0.1)),
        ]
        return Reply([str(digit)], tokens=[Token(str(digit), math.log(0.7), alternatives)])
    return Reply([str(hashed_score(request.prompt, 1, 10))] * request.n)


def completion_body(request: Request, reply: Reply) -> dict[str, Any]:
    choices = []
    for index, content in enumerate(reply.contents or [None]):
        logprobs = None
        if request.wants_logprobs and index == 0 and reply.tokens is not None:
            top = int(request.body.get("top_logprobs") or 0)
            logprobs = {
                "content": [
                    {
                        "token": t.text,
                        "logprob": t.logprob,
                        "bytes": list(t.text.encode()),
                        "top_logprobs": [
                            {"token": a, "logprob": lp, "bytes": list(a.encode())}
                            for a, lp in t.alternatives[:top]
                        ],
                    }
                    for t in reply.tokens
                ]
            }
        choices.append(
            {
                "index": index,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
                "logprobs": logprobs,
            }
        )
    return {
        "id": f"chatcmpl-{request.index}",
        "object": "chat.completion",
        "created": int(request.time),
        "model": request.body.get("model", "fake"),
        "choices": choices,
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def _first_choice_logprobs(request: Request, reply: Reply, entry, top: int) -> dict | None:
    """`logprobs.content` of the first choice, each token and its alternatives as `entry`."""
    if not (request.wants_logprobs and reply.tokens is not None):
        return None
    return {
        "content": [
            {**entry(t.text, t.logprob), "top_logprobs": [entry(a, lp) for a, lp in steps[:top]]}
            for t, steps in ((t, _sampled_first(t)) for t in reply.tokens)
        ]
    }


def _sampled_first(token: Token) -> list[tuple[str, float]]:
    others = [(text, lp) for text, lp in token.alternatives if text != token.text]
    return [(token.text, token.logprob), *others]


def vllm_completion_body(request: Request, reply: Reply) -> dict[str, Any]:
    """What vLLM's OpenAI server answers (`vllm/entrypoints/openai/chat_completion/protocol.py`
    and `serving.py`, `_create_chat_logprobs` / `_get_top_logprobs`): every `ChatMessage` field
    present (null when unset; `reasoning` for reasoning models), `stop_reason`, and per token a
    `ChatCompletionLogProbsContent`: `logprob` clamped to -9999.0 (JSON has no -inf), `bytes` the
    UTF-8 bytes, `top_logprobs` from the step's logprob dict, whose first entry is the sampled
    token, cut to `top_logprobs` entries."""
    top = int(request.body.get("top_logprobs") or 0)

    def entry(text: str, logprob: float) -> dict[str, Any]:
        return {
            "token": text,
            "logprob": max(logprob, -9999.0),
            "bytes": list(text.encode("utf-8", errors="replace")),
        }

    choices = [
        {
            "index": index,
            "message": {
                "role": "assistant",
                "content": content,
                "refusal": None,
                "annotations": None,
                "audio": None,
                "function_call": None,
                "tool_calls": [],
                "reasoning": None,
            },
            "logprobs": _first_choice_logprobs(request, reply, entry, top) if index == 0 else None,
            "finish_reason": "stop",
            "stop_reason": None,
            "token_ids": None,
        }
        for index, content in enumerate(reply.contents or [None])
    ]
    return {
        "id": f"chatcmpl-{request.index:032x}",
        "object": "chat.completion",
        "created": int(request.time),
        "model": request.body.get("model", "fake"),
        "choices": choices,
        "service_tier": None,
        "system_fingerprint": None,
        "usage": {
            "prompt_tokens": 1,
            "total_tokens": 2,
            "completion_tokens": 1,
            "prompt_tokens_details": None,
        },
        "prompt_logprobs": None,
        "prompt_token_ids": None,
        "kv_transfer_params": None,
    }


LLAMACPP_LOWEST = -3.4028234663852886e38  # std::numeric_limits<float>::lowest()


def llamacpp_completion_body(request: Request, reply: Reply) -> dict[str, Any]:
    """What llama.cpp's server answers (`tools/server/server-task.cpp`,
    `to_json_oaicompat_chat` and `probs_vector_to_json`): one choice; `logprobs` only when probs
    were asked for (the key is absent otherwise, not null); per token `id`, `token`, `bytes`,
    `logprob` (a zero probability as the lowest float: its JSON has no -inf) and `top_logprobs`
    of the same entries (`n_probs` = `top_logprobs`, 20 by default); `timings`."""
    top = int(request.body.get("top_logprobs") or 20)

    def entry(text: str, logprob: float) -> dict[str, Any]:
        return {
            "id": int.from_bytes(hashlib.sha256(text.encode()).digest()[:2], "big"),
            "token": text,
            "bytes": list(text.encode()),
            "logprob": logprob if math.isfinite(logprob) else LLAMACPP_LOWEST,
        }

    choice: dict[str, Any] = {
        "finish_reason": "stop",
        "index": 0,
        "message": {"role": "assistant", "content": (reply.contents or [""])[0] or ""},
    }
    if (logprobs := _first_choice_logprobs(request, reply, entry, top)) is not None:
        choice["logprobs"] = logprobs
    return {
        "choices": [choice],
        "created": int(request.time),
        "model": request.body.get("model", "gpt-3.5-turbo"),
        "system_fingerprint": "b6500-0123abcd",
        "object": "chat.completion",
        "usage": {"completion_tokens": 1, "prompt_tokens": 1, "total_tokens": 2},
        "id": f"chatcmpl-{request.index:032x}",
        "timings": {"prompt_n": 1, "prompt_ms": 1.0, "predicted_n": 1, "predicted_ms": 1.0},
    }


def llamacpp_rejects(request: Request) -> tuple[int, dict[str, Any]] | None:
    """llama.cpp's `oaicompat_chat_params_parse` (up to late 2025) throws on `n` != 1, and the
    server answers a thrown error with HTTP 500."""
    if request.n != 1:
        return 500, {
            "error": {
                "code": 500,
                "message": "Only one completion choice is allowed",
                "type": "server_error",
            }
        }
    return None


def transformers_serve_body(request: Request, reply: Reply) -> dict[str, Any]:
    """What `transformers serve` (5.16, observed) answers: one choice whatever `n` asks, no
    `logprobs` key whatever `logprobs` asks, the model name with `@main`."""
    return {
        "id": f"{request.index:08x}-0000-4000-8000-000000000000",
        "choices": [
            {
                "finish_reason": "stop",
                "index": 0,
                "message": {"content": (reply.contents or [""])[0], "role": "assistant"},
            }
        ],
        "created": int(request.time),
        "model": f"{request.body.get('model', 'fake')}@main",
        "object": "chat.completion",
        "usage": {"completion_tokens": 1, "prompt_tokens": 1, "total_tokens": 2},
    }


@dataclass(frozen=True)
class Shape:
    """How one server implementation writes its replies, and the requests it refuses."""

    body: Callable[[Request, Reply], dict[str, Any]]
    rejects: Callable[[Request], tuple[int, Any] | None] = lambda request: None


SHAPES = {
    "openai": Shape(completion_body),
    "vllm": Shape(vllm_completion_body),
    "llamacpp": Shape(llamacpp_completion_body, llamacpp_rejects),
    "transformers-serve": Shape(transformers_serve_body),
}


class FakeOpenAIServer:
    def __init__(
        self,
        policy: Policy | None = None,
        *,
        latency: float = 0.0,
        port: int = 0,
        max_requests: int = 100_000,
        lifetime: float = 600.0,
        shape: str = "openai",
        prefixes: tuple[str, ...] = ("/v1", ""),
    ):
        self.policy = policy or default_policy
        self.shape = SHAPES[shape]
        self.routes = {prefix + "/chat/completions" for prefix in prefixes}
        self.latency = latency
        self.max_requests = max_requests
        self.lifetime = lifetime
        self.requests: list[Request] = []
        self.in_flight = 0
        self.peak_in_flight = 0  # most requests being answered at the same time
        self._lock = threading.Lock()
        self._httpd = _Server((HOST, port), _Handler)
        self._httpd.owner = self
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None
        self._stopped = threading.Event()

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"

    def start(self) -> FakeOpenAIServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-openai-server",
            daemon=True,
        )
        self._thread.start()
        self._timer = threading.Timer(self.lifetime, self.stop)  # never serve past `lifetime`
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._timer is not None:
            self._timer.cancel()
        self._httpd.shutdown()
        self._httpd.server_close()

    def wait(self) -> None:
        """Block until stopped (by `stop` or the lifetime)."""
        self._stopped.wait()

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def prompts(self) -> list[str]:
        with self._lock:
            return [request.prompt for request in self.requests]

    def _enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _record(self, body: dict[str, Any], authorization: str | None) -> Request | None:
        with self._lock:
            if len(self.requests) >= self.max_requests:
                return None
            request = Request(len(self.requests), time.time(), body, authorization)
            self.requests.append(request)
            return request


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # many clients connect at once: do not drop their SYNs
    owner: FakeOpenAIServer

    def handle_error(self, request, client_address):  # a client that went away: not an error
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers do
    server: _Server

    def setup(self):
        super().setup()
        # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm
        # holds the body back until the client's delayed ACK, adding ~40 ms to every reply.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format, *args):  # quiet
        pass

    def _send(
        self,
        status: int,
        payload: Any,
        headers: dict[str, str] | None = None,
        trickle: float = 0.0,
    ) -> None:
        text = isinstance(payload, str)
        data = payload.encode() if text else json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain" if text else "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            if not trickle:
                self.wfile.write(data)
                return
            for index in range(len(data)):  # a byte at a time: every gap shorter than a timeout
                if self.server.owner._stopped.is_set():
                    break
                self.wfile.write(data[index : index + 1])
                self.wfile.flush()
                time.sleep(trickle)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
            self.close_connection = True

    def do_GET(self):
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            self._send(
                200,
                {"object": "list", "data": [{"id": "fake", "object": "model", "owned_by": "test"}]},
            )
        else:
            self._send(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self):
        owner = self.server.owner
        body_bytes = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.rstrip("/") not in owner.routes:
            self._send(404, {"detail": "Not Found"})  # what FastAPI (vLLM, SGLang...) answers
            return
        try:
            body = json.loads(body_bytes)
        except json.JSONDecodeError:
            self._send(400, {"error": {"message": "body is not JSON"}})
            return
        request = owner._record(body, self.headers.get("Authorization"))
        if request is None:
            self._send(503, {"error": {"message": "test server request limit reached"}})
            return
        reply = owner.policy(request)
        wait = owner.latency + reply.delay
        owner._enter()
        try:
            if wait > 0:
                time.sleep(min(wait, owner.lifetime))
        finally:
            owner._leave()
        status = reply.status
        if reply.body is not None:
            payload = reply.body
        elif status != 200:
            payload = {"error": {"message": reply.error, "type": "test"}}
        elif rejected := owner.shape.rejects(request):
            status, payload = rejected
        else:
            payload = owner.shape.body(request, reply)
        self._send(status, payload, reply.headers, reply.trickle)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Loopback OpenAI-compatible judge and teacher for trying `elicit` and "
        "`generate`."
    )
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument(
        "--port", type=int, default=0, help="port on 127.0.0.1 (default: any free one)"
    )
    parser.add_argument(
        "--lifetime", type=float, default=600.0, help="stop after this many seconds"
    )
    parser.add_argument("--max-requests", type=int, default=1_000_000)
    parser.add_argument(
        "--shape", choices=tuple(SHAPES), default="openai", help="answer like this server"
    )
    args = parser.parse_args(argv)
    server = FakeOpenAIServer(
        latency=args.latency,
        port=args.port,
        lifetime=args.lifetime,
        max_requests=args.max_requests,
        shape=args.shape,
    ).start()
    print(server.base_url, flush=True)
    try:
        server.wait()
    except KeyboardInterrupt:
        server.stop()
    print(f"served {len(server.requests)} requests", file=sys.stderr)
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
