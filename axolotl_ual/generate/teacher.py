"""Send `steps.Item`s to the teacher or the judge and read their replies.

Sending (whole-request timeout, retries with backoff, Retry-After, the stop policy, the
server's messages) is `elicit.client.OpenAIChatClient`'s, exactly as for `elicit`; this module
only asks and parses. A reply that is not in the form its step asked for is asked again, at a
temperature of at least 0.7 so the new reply can differ, up to `parse_retries` times; then the
request fails as unparsable (counted, skipped, asked again by the next run).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field

from ..elicit.backends.base import AsyncJudge, BackendOptions
from ..elicit.client import OpenAIChatClient, RequestFailed, choices_of, message_text, why_no_text
from .cache import Result
from .prompts import Unparsable
from .steps import JUDGE, TEACHER, Item, Settings

RETRY_TEMPERATURE = 0.7
PREVIEW = 80


@dataclass
class Totals:
    """Requests and retries over every pass of the run, for the summary."""

    requests: int = 0
    retries: Counter = field(default_factory=Counter)
    unparsable_replies: Counter = field(default_factory=Counter)  # by step
    described: bool = False  # the line saying where requests go was printed

    def describe(self) -> str:
        parts = [f"{self.requests} requests"]
        if self.retries:
            parts.append(
                "retried: " + ", ".join(f"{n} x {c}" for c, n in self.retries.most_common())
            )
        if self.unparsable_replies:
            total = sum(self.unparsable_replies.values())
            steps = ", ".join(f"{s} {n}" for s, n in sorted(self.unparsable_replies.items()))
            parts.append(f"{total} unparsable replies ({steps})")
        return "; ".join(parts)


def _preview(text: str | None) -> str:
    text = " ".join((text or "").split())
    return repr(text[:PREVIEW] + ("..." if len(text) > PREVIEW else ""))


class StepWorker(AsyncJudge):
    """One pass's requests, teacher's and judge's, on one event loop (see `elicit.runner`)."""

    method = None

    def __init__(
        self, options: BackendOptions, settings: Settings, parse_retries: int, totals: Totals
    ):
        self.settings = settings
        self.parse_retries = parse_retries
        self.totals = totals
        teacher = OpenAIChatClient(options)
        judge = (
            teacher
            if settings.judge.model == settings.teacher.model
            else OpenAIChatClient(dataclasses.replace(options, model=settings.judge.model))
        )
        self.clients = {TEACHER: teacher, JUDGE: judge}
        self.stats = teacher.stats

    def describe(self) -> str:
        teacher, judge = self.clients[TEACHER], self.clients[JUDGE]
        if judge is teacher:
            return f"teacher and judge: {teacher.describe()}"
        return f"teacher: {teacher.describe()}; judge: model {self.settings.judge.model!r}"

    async def aclose(self) -> None:
        for client in {id(c): c for c in self.clients.values()}.values():
            self.totals.requests += client.stats.requests
            self.totals.retries.update(client.stats.retries)
            await client.aclose()

    async def judge(self, item: Item) -> Result:
        sampling = self.settings.judge if item.role == JUDGE else self.settings.teacher
        client = self.clients[item.role]
        problem, text = "", None
        for attempt in range(self.parse_retries + 1):
            temperature = sampling.temperature
            if attempt:
                temperature = max(temperature, RETRY_TEMPERATURE)
            try:
                reply = await client.complete(
                    item.messages, temperature=temperature, max_tokens=sampling.max_tokens
                )
                choice = choices_of(reply)[0]
            except RequestFailed as exc:
                return Result(
                    error=str(exc), transient=exc.transient, leaf=item.leaf.path, step=item.step
                )
            # the parsed reply goes into the rows and the cache: never with the key in it
            text = client.without_key(message_text(choice))
            if text is None:
                problem = why_no_text(choice)
            else:
                try:
                    return Result(item.parse(text), leaf=item.leaf.path, step=item.step)
                except Unparsable as exc:
                    problem = str(exc)
                    if choice.get("finish_reason") == "length":
                        problem += " (the reply was cut at the token limit: raise --max-tokens)"
            self.totals.unparsable_replies[item.step] += 1
        replies = self.parse_retries + 1
        return Result(
            error=f"unparsable: {problem}; {replies} repl{'y' if replies == 1 else 'ies'}, the "
            f"last {_preview(text)}",
            unparsable=True,
            leaf=item.leaf.path,
            step=item.step,
        )
