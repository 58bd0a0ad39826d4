"""The `elicit` command end to end: read, shard, reuse the cache, judge the rest, write, report.

Returns an `axolotl_ual.errors.ExitCode` (meanings: `cli.EXIT_STATUS`).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import rows as rowlib
from ..errors import ExitCode, UsageError
from . import io, report
from .backends import LOCAL_BACKENDS, BackendError, BackendOptions, make_judge
from .cache import ScoreCache, config_id, default_cache_path
from .io import DataError
from .methods import ENTROPY, LOGPROB, VERBALIZED, Entropy, Judgement, Logprob, Verbalized
from .output_paths import CACHE, SIDECAR, Output, check_outputs, dataset_output
from .runner import RunOutcome, run_judge
from .samples import Sample, keys_digest, prepare_samples, resolve_format, sidecar_rows
from .shards import Manifest, Shard

DEFAULT_SAMPLED_TEMPERATURE = 0.7


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def score_field(field: str) -> str:
    """The raw judge score's column, named after the uncertainty column."""
    return f"{field}_score"


def digit_mass_field(field: str) -> str:
    """`--method logprob`: the column of the probability the judge put on the digit tokens."""
    return f"{field}_digit_mass"


# A run whose mean digit mass is below this gets a warning: a judge that follows the prompt puts
# nearly all of its probability on the digits (see docs/elicit.md).
LOW_DIGIT_MASS = 0.75


# OpenAI's limit on top_logprobs, and vLLM's default --max-logprobs.
MAX_API_TOP_LOGPROBS = 20


def build_method(args) -> Verbalized | Logprob | Entropy:
    if args.samples < 1:
        raise UsageError(f"--samples must be at least 1, got {args.samples}")
    if args.backend == "openai" and not 1 <= args.top_logprobs <= MAX_API_TOP_LOGPROBS:
        raise UsageError(
            f"--top-logprobs {args.top_logprobs}: OpenAI-compatible servers accept 1 to "
            f"{MAX_API_TOP_LOGPROBS} (OpenAI's limit, vLLM's default --max-logprobs)"
        )
    if args.method != VERBALIZED and args.samples != 1:
        raise UsageError(
            f"--samples applies to --method verbalized only (the {args.method} method "
            "reads a distribution, not samples)"
        )
    if args.method == ENTROPY:
        if args.backend not in LOCAL_BACKENDS:
            raise UsageError(
                "--method entropy measures a local model's predictive distribution: "
                "use --backend hf or --backend vllm with --model a local model"
            )
        return Entropy(max_length=args.max_length, top_logprobs=args.top_logprobs)
    if args.method == LOGPROB:
        return Logprob(
            top_logprobs=args.top_logprobs,
            min_digit_mass=args.min_digit_mass,
            parse_retries=args.parse_retries,
            max_chars=args.max_chars,
        )
    temperature = args.temperature
    if temperature is None:
        temperature = DEFAULT_SAMPLED_TEMPERATURE if args.samples > 1 else 0.0
    if args.samples > 1 and temperature <= 0:
        raise UsageError(
            f"--samples {args.samples} needs --temperature > 0: at temperature 0 "
            "every sample is the same reply"
        )
    return Verbalized(
        samples=args.samples,
        temperature=temperature,
        max_tokens=args.max_tokens,
        parse_retries=args.parse_retries,
        max_chars=args.max_chars,
    )


def _check_paths(args) -> Path:
    """Validate the output paths before anything is read or sent; return the cache path."""
    if not args.output and not args.sidecar:
        raise UsageError(
            "give --output (the scored dataset) and/or --sidecar (sample_key -> "
            "uncertainty annotations)"
        )
    if args.sidecar and io.file_kind(args.sidecar, for_output=True) != io.JSONL:
        raise UsageError(f"--sidecar {args.sidecar}: the sidecar is a .jsonl file")
    if args.shard and not args.output:
        raise UsageError("--shard needs --output: `merge` puts the shard outputs back together")
    cache = Path(args.cache) if args.cache else default_cache_path(args.output or args.sidecar)
    outputs = []
    if args.output:
        outputs.append(dataset_output("--output", args.output, args.field))
        if args.shard:
            outputs.append(Manifest.output(args.output))
    if args.sidecar:
        outputs.append(Output("--sidecar", Path(args.sidecar), SIDECAR))
    outputs.append(Output("--cache" if args.cache else "the cache", cache, CACHE))
    check_outputs([args.input], outputs)
    return cache


def backend_options(args) -> BackendOptions:
    """The backend's options from a command's arguments (`cli.add_server_arguments`, plus the
    local backends' where the command has them: `generate` has none)."""
    return BackendOptions(
        model=args.model,
        base_url=args.base_url,
        api_key_env=args.api_key_env,
        concurrency=args.concurrency,
        timeout=args.timeout,
        max_retries=args.max_retries,
        backoff_base=args.backoff_base,
        backoff_max=args.backoff_max,
        batch_size=getattr(args, "batch_size", None),
        device=getattr(args, "device", "auto"),
        dtype=getattr(args, "dtype", "auto"),
    )


def scored_rows(
    rows: Sequence[dict[str, Any]],
    samples: Sequence[Sample],
    judgements: dict[str, Judgement],
    field: str,
    digit_mass: bool = False,
) -> list[dict[str, Any]]:
    """Every row, in order, with every column, plus the uncertainty and raw score (or None),
    and with `digit_mass` the probability on the digit tokens (also for rows it nulled)."""
    out = []
    for row, sample in zip(rows, samples, strict=True):
        judgement = judgements.get(sample.key)
        ok = judgement is not None and judgement.ok
        scored = {
            **row,
            field: judgement.uncertainty if ok else None,
            score_field(field): judgement.score if ok else None,
        }
        if digit_mass:
            scored[digit_mass_field(field)] = judgement and judgement.detail.get("digit_mass")
        out.append(scored)
    return out


def run_elicit(args) -> int:
    try:
        cache_path = _check_paths(args)
        method = build_method(args)
        shard = Shard.parse(args.shard) if args.shard else None
        rows = io.read_rows(args.input, split=args.split)
        fmt = resolve_format(rows, args.format, args.field_messages)
        fields = rowlib.content_fields(fmt, args.field_messages)
        for column in (args.field, score_field(args.field), digit_mass_field(args.field)):
            if column in fields:
                raise UsageError(
                    f"--field {args.field}: the column {column!r} is the sample's content"
                )
        samples = prepare_samples(rows, fmt, args.field_messages)
    except (UsageError, DataError) as exc:
        log(f"error: {exc}")
        return ExitCode.USAGE

    dataset_digest, total_rows = keys_digest(samples), len(rows)
    start, stop = shard.bounds(total_rows) if shard else (0, total_rows)
    rows, samples = rows[start:stop], samples[start:stop]
    unique: dict[str, Sample] = {}
    row_of: dict[str, int] = {}
    for offset, sample in enumerate(samples):
        if sample.key not in unique:
            unique[sample.key] = sample
            row_of[sample.key] = start + offset
    if rows and args.field in rows[0]:
        log(
            f"note: the input already has a {args.field!r} column; the output replaces it "
            "(the input file is not modified)"
        )

    config = config_id(args.model, {"backend": args.backend, **method.identity()})
    with ScoreCache(cache_path, config=config, method=method.name, model=args.model) as cache:
        judgements: dict[str, Judgement] = {
            key: cache.get(key)
            for key in unique
            if key in cache and method.reusable(cache.get(key))
        }
        pending = [sample for key, sample in unique.items() if key not in judgements]
        where = f" rows {start}-{stop - 1} (shard {shard})" if shard else ""
        log(
            f"elicit: {len(rows)} rows{where} ({len(unique)} unique samples, {fmt}) from {args.input}; "
            f"{len(judgements)} already in {cache_path}, {len(pending)} to score"
        )
        if cache.other_config_records:
            log(
                f"note: {cache.other_config_records} cached records were made with another "
                "backend/model/method/prompt setting and are not used"
            )
        outcome = RunOutcome()
        stats = None
        if pending:
            try:
                judge = make_judge(args.backend, method, backend_options(args))
            except (BackendError, UsageError) as exc:
                log(f"error: {exc}")
                return ExitCode.USAGE
            stats = judge.stats
            log(_describe_run(method, judge))
            outcome = run_judge(
                judge,
                pending,
                cache=cache,
                concurrency=args.concurrency,
                progress=not args.no_progress,
                row_of=row_of,
            )
            judgements.update(outcome.judgements)

    output_rows = scored_rows(
        rows, samples, judgements, args.field, digit_mass=isinstance(method, Logprob)
    )
    values = [row[args.field] for row in output_rows]
    if args.output:
        io.write_rows(output_rows, args.output)
        if shard:
            Manifest(
                shard=shard.index,
                num_shards=shard.count,
                start=start,
                stop=stop,
                total_rows=total_rows,
                dataset_keys_sha256=dataset_digest,
                shard_keys_sha256=keys_digest(samples),
                format=fmt,
                field_messages=args.field_messages,
                field=args.field,
            ).write(args.output)
    if args.sidecar:
        io.write_rows(sidecar_rows(samples, values), args.sidecar)
    from_cache = len(unique) - len(pending)
    _print_summary(
        args, method, values, len(unique), from_cache, judgements, outcome, stats, cache_path
    )
    if outcome.interrupted:
        log("interrupted: everything scored so far is written; re-run the same command to resume")
        return ExitCode.INTERRUPTED
    if outcome.fatal:
        log(f"stopped: {outcome.fatal}")
        return ExitCode.STOPPED
    return ExitCode.INCOMPLETE if any(value is None for value in values) else ExitCode.OK


def _describe_run(method, judge) -> str:
    what = method.name + (
        f" x{method.samples} (temperature {method.temperature})"
        if isinstance(method, Verbalized) and method.samples > 1
        else ""
    )
    return f"judge: {what}, {judge.describe()}"


def _digit_mass_report(method, judgements: dict[str, Judgement]) -> tuple[list[str], list[str]]:
    """`--method logprob`: (summary lines on the digit mass, warnings)."""
    masses = [j.detail["digit_mass"] for j in judgements.values() if "digit_mass" in j.detail]
    if not isinstance(method, Logprob) or not masses:
        return [], []
    mean, low = math.fsum(masses) / len(masses), min(masses)
    below = sum(mass < method.min_digit_mass for mass in masses)
    lines = [
        f"  digits    mean {mean:.1%}, min {low:.1%} of the judge's probability on the digit "
        f"tokens ({len(masses)} samples; {below} below --min-digit-mass "
        f"{method.min_digit_mass:g}, null)"
    ]
    warnings = []
    if mean < LOW_DIGIT_MASS:
        warnings.append(
            f"warning: the judge put on average only {mean:.1%} of its probability on the digit "
            f"tokens (min {low:.1%}): much of the time it is not answering with a digit, so its "
            "scores say little. Use an instruction-tuned judge that follows the prompt, or "
            "--method verbalized."
        )
    return lines, warnings


# Fewer samples than this with identical replies can be a judge that is simply sure of them.
MIN_SAMPLES_FOR_REPETITION = 20


def _repetition_warning(method, stats) -> list[str]:
    """`--samples K`: a warning when every sample's K replies were the same text."""
    if not isinstance(method, Verbalized) or stats is None:
        return []
    if stats.sampled < MIN_SAMPLES_FOR_REPETITION or stats.identical < stats.sampled:
        return []
    ignored = (
        f", and it answered {stats.ignored_n} requests for n > 1 with fewer completions"
        if stats.ignored_n
        else ""
    )
    return [
        f"warning: every sample's replies were identical ({stats.sampled} samples with several "
        f"replies under --samples {method.samples}){ignored}: the server most likely ignores "
        "`temperature` (and `n`), as transformers serve does, so each score is one greedy "
        "reply repeated, not an average; use a server that samples (vLLM, llama.cpp, SGLang, "
        "OpenAI) or --samples 1"
    ]


def _print_summary(
    args, method, values, unique: int, from_cache: int, judgements, outcome, stats, cache_path
) -> None:
    scored = [value for value in values if value is not None]
    nulls = len(values) - len(scored)
    lines = ["", "elicit summary"]
    lines.append(f"  rows      {len(values)} ({unique} unique samples)")
    lines.append(
        f"  scored    {len(scored)} rows ({from_cache} samples from the cache, "
        f"{sum(j.ok for j in outcome.judgements.values())} now)"
    )
    lines.append(f"  null      {nulls} rows")
    if stats is not None:
        rate = len(outcome.judgements) / outcome.elapsed if outcome.elapsed > 0 else math.nan
        lines.append(f"  judge     {stats.describe()}")
        per_request = outcome.cpu / stats.requests * 1000 if stats.requests else math.nan
        lines.append(
            f"  time      {outcome.elapsed:.1f} s ({rate:.1f} samples/s); client CPU "
            f"{outcome.cpu:.2f} s ({per_request:.2f} ms per request)"
        )
    digit_lines, warnings = _digit_mass_report(method, judgements)
    warnings += _repetition_warning(method, stats)
    lines.extend(digit_lines)
    written = [p for p in (args.output, args.sidecar) if p]
    lines.append(f"  written   {', '.join(written)} (cache: {cache_path})")
    if scored:
        lines.append("")
        lines.extend("  " + line for line in report.quantile_table({"uncertainty": scored}))
        lines.append("")
        lines.extend("  " + line for line in report.histogram(scored))
    if nulls:
        errors = {judgement.error for judgement in judgements.values() if not judgement.ok}
        lines.append("")
        if outcome.fatal:  # every row would fail alike: say what to fix, not "try again"
            lines.append(
                f"{nulls} rows are not scored (null in the output): the judge stopped the run "
                "(below); once that is fixed, the same command scores only those"
            )
        else:
            lines.append(
                f"{nulls} rows are not scored (null in the output); re-run the same command to "
                "score only those"
            )
        for error in sorted(errors)[:3]:
            lines.append(f"  e.g. {error}")
    if warnings:
        lines.append("")
        lines.extend(warnings)
    print("\n".join(lines), flush=True)
