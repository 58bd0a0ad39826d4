"""The `axolotl-ual phases` subcommand (argparse only; the runner imports what it needs)."""

from __future__ import annotations

import argparse

from ..errors import ExitCode, exit_status_help

DESCRIPTION = """\
Multi-phase training with replay (LAB, arXiv 2403.01081): each phase of the recipe is one
`axolotl train` run on a config generated from the recipe's base config and the phase's keys,
starting from the previous phase's chosen checkpoint (LoRA: the adapter; full fine-tuning: the
weights), optionally replaying a share of earlier phases' data."""

EXIT_STATUS = {
    ExitCode.OK: "all phases done",
    ExitCode.USAGE: "bad recipe or inputs (nothing trained)",
    ExitCode.STOPPED: "`axolotl train` failed (see its log; re-run to resume)",
    ExitCode.INTERRUPTED: "interrupted (re-run to resume)",
}
EPILOG = """\
Re-running the same command resumes: finished phases (journal.json in the work folder) are
skipped and an interrupted phase goes on from its last checkpoint. A changed recipe, base config
or data file is refused unless --restart is given, which moves the old work folder aside
(nothing is deleted) and starts again.
""" + exit_status_help(EXIT_STATUS)


def _run(args) -> int:
    from .runner import main

    return main(args)


def register(commands) -> None:
    parser = commands.add_parser(
        "phases",
        help="train in phases with replay (LAB-style), one `axolotl train` per phase",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("recipe", help="the recipe YAML (base_config, phases)")
    parser.add_argument(
        "--work-dir",
        help="the run's folder (default: the recipe's work_dir, else <recipe name>-run beside it)",
    )
    parser.add_argument(
        "--restart",
        action="store_true",
        help="start a new run: move the existing work folder aside (nothing is deleted)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="check the recipe and show each phase's data (replay counts, uncertainty "
        "buckets); train nothing, write nothing",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="show axolotl's whole output, not only the losses"
    )
    parser.set_defaults(func=_run)
