"""The command-line surface: registration, flags, light imports."""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys

import pytest

from axolotl_ual.elicit import cli

from .support import REPO, judge_client_env


def parser():
    root = argparse.ArgumentParser(prog="axolotl-ual")
    cli.register(root.add_subparsers(dest="command", required=True))
    return root


def test_register_adds_the_three_commands():
    root = parser()
    args = root.parse_args(
        shlex.split(
            "elicit data.jsonl -o scored.jsonl --backend openai --base-url http://localhost:8000/v1 "
            "--model Qwen2.5-72B-Instruct --method verbalized --samples 3 --concurrency 32"
        )
    )
    parsed = {name: getattr(args, name) for name in ("input", "output", "backend", "base_url")}
    assert parsed == {
        "input": "data.jsonl",
        "output": "scored.jsonl",
        "backend": "openai",
        "base_url": "http://localhost:8000/v1",
    }
    assert (args.model, args.method, args.samples, args.concurrency) == (
        "Qwen2.5-72B-Instruct",
        "verbalized",
        3,
        32,
    )
    long_form = root.parse_args(shlex.split("elicit d.jsonl --output o.jsonl --model m"))
    assert long_form.output == "o.jsonl"
    inspect = root.parse_args(["inspect", "scored.jsonl", "--config", "config.yml"])
    merge = root.parse_args(["merge", "a.jsonl", "b.jsonl", "-o", "all.jsonl"])
    assert callable(args.func) and callable(inspect.func) and callable(merge.func)
    assert len({args.func, inspect.func, merge.func}) == 3


@pytest.mark.parametrize(
    "argv",
    [
        ["elicit", "d.jsonl", "--model", "m", "--concurrency", "0"],
        ["elicit", "d.jsonl", "--model", "m", "--backend", "nope"],
        ["elicit", "d.jsonl"],
    ],
)
def test_bad_flags_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parser().parse_args(argv)
    assert exit_info.value.code == 2


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--temperature -1", "must be between 0 (greedy) and 2, got -1"),
        ("--temperature 2.5", "must be between 0 (greedy) and 2, got 2.5"),
        ("--temperature nan", "must be between 0 (greedy) and 2, got nan"),
        ("--samples 0", "must be at least 1, got 0"),
        ("--timeout inf", "must be a finite number greater than 0, got inf"),
        ("--top-logprobs 0", "must be at least 1, got 0"),
    ],
)
def test_impossible_sampling_settings_are_refused_while_parsing(flag, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parser().parse_args(["elicit", "d.jsonl", "-o", "o.jsonl", "--model", "m", *flag.split()])
    assert exit_info.value.code == 2
    assert f"argument {flag.split()[0]}: {message}" in capsys.readouterr().err


def test_help_is_light():
    """`--help` imports none of the heavy libraries."""
    code = (
        "import sys; from axolotl_ual.elicit import cli; "
        "cli.build_parser().format_help(); "
        "print(sorted(m for m in ('torch', 'transformers', 'openai', 'vllm', 'datasets', 'pandas') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=judge_client_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.stdout.strip() == "[]", result.stderr


def test_the_axolotl_ual_entry_point_has_the_commands():
    from axolotl_ual.cli import build_parser

    args = build_parser().parse_args(["elicit", "d.jsonl", "-o", "o.jsonl", "--model", "m"])
    assert args.func.__module__ == cli.__name__


def test_one_backend_registry_feeds_the_cli_and_make_judge():
    import importlib

    from axolotl_ual.elicit.backends import BACKENDS, LOCAL_BACKENDS, AsyncJudge, BatchJudge

    elicit = parser()._subparsers._group_actions[0].choices["elicit"]
    backend_flag = next(a for a in elicit._actions if "--backend" in a.option_strings)
    assert tuple(backend_flag.choices) == tuple(BACKENDS)
    assert LOCAL_BACKENDS == ("hf", "vllm")
    for backend in BACKENDS.values():
        module = importlib.import_module(f"axolotl_ual.elicit.backends.{backend.module}")
        judge_class = getattr(module, backend.judge_class)
        # a local backend is a batch judge, a server one an async judge: the runner drives them
        assert issubclass(judge_class, BatchJudge if backend.local else AsyncJudge)
        assert backend.help in backend_flag.help


def test_the_epilog_names_every_exit_code():
    from axolotl_ual.errors import ExitCode

    assert set(cli.EXIT_STATUS) == set(ExitCode)
    text = " ".join(cli.ELICIT_EPILOG.split())
    for code, meaning in cli.EXIT_STATUS.items():
        assert f"{int(code)} {meaning}" in text


def test_argument_problems_are_usage_errors():
    from axolotl_ual.elicit.shards import Shard
    from axolotl_ual.errors import UsageError

    for text in ("4/4", "x"):
        with pytest.raises(UsageError, match="--shard"):
            Shard.parse(text)
