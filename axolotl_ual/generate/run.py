"""The `generate` command end to end: read the taxonomy, run the leaves' steps pass by pass
through the teacher and the judge, write the chat rows, report.

Pass k sends the k-th step of every leaf at once (`--concurrency` requests in flight, through
`elicit.runner`), each answered request recorded in the cache the moment it arrives; a re-run
finds every answered request there and sends only the rest. The rows are written once every
pass is done: on Ctrl-C, SIGTERM or a stopped run nothing is written (the cache keeps what was
answered). Returns an `axolotl_ual.errors.ExitCode`.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

from ..elicit import io
from ..elicit.cache import default_cache_path
from ..elicit.output_paths import DATASET, Output, check_outputs
from ..elicit.pipeline import backend_options
from ..elicit.runner import RunOutcome, Wording, run_judge
from ..errors import BackendError, DataError, ExitCode, UsageError
from .cache import GenerationCache, Result, cache_output
from .steps import SCORE_COLUMNS, LeafRun, Sampling, Settings
from .taxonomy import BRANCHES, read_taxonomy
from .teacher import StepWorker, Totals

# Columns every written row has (an existing output is recognized by them).
ROW_COLUMNS = ("messages", "leaf", "branch")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def branch_path(output: str | Path, branch: str) -> Path:
    """`generated.jsonl` -> `generated.knowledge.jsonl` (a folder: `generated.knowledge`)."""
    output = Path(str(output).rstrip("/"))
    if output.suffix and io.file_kind(output, for_output=True) != io.FOLDER:
        return output.with_name(f"{output.stem}.{branch}{output.suffix}")
    return output.with_name(f"{output.name}.{branch}")


def _outputs(args) -> tuple[list[Output], Path]:
    if not args.output:
        raise UsageError("give --output (the generated dataset: .jsonl, .json, .parquet, .csv)")
    cache = Path(args.cache) if args.cache else default_cache_path(args.output)
    outputs = [Output("--output", Path(args.output), DATASET, columns=ROW_COLUMNS)]
    if args.split_by_branch:
        outputs += [
            Output(
                f"--split-by-branch ({branch})",
                branch_path(args.output, branch),
                DATASET,
                columns=ROW_COLUMNS,
            )
            for branch in BRANCHES
        ]
    outputs.append(cache_output("--cache" if args.cache else "the cache", cache))
    return outputs, cache


def settings_of(args) -> Settings:
    if not args.model and not args.dry_run:
        raise UsageError("give --model: the teacher's model name on the server")
    teacher = Sampling(args.model or "", args.temperature, args.max_tokens)
    judge = Sampling(
        args.judge_model or args.model or "", args.judge_temperature, args.judge_max_tokens
    )
    return Settings(
        teacher=teacher,
        judge=judge,
        num_samples=args.num_samples,
        per_request=args.per_request,
        chunk_words=args.chunk_words,
        min_answer_rating=args.min_answer_rating,
        system_prompt=args.system_prompt,
    )


def run_generate(args) -> int:
    try:
        outputs, cache_path = ([], None) if args.dry_run and not args.output else _outputs(args)
        check_outputs([args.taxonomy, args.documents], outputs)
        settings = settings_of(args)
        leaves = read_taxonomy(args.taxonomy, include=args.leaf, documents=args.documents)
    except (UsageError, DataError) as exc:
        log(f"error: {exc}")
        return ExitCode.USAGE
    runs = [LeafRun(leaf, settings) for leaf in leaves]
    _describe_taxonomy(args, runs)
    if args.dry_run:
        return ExitCode.OK

    totals = Totals()
    with GenerationCache(cache_path) as cache:
        log(f"cache {cache_path}: {cache.loaded} answered requests recorded")
        outcome, reused = _run_passes(args, settings, runs, cache, totals)
        if not (outcome.interrupted or outcome.fatal) and cache.loaded > reused:
            log(
                f"note: {cache.loaded - reused} recorded requests were not asked this time "
                "(made for other leaves, prompts, models or settings); they stay in the cache"
            )

    if outcome.interrupted:
        _summary(args, runs, totals, written=None)
        log(
            "interrupted: nothing written; the answered requests are in the cache: re-run the "
            "same command to resume"
        )
        return ExitCode.INTERRUPTED
    if outcome.fatal:
        _summary(args, runs, totals, written=None)
        log(
            f"stopped: {outcome.fatal}\nnothing written; once that is fixed, the same command "
            "resumes from the cache"
        )
        return ExitCode.STOPPED
    written = _write(args, runs)
    _summary(args, runs, totals, written)
    failed = sum(count.failed for run in runs for count in run.counts.values())
    if failed:
        log(
            f"{failed} request(s) failed (see above): their samples are missing; re-run the "
            "same command to ask for just those"
        )
        return ExitCode.INCOMPLETE
    return ExitCode.OK


def _run_passes(args, settings, runs, cache, totals) -> tuple[RunOutcome, int]:
    """Pass k: the k-th step of every leaf, what the cache lacks sent at once. Returns the last
    pass's outcome and how many requests the cache answered."""
    passes = max(len(run.steps) for run in runs)
    outcome, reused = RunOutcome(), 0
    for index in range(passes):
        items = {run.leaf.path: run.items(index) for run in runs}
        flat = [item for group in items.values() for item in group]
        results: dict[str, Result] = {}
        for item in flat:
            if (cached := cache.get(item.key)) is not None:
                results[item.key] = cached
        reused += len(results)
        for run in runs:
            if index < len(run.steps):
                count = run.counts[run.steps[index]]
                count.cached = sum(item.key in results for item in items[run.leaf.path])
        pending = list({item.key: item for item in flat if item.key not in results}.values())
        steps = sorted({item.step for item in flat}, key=_step_order)
        log(
            f"pass {index + 1}/{passes} ({', '.join(steps) or 'nothing left'}): "
            f"{len(flat)} requests, {len(flat) - len(pending)} already answered, "
            f"{len(pending)} to send"
        )
        if pending:
            outcome = _send(args, settings, pending, cache, totals, index, passes)
            results.update(outcome.judgements)
            if outcome.interrupted or outcome.fatal:
                break
        for run in runs:
            run.apply(index, items[run.leaf.path], results)
    return outcome, reused


def _send(args, settings, pending, cache, totals, index, passes) -> RunOutcome:
    try:
        worker = StepWorker(backend_options(args), settings, args.parse_retries, totals)
    except BackendError as exc:
        return RunOutcome(fatal=str(exc))
    if not totals.described:
        log(worker.describe())
        totals.described = True
    return run_judge(
        worker,
        pending,
        cache=cache,
        concurrency=args.concurrency,
        progress=not args.no_progress,
        failure_label=lambda item: f"{item.label}: failed",
        wording=Wording(
            desc=f"pass {index + 1}/{passes}", unit="request", noun="requests", failed="failed"
        ),
    )


STEP_ORDER = (
    "contexts",
    "questions",
    "knowledge_qa",
    "question_filter",
    "faithfulness",
    "answer",
    "relevancy",
    "answer_rating",
)


def _step_order(step: str) -> int:
    return STEP_ORDER.index(step) if step in STEP_ORDER else len(STEP_ORDER)


def _write(args, runs: list[LeafRun]) -> list[str]:
    rows = [row for run in runs for row in run.rows()]
    io.write_rows(rows, args.output)
    written = [f"{args.output} ({len(rows)} rows)"]
    if args.split_by_branch:
        present = {run.leaf.branch for run in runs}
        for branch in BRANCHES:
            if branch not in present:
                continue
            path = branch_path(args.output, branch)
            part = [row for row in rows if row["branch"] == branch]
            io.write_rows(part, path)
            written.append(f"{path} ({len(part)} rows)")
            if not part:
                log(f"warning: no {branch} row survived the filters; {path} is empty")
    return written


def _describe_taxonomy(args, runs: list[LeafRun]) -> None:
    branches = Counter(run.leaf.branch for run in runs)
    shown = ", ".join(f"{branches[b]} {b}" for b in BRANCHES if branches[b])
    lines = [f"generate: {len(runs)} leaves from {args.taxonomy} ({shown})"]
    for run in runs:
        leaf = run.leaf
        if leaf.documents:
            what = (
                f"{len(leaf.knowledge_seeds)} seed contexts, {len(leaf.documents)} document(s) "
                f"in {len(run.chunks)} chunk(s) of <= {args.chunk_words} words"
            )
        else:
            what = f"{len(leaf.seeds)} seed examples"
        lines.append(
            f"  {leaf.path}: {leaf.kind} (v{leaf.version}), {what}; steps {' -> '.join(run.steps)}"
        )
    log("\n".join(lines))


def _summary(args, runs: list[LeafRun], totals: Totals, written: list[str] | None) -> None:
    lines = ["", "generate summary"]
    lines.append(f"  server    {totals.describe()}")
    lines.append("  per leaf and step: requests (from the cache, failed); what came of them")
    for run in runs:
        rows = f": {len(run.drafts)} rows" if written is not None else ""
        lines.append(f"  {run.leaf.path} ({run.leaf.kind}){rows}")
        for step in run.steps:
            count = run.counts[step]
            if not count.requests:
                continue
            failed = f", {count.failed} failed" if count.failed else ""
            unparsable = f" ({count.unparsable} unparsable)" if count.unparsable else ""
            detail = (
                f"drew {count.produced}, {count.duplicates} duplicates, kept {count.kept}"
                if count.produced or step in ("contexts", "questions", "knowledge_qa")
                else f"kept {count.kept}, rejected {count.dropped}"
                if step in SCORE_COLUMNS
                else f"{count.kept} answered"
            )
            lines.append(
                f"    {step:<16} {count.requests} requests ({count.cached} cached{failed}"
                f"{unparsable}); {detail}"
            )
    if written is not None:
        lines.append("  written   " + "; ".join(written))
    print("\n".join(lines), flush=True)
