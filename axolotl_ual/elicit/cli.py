"""Command-line parsers of `elicit`, `inspect` and `merge`.

`register(subparsers)` adds them to `axolotl-ual`; `main()` runs them on their own
(`python -m axolotl_ual.elicit ...`). Only argparse here: the commands import what they need.
"""

from __future__ import annotations

import argparse
import math
import os

from .. import rows as rowlib
from ..errors import ExitCode, exit_status_help
from .backends import BACKENDS
from .methods import DEFAULT_MIN_DIGIT_MASS

# What each exit status means for these commands; the --help epilog is written from it.
EXIT_STATUS = {
    ExitCode.OK: "all rows scored",
    ExitCode.INCOMPLETE: "some rows null (re-run to retry just those)",
    ExitCode.USAGE: "bad arguments, input or output path (nothing sent or written)",
    ExitCode.STOPPED: "stopped by the judge (bad key, unknown model, wrong URL, server down)",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C / SIGTERM)",
}


def key_and_exit_epilog(who: str, resumes: str, exit_status: dict) -> str:
    """The --help epilog of a command that talks to a server: the key, resuming, exit status."""
    return (
        f"The {who}'s API key is read from the environment (OPENAI_API_KEY, or the variable named\n"
        "by --api-key-env), never from the command line, and is never written or printed.\n"
        f"Re-running the same command resumes: {resumes}.\n" + exit_status_help(exit_status)
    )


ELICIT_EPILOG = key_and_exit_epilog(
    "judge", "samples already in the cache are not sent again", EXIT_STATUS
)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number greater than 0, got {text}")
    return value


MAX_TEMPERATURE = 2.0  # OpenAI's range; above it sampling is close to uniform noise


def _temperature(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= MAX_TEMPERATURE:  # NaN included
        raise argparse.ArgumentTypeError(
            f"must be between 0 (greedy) and {MAX_TEMPERATURE:g}, got {text}"
        )
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:  # NaN included
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def _key_masked(run):
    """A command that prints nothing of the API key: stdout and stderr are masked while it runs
    (see `redact.redacted_output`), whatever prints (us, tqdm, a traceback)."""

    def command(args) -> int:
        from .redact import redacted_output

        with redacted_output(os.environ.get(getattr(args, "api_key_env", "OPENAI_API_KEY"))):
            return run(args)

    command.__name__ = command.__qualname__ = run.__name__
    return command


@_key_masked
def _elicit(args) -> int:
    from .pipeline import run_elicit

    return run_elicit(args)


@_key_masked
def _inspect(args) -> int:
    from .inspect import run_inspect

    return run_inspect(args)


@_key_masked
def _merge(args) -> int:
    from .shards import run_merge

    return run_merge(args)


def add_server_arguments(server, *, timeout: float = 60.0) -> None:
    """The OpenAI-compatible server's options (URL, key variable, concurrency, timeout,
    retries, backoff), shared by every command that talks to one through
    `client.OpenAIChatClient` (`elicit`, `generate`)."""
    server.add_argument(
        "--base-url",
        help="server URL, e.g. http://localhost:8000/v1 (default: OPENAI_BASE_URL or OpenAI's)",
    )
    server.add_argument(
        "--api-key-env",
        default="OPENAI_API_KEY",
        help="environment variable holding the API key (default: %(default)s)",
    )
    server.add_argument(
        "--concurrency",
        type=_positive_int,
        default=16,
        help="requests in flight (default: %(default)s)",
    )
    server.add_argument(
        "--timeout",
        type=_positive_float,
        default=timeout,
        help="seconds a whole request (connect, send, every byte of the answer) may take "
        "before it counts as a timeout and is retried (default: %(default)s)",
    )
    server.add_argument(
        "--max-retries",
        type=_non_negative_int,
        default=6,
        help="retries of a request after 429/5xx/timeouts (default: %(default)s)",
    )
    server.add_argument(
        "--backoff-base",
        type=_positive_float,
        default=0.5,
        help="first retry delay in seconds, doubled each retry (default: %(default)s)",
    )
    server.add_argument(
        "--backoff-max",
        type=_positive_float,
        default=30.0,
        help="longest retry delay without Retry-After (default: %(default)s)",
    )


def add_elicit_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "elicit",
        help="rate each sample's uncertainty with a judge LLM",
        description="Ask a judge LLM how intrinsically uncertain each training sample is, and write "
        "the dataset back with an `uncertainty` column in [0, 1] (and/or a sidecar file).",
        epilog=ELICIT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "input", help="JSONL/JSON/Parquet/CSV file, save_to_disk folder, or hub dataset name"
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "-o",
        "--output",
        help="the scored dataset; its format follows the extension "
        "(.jsonl .json .parquet .csv, or no extension: a save_to_disk folder)",
    )
    data.add_argument(
        "--sidecar",
        help="also (or only) write {sample_key, uncertainty} rows here (.jsonl), "
        "for ual_uncertainty_source: sidecar",
    )
    data.add_argument("--cache", help="resumable cache (default: <output>.cache.jsonl)")
    data.add_argument(
        "--format", choices=rowlib.FORMATS, help="row format (default: detected from the first row)"
    )
    data.add_argument(
        "--field-messages",
        default=rowlib.DEFAULT_MESSAGES_FIELD,
        help="column of chat messages (default: %(default)s)",
    )
    data.add_argument(
        "--field",
        default="uncertainty",
        help="output column for u in [0, 1]; the raw judge score goes to <field>_score "
        "(default: %(default)s)",
    )
    data.add_argument(
        "--split", default="train", help="split of a DatasetDict folder or hub dataset"
    )
    data.add_argument(
        "--shard",
        metavar="I/N",
        help="score only shard I of N (0-based, contiguous rows); `merge` joins the shard outputs",
    )

    judge = parser.add_argument_group("judge")
    judge.add_argument(
        "--backend",
        choices=tuple(BACKENDS),
        default="openai",
        help="; ".join(f"{b.name}: {b.help}" for b in BACKENDS.values())
        + " (default: %(default)s)",
    )
    judge.add_argument(
        "--model", required=True, help="model name on the server, or local model path/id"
    )
    judge.add_argument(
        "--method",
        choices=("verbalized", "logprob", "entropy"),
        default="verbalized",
        help="verbalized: 1-10 score; logprob: expected 0-9 digit; entropy: local model's "
        "mean token entropy of the response (default: %(default)s)",
    )
    judge.add_argument(
        "--samples",
        type=_positive_int,
        default=1,
        help="verbalized scores averaged per sample (default: %(default)s)",
    )
    judge.add_argument(
        "--temperature",
        type=_temperature,
        help="judge temperature, 0 to 2 (default: 0 for one sample, 0.7 for several)",
    )
    judge.add_argument(
        "--max-tokens",
        type=_positive_int,
        default=16,
        help="reply length limit for verbalized (default: %(default)s)",
    )
    judge.add_argument(
        "--top-logprobs",
        type=_positive_int,
        default=20,
        help="alternatives per token for logprob (1-20 on the openai backend), and for entropy "
        "on vllm (default: %(default)s)",
    )
    judge.add_argument(
        "--min-digit-mass",
        type=_fraction,
        default=DEFAULT_MIN_DIGIT_MASS,
        help="logprob: a row whose judge put less than this probability on the digit tokens "
        "is null: its answer is not a score (default: %(default)s)",
    )
    judge.add_argument(
        "--parse-retries",
        type=_non_negative_int,
        default=3,
        help="extra requests after unparsable replies (default: %(default)s)",
    )
    judge.add_argument(
        "--max-chars",
        type=_positive_int,
        default=16000,
        help="sample characters shown to the judge; longer messages are cut in the "
        "middle (default: %(default)s)",
    )

    add_server_arguments(parser.add_argument_group("openai backend"))

    local = parser.add_argument_group("hf / vllm backends")
    local.add_argument(
        "--batch-size", type=_positive_int, help="samples per batch (default: hf 8, vllm 512)"
    )
    local.add_argument(
        "--device", default="auto", help="hf: cpu, cuda, cuda:1... (default: %(default)s)"
    )
    local.add_argument("--dtype", default="auto", help="float32, bfloat16, float16 (default: auto)")
    local.add_argument(
        "--max-length",
        type=_positive_int,
        default=4096,
        help="entropy: tokens per sample; longer samples are cut (default: %(default)s)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=_elicit)
    return parser


def add_inspect_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "inspect",
        help="show the uncertainty distribution and the label smoothing it becomes",
        description="Print quantiles of u and of the epsilon it maps to under a training config's "
        "ual_* settings, and save a PNG histogram.",
    )
    parser.add_argument("input", help="scored dataset or sidecar file")
    parser.add_argument(
        "--config", help="axolotl YAML whose ual_* keys set the mapping (default: UAL defaults)"
    )
    parser.add_argument(
        "--field",
        help="uncertainty column (default: ual_uncertainty_field, or "
        "'uncertainty' for sidecar files)",
    )
    parser.add_argument(
        "--png", help="histogram image (default: <input stem>.uncertainty.png beside the input)"
    )
    parser.add_argument("--split", default="train", help="split of a DatasetDict folder")
    parser.set_defaults(func=_inspect)
    return parser


def add_merge_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "merge",
        help="join `elicit --shard` outputs into one file in the original order",
        description="Check that the shard outputs (each with its .shard.json manifest) are all the "
        "shards of one dataset, none missing or repeated, and write them as one file.",
    )
    parser.add_argument("shards", nargs="+", help="the shard outputs, in any order")
    parser.add_argument(
        "-o", "--output", required=True, help="merged file (format from the extension)"
    )
    parser.add_argument(
        "--sidecar", help="also write the merged {sample_key, uncertainty} sidecar (.jsonl)"
    )
    parser.set_defaults(func=_merge)
    return parser


def register(subparsers) -> None:
    """Add `elicit`, `inspect` and `merge` to an argparse subparsers object."""
    add_elicit_parser(subparsers)
    add_inspect_parser(subparsers)
    add_merge_parser(subparsers)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m axolotl_ual.elicit",
        description="Elicit, inspect and merge sample uncertainties.",
    )
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)
