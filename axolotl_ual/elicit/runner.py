"""Run a judge over samples: concurrency, durable recording, progress, stopping cleanly.

An async judge (`openai`) runs `concurrency` workers on one event loop, each taking the next
sample as soon as its previous one is done, so up to `concurrency` requests are always in flight.
A batch judge (`hf`, `vllm`) gets samples a batch at a time, shortest first (less padding).
Every result goes to the cache the moment it exists, then to the progress bar.

The run ends early, keeping everything recorded so far, on Ctrl-C or SIGTERM (`interrupted`),
on a `BackendError` (`fatal`: bad key, unknown model...), or when many samples in a row have
failed after all their retries (`fatal`: the server is down or overloaded).

Nothing here depends on what the work is: an item needs a `.key`, a result `.ok`, `.error` and
`.transient`, the store an `add(key, result)` that writes durably; an `AsyncJudge` is anything
with `async judge(item)` and `aclose()`, e.g. a generator around `client.OpenAIChatClient`
(`axolotl_ual.generate` is one). The words of the progress bar and the messages (`Wording`) and how
a failed item is named (`failure_label`; by default elicit's "row N: not scored") are the
caller's.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .backends.base import AsyncJudge, BackendError, Judge
from .cache import ScoreCache
from .methods import Judgement
from .samples import Sample

SHOWN_FAILURES = 5


class TooManyFailures(BackendError):
    """Many samples in a row failed after every retry: stop instead of hammering a dead server."""


@dataclass(frozen=True)
class Wording:
    """What the progress bar and the messages call the work: elicit's words by default."""

    desc: str = "scoring"  # the progress bar's label
    unit: str = "row"  # what it counts
    noun: str = "samples"  # "the last 32 samples all failed after every retry"
    failed: str = "null"  # the bar's count of failed items


@dataclass
class RunOutcome:
    judgements: dict[str, Judgement] = field(default_factory=dict)
    interrupted: bool = False
    fatal: str | None = None
    elapsed: float = 0.0
    cpu: float = 0.0  # this process's CPU seconds during the run


class _Recorder:
    """Takes each finished sample: cache, progress bar, failure messages, failure streak."""

    def __init__(
        self,
        outcome: RunOutcome,
        cache: ScoreCache,
        bar,
        failure_label: Callable[[Any], str],
        streak_limit: int,
        wording: Wording,
    ):
        self.outcome = outcome
        self.cache = cache
        self.bar = bar
        self.failure_label = failure_label
        self.streak_limit = streak_limit
        self.wording = wording
        self.streak = 0
        self.failures = 0

    def __call__(self, sample: Sample, judgement: Judgement) -> None:
        self.outcome.judgements[sample.key] = judgement
        self.cache.add(sample.key, judgement)
        self.bar.update(1)
        if judgement.ok:
            self.streak = 0
            return
        self.failures += 1
        self.bar.set_postfix({self.wording.failed: self.failures}, refresh=False)
        if self.failures <= SHOWN_FAILURES:
            note = "" if self.failures < SHOWN_FAILURES else " (further failures: see the summary)"
            self.bar.write(
                f"{self.failure_label(sample)}: {judgement.error}{note}",
                file=sys.stderr,
            )
        self.streak = self.streak + 1 if judgement.transient else 0
        if self.streak >= self.streak_limit:
            raise TooManyFailures(
                f"the last {self.streak} {self.wording.noun} all failed after every retry (last: "
                f"{judgement.error}); is the server up? Stopping: re-run the same command to resume"
            )


def _progress_bar(total: int, enabled: bool, wording: Wording):
    from tqdm.auto import tqdm

    interactive = sys.stderr.isatty()
    return tqdm(
        total=total,
        unit=wording.unit,
        desc=wording.desc,
        file=sys.stderr,
        disable=not enabled,
        dynamic_ncols=True,
        mininterval=0.2 if interactive else 5.0,
        smoothing=0.05,
    )


def run_judge(
    judge: Judge,
    samples: Sequence[Sample],
    *,
    cache: ScoreCache,
    concurrency: int = 16,
    progress: bool = True,
    row_of: Mapping[str, int] | None = None,
    failure_label: Callable[[Any], str] | None = None,
    wording: Wording = Wording(),
) -> RunOutcome:
    """Judge every sample of `samples` (unique keys), recording each result in `cache`.

    A failed item is printed as `failure_label(item): <error>`; by default "row N: not scored",
    N from `row_of` (the item's key -> its row)."""
    outcome = RunOutcome()
    started, cpu_started = time.perf_counter(), time.process_time()
    is_async = isinstance(judge, AsyncJudge)
    bar = _progress_bar(len(samples), progress, wording)
    streak_limit = max(2 * concurrency, 10) if is_async else len(samples) + 1
    if failure_label is None:
        rows = row_of or {}

        def failure_label(sample) -> str:
            return f"row {rows.get(sample.key, '?')}: not scored"

    record = _Recorder(outcome, cache, bar, failure_label, streak_limit, wording)
    try:
        if is_async:
            asyncio.run(_run_async(judge, samples, concurrency, record))
        else:
            _run_batches(judge, samples, record)
    except (KeyboardInterrupt, asyncio.CancelledError):
        outcome.interrupted = True
    except BackendError as exc:  # TooManyFailures included
        outcome.fatal = str(exc)
    finally:
        bar.close()
        outcome.elapsed = time.perf_counter() - started
        outcome.cpu = time.process_time() - cpu_started
    return outcome


async def _run_async(
    judge: AsyncJudge, samples: Sequence[Sample], concurrency: int, record: _Recorder
) -> None:
    pending = iter(samples)  # shared by the workers: each `next` hands out a different sample
    main = asyncio.current_task()
    loop = asyncio.get_running_loop()
    try:  # SIGTERM stops the run like Ctrl-C (asyncio.run already handles SIGINT)
        loop.add_signal_handler(signal.SIGTERM, main.cancel)
    except (ValueError, RuntimeError, NotImplementedError):  # not the main thread, or Windows
        pass

    async def worker() -> None:
        me = asyncio.current_task()
        for sample in pending:
            record(sample, await judge.judge(sample))
            # Python 3.11's `asyncio.wait_for` can swallow a cancellation that arrives as its
            # request completes (fixed in 3.12): the worker would then go on through the
            # remaining samples after Ctrl-C. The request for cancellation is still counted.
            if me.cancelling():
                raise asyncio.CancelledError

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(min(concurrency, len(samples))):
                group.create_task(worker())
    except ExceptionGroup as group_error:
        # Surface the first real error (BackendError, TooManyFailures, or a bug) by itself.
        raise group_error.exceptions[0] from None
    finally:
        try:
            loop.remove_signal_handler(signal.SIGTERM)
        except (ValueError, RuntimeError, NotImplementedError):
            pass
        await judge.aclose()


def _run_batches(judge, samples: Sequence[Sample], record: _Recorder) -> None:
    previous = None
    try:  # SIGTERM stops the run like Ctrl-C
        previous = signal.signal(signal.SIGTERM, _interrupt)
    except ValueError:  # not the main thread
        pass
    try:
        ordered = sorted(samples, key=lambda s: sum(len(m.content) for m in s.messages))
        for start in range(0, len(ordered), judge.batch_size):
            batch = ordered[start : start + judge.batch_size]
            for sample, judgement in zip(batch, judge.judge_batch(batch), strict=True):
                record(sample, judgement)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        judge.close()


def _interrupt(signum, frame):
    raise KeyboardInterrupt
