"""`axolotl-ual` command line: `generate`, `elicit`, `inspect`, `merge`, `demo`, `phases`.

Each subcommand lives in its own module and registers its parser here; heavy imports (torch,
axolotl, the judge backends) happen inside the commands, so `axolotl-ual --help` is instant.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from . import demo
    from .elicit import cli as elicit_cli
    from .generate import cli as generate_cli
    from .phases import cli as phases_cli

    parser = argparse.ArgumentParser(
        prog="axolotl-ual",
        description="Uncertainty-Aware Learning for axolotl: annotate data, inspect it, train.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    generate_cli.register(commands)
    elicit_cli.register(commands)
    demo.register(commands)
    phases_cli.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
