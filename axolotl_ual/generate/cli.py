"""Command-line parser of `axolotl-ual generate` (argparse only: the command imports the rest)."""

from __future__ import annotations

import argparse

from ..elicit.cli import (
    _key_masked,
    _non_negative_int,
    _positive_int,
    _temperature,
    add_server_arguments,
    key_and_exit_epilog,
)
from ..errors import ExitCode

EXIT_STATUS = {
    ExitCode.OK: "every request answered; the rows are written",
    ExitCode.INCOMPLETE: "some requests failed or stayed unparsable: the rows without them are "
    "written (re-run to ask for just those)",
    ExitCode.USAGE: "bad arguments, taxonomy, documents or output path (nothing sent or written)",
    ExitCode.STOPPED: "stopped by the server (bad key, unknown model, wrong URL, server down); "
    "nothing written",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C / SIGTERM); nothing written",
}
EPILOG = key_and_exit_epilog(
    "server", "requests already answered (in the cache) are not sent again", EXIT_STATUS
)


def _rating(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 3:
        raise argparse.ArgumentTypeError(f"must be 1, 2 or 3, got {value}")
    return value


@_key_masked
def _generate(args) -> int:
    from .run import run_generate

    return run_generate(args)


def add_generate_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "generate",
        help="generate chat training data from an InstructLab taxonomy with a teacher LLM",
        description="Read an InstructLab taxonomy (qna.yaml leaves: knowledge, foundational and "
        "compositional skills), have a teacher model behind an OpenAI-compatible server write "
        "new samples like each leaf's seed examples (LAB's pipelines: questions, a judge's "
        "filter, answers, a judge's rating; knowledge Q&A grounded on the documents, checked "
        "for faithfulness and relevancy), and write them as chat rows tagged with their leaf "
        "and branch.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("taxonomy", help="the taxonomy's root folder (holding knowledge/, ...)")
    data = parser.add_argument_group("data")
    data.add_argument(
        "-o",
        "--output",
        help="the generated chat rows; format from the extension (.jsonl .json .parquet .csv); "
        "required unless --dry-run",
    )
    data.add_argument(
        "--split-by-branch",
        action="store_true",
        help="also write one file per branch present: <output stem>.knowledge<ext>, "
        ".foundational_skill<ext>, .compositional_skill<ext> (for a phases recipe)",
    )
    data.add_argument("--cache", help="resumable cache (default: <output>.cache.jsonl)")
    data.add_argument(
        "--leaf",
        action="append",
        default=[],
        metavar="GLOB",
        help="only the leaves whose path (relative to the taxonomy) matches; repeatable",
    )
    data.add_argument(
        "--documents",
        metavar="DIR",
        help="where knowledge leaves' git repositories are cloned: DIR/<repo name>/ (or DIR) "
        "holds the files their document.patterns name",
    )
    data.add_argument(
        "--chunk-words",
        type=_positive_int,
        default=1000,
        help="knowledge documents are cut into chunks of about this many words (default: "
        "%(default)s)",
    )
    data.add_argument(
        "--system-prompt", help="a system message to put first in every generated row"
    )
    data.add_argument(
        "--dry-run",
        action="store_true",
        help="read and check the taxonomy and documents, show the plan, send nothing",
    )

    gen = parser.add_argument_group("generation")
    gen.add_argument("--model", help="the teacher's model name on the server")
    gen.add_argument(
        "--judge-model", help="the judge's model name on the same server (default: --model)"
    )
    gen.add_argument(
        "--num-samples",
        type=_positive_int,
        default=30,
        help="items drawn per leaf before the judge's filters (default: %(default)s)",
    )
    gen.add_argument(
        "--per-request",
        type=_positive_int,
        default=5,
        help="questions (or Q&A pairs) asked for in one teacher request (default: %(default)s)",
    )
    gen.add_argument(
        "--min-answer-rating",
        type=_rating,
        default=2,
        help="skills: keep answers the judge rates at least this, 1-3 (default: %(default)s)",
    )
    gen.add_argument(
        "--temperature",
        type=_temperature,
        default=0.7,
        help="teacher temperature (default: %(default)s)",
    )
    gen.add_argument(
        "--judge-temperature",
        type=_temperature,
        default=0.0,
        help="judge temperature (default: %(default)s)",
    )
    gen.add_argument(
        "--max-tokens",
        type=_positive_int,
        default=2048,
        help="teacher reply length limit (default: %(default)s)",
    )
    gen.add_argument(
        "--judge-max-tokens",
        type=_positive_int,
        default=512,
        help="judge reply length limit (default: %(default)s)",
    )
    gen.add_argument(
        "--parse-retries",
        type=_non_negative_int,
        default=1,
        help="extra requests after a reply not in the form asked for (default: %(default)s)",
    )
    add_server_arguments(parser.add_argument_group("server"), timeout=300.0)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=_generate)
    return parser


def register(subparsers) -> None:
    add_generate_parser(subparsers)
