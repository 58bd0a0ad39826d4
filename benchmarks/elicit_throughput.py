"""Throughput of `axolotl-ual elicit --backend openai` against a loopback server of fixed latency.

Starts `axolotl_ual.elicit.fake_server` in its own process (answers every request after
`--latency` seconds), then for each concurrency C runs the real command line (a subprocess of
`axolotl_ual.cli`, the `axolotl-ual` entry point) on N = waves * C rows and on 2N rows. The
marginal rate N / (t(2N) - t(N)) cancels start-up (imports, reading, writing) and is compared with
the ideal C / latency. The same marginal over the command's own run-phase timer (first request to
last answer) is shown too, and the client's CPU per request (its CPU time in that phase divided by
the requests sent).

    python benchmarks/elicit_throughput.py --latency 0.5 --concurrency 1 8 32 64
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from axolotl_ual.toolkit import judge_client_env


def start_server(latency: float, lifetime: float) -> tuple[subprocess.Popen, str]:
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "axolotl_ual.elicit.fake_server",
            "--latency",
            str(latency),
            "--lifetime",
            str(lifetime),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=judge_client_env(),
    )
    base_url = server.stdout.readline().strip()
    if not base_url.startswith("http://127.0.0.1:"):
        server.kill()
        raise RuntimeError(f"the fake server did not start (said {base_url!r})")
    return server, base_url


def entry_point() -> list[str]:
    """`axolotl-ual` itself when its parser can be built, else the elicit commands alone."""
    probe = subprocess.run(
        [sys.executable, "-c", "from axolotl_ual.cli import build_parser; build_parser()"],
        env=judge_client_env(),
        capture_output=True,
        check=False,
    )
    module = "axolotl_ual.cli" if probe.returncode == 0 else "axolotl_ual.elicit"
    return [sys.executable, "-m", module]


def timed_run(command: list[str], base_url: str, rows: int, concurrency: int, folder: Path):
    """(wall seconds, run-phase seconds, client CPU ms per request) of one `elicit` over `rows`.

    The run phase and CPU figures are the command's own summary: the time from the first request
    to the last answer (no interpreter start, imports or file I/O), and its CPU time in that
    phase divided by the requests sent.
    """
    folder.mkdir(parents=True)
    with open(folder / "data.jsonl", "w", encoding="utf-8") as handle:
        for i in range(rows):
            row = {
                "instruction": f"Question {i}: name a colour.",
                "input": "",
                "output": f"Colour {i}",
            }
            handle.write(json.dumps(row) + "\n")
    argv = [
        *command,
        *shlex.split(
            f"elicit data.jsonl --output scored.jsonl --backend openai --base-url {base_url} "
            f"--model bench --method verbalized --samples 1 --concurrency {concurrency} --no-progress"
        ),
    ]
    started = time.perf_counter()
    result = subprocess.run(
        argv, cwd=folder, env=judge_client_env(), capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"elicit failed ({result.returncode}):\n{result.stderr[-2000:]}")
    summary = re.search(
        r"time +([\d.]+) s .*client CPU [\d.]+ s \(([\d.]+) ms per request\)", result.stdout
    )
    if summary is None:
        raise RuntimeError(f"no timing in the summary:\n{result.stdout[-2000:]}")
    return wall, float(summary.group(1)), float(summary.group(2))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=float, default=0.5, help="server seconds per request")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--waves", type=int, default=10, help="N = waves * concurrency rows")
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="runs of each size; the fastest counts (start-up noise)",
    )
    args = parser.parse_args()

    command = entry_point()
    # the server stops by itself after its lifetime: give it every run plus a margin
    run_seconds = 3 * args.waves * args.latency + 10
    lifetime = 120 + len(args.concurrency) * args.repeats * run_seconds
    server, base_url = start_server(args.latency, lifetime)
    print(
        f"server latency {args.latency * 1000:.0f} ms at {base_url}; client: {' '.join(command[1:])}; "
        f"{os.cpu_count()} CPUs"
    )
    print()
    print(
        "| concurrency | rows N / 2N | wall N / 2N (s) | marginal rows/s | % of ideal "
        "| run-phase marginal rows/s | ideal rows/s | client CPU ms/request |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for concurrency in args.concurrency:
                n = max(args.waves * concurrency, 10)
                runs = {size: [] for size in (n, 2 * n)}
                for repeat in range(args.repeats):
                    for size in runs:
                        folder = Path(tmp) / f"c{concurrency}-{size}-{repeat}"
                        runs[size].append(timed_run(command, base_url, size, concurrency, folder))
                # medians over the repeats: the machine may be shared
                wall_n, run_n, _ = (statistics.median(x) for x in zip(*runs[n], strict=True))
                wall_2n, run_2n, cpu_ms = (
                    statistics.median(x) for x in zip(*runs[2 * n], strict=True)
                )
                marginal = n / (wall_2n - wall_n)
                marginal_run = n / (run_2n - run_n)
                ideal = concurrency / args.latency
                print(
                    f"| {concurrency} | {n} / {2 * n} | {wall_n:.2f} / {wall_2n:.2f} | {marginal:.1f} "
                    f"| {100 * marginal / ideal:.0f}% | {marginal_run:.1f} | {ideal:.1f} | {cpu_ms:.2f} |",
                    flush=True,
                )
    finally:
        server.terminate()
        server.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
