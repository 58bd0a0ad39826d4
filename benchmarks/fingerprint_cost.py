"""What hashing the data files costs: `axolotl_ual.prepared_data.data_fingerprint` on a big file.

The prepared-data fingerprint hashes every UAL dataset file's content (sha256, 1 MiB blocks) on
each `axolotl train` / `axolotl preprocess`. This writes a JSONL file of `--size-gib` GiB (the
bundled chat rows repeated, each with its own id and uncertainty) in a temporary folder, then
times `data_fingerprint` on a config naming it:

- cold-ish: before each repetition the file's pages are dropped from the page cache
  (`posix_fadvise(DONTNEED)`, this file only: the machine's other work keeps its cache). The
  host of a virtual machine may still cache the disk, hence "-ish"; `fincore` (util-linux), where
  installed, reports how much of the file was resident just before;
- warm: the file was just read, and is read again from memory.

For scale, a bare tokenizer (`tokenizers` BPE, 32k vocabulary trained on the same rows, all
cores; no chat template, no labels, so less work than axolotl's tokenization) encodes a
`--tokenize-mib` MiB slice of the file, extrapolated to a GiB. The file is deleted at the end, also on error or Ctrl-C.

    python benchmarks/fingerprint_cost.py                  # 1 GiB, 3 repetitions of each
    python benchmarks/fingerprint_cost.py --size-gib 4 --reps 5 --markdown /tmp/fingerprint.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from axolotl_ual.prepared_data import data_fingerprint
from axolotl_ual.toolkit import DATA, read_jsonl

GIB = 1 << 30
MIB = 1 << 20


def write_jsonl_file(path: Path, size: int, seed: int = 0) -> int:
    """About `size` bytes of whole JSONL chat rows: a 16 MiB block of the bundled rows (each
    with its own id and uncertainty) written over and over (hashing cost does not depend on the
    bytes). Returns the bytes written."""
    rows = read_jsonl(DATA / "sample_chat.jsonl")
    rng = random.Random(seed)
    block, length = [], 0
    while length < min(size, 16 * MIB):
        row = dict(rows[len(block) % len(rows)], id=len(block), uncertainty=round(rng.random(), 3))
        block.append(json.dumps(row, ensure_ascii=False) + "\n")
        length += len(block[-1].encode())
    data = "".join(block).encode()
    written = 0
    with open(path, "wb") as handle:
        while written < size:
            chunk = data[: size - written]
            chunk = chunk[: chunk.rfind(b"\n") + 1] or chunk
            handle.write(chunk)
            written += len(chunk)
            if len(chunk) < len(data):
                break
        handle.flush()
        os.fsync(handle.fileno())
    return written


def drop_from_page_cache(path: Path) -> None:
    with open(path, "rb") as handle:
        os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def resident_bytes(path: Path) -> int | None:
    """Bytes of `path` in the page cache now (`fincore`), or None where it is not installed."""
    if not shutil.which("fincore"):
        return None
    out = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    return int(out.stdout.split()[0]) if out.returncode == 0 and out.stdout.strip() else None


def time_fingerprint(cfg: dict, *, cold: bool, path: Path) -> tuple[float, int | None]:
    if cold:
        drop_from_page_cache(path)
    resident = resident_bytes(path)
    start = time.perf_counter()
    data_fingerprint(cfg)
    return time.perf_counter() - start, resident


def tokenizer_seconds_per_gib(path: Path, sample_bytes: int) -> tuple[float, int]:
    """Seconds per GiB for a bare BPE tokenizer to encode the texts of a slice of `path`."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    with open(path, "rb") as handle:
        lines = handle.read(sample_bytes).decode("utf-8", errors="ignore").splitlines()[:-1]
    texts = [m["content"] for line in lines for m in json.loads(line)["messages"]]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=32000, show_progress=False, special_tokens=["<unk>"])
    tokenizer.train_from_iterator(texts[:20000], trainer=trainer)
    start = time.perf_counter()
    tokenizer.encode_batch(texts)
    seconds = time.perf_counter() - start
    used = sum(len(line.encode()) + 1 for line in lines)
    return seconds * GIB / used, used


def summary(times: list[float], size: int) -> tuple[str, str]:
    median = statistics.median(times)
    seconds = f"{median:.2f} [{min(times):.2f}-{max(times):.2f}]"
    return seconds, f"{size / GIB / median:.2f}"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if "model name" in line)
    except (OSError, StopIteration):
        pass
    memory = ""
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory = f", {pages / GIB:.1f} GiB RAM"
    except (ValueError, OSError):
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"{cpu}, {os.cpu_count()} cores ({usable} usable by this process){memory}, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-gib", type=float, default=1.0, help="size of the file (GiB)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each case")
    parser.add_argument("--dir", default=None, help="where to write the file (default: a temp dir)")
    parser.add_argument(
        "--tokenize-mib", type=float, default=16, help="slice for the tokenizer reference (0: skip)"
    )
    parser.add_argument("--markdown", default=None, help="also write the report to this file")
    args = parser.parse_args(argv)

    size = int(args.size_gib * GIB)
    lines = [
        f"command: python benchmarks/fingerprint_cost.py {' '.join(argv or sys.argv[1:])}".rstrip(),
        f"date: {time.strftime('%Y-%m-%dT%H:%M:%S%z')}",
        f"machine: {machine()}",
        f"1-min load average before: {os.getloadavg()[0]:.2f}",
    ]
    with tempfile.TemporaryDirectory(prefix="ual-fingerprint-", dir=args.dir) as tmp:
        path = Path(tmp) / "data.jsonl"
        start = time.perf_counter()
        size = write_jsonl_file(path, size)
        lines.append(
            f"file: {size / GIB:.3f} GiB of JSONL chat rows in {tmp} "
            f"(written and fsynced in {time.perf_counter() - start:.1f} s)"
        )
        cfg = {
            "ual_uncertainty_source": "field",
            "datasets": [{"path": str(path), "type": "axolotl_ual.chat_template"}],
        }
        cold = [time_fingerprint(cfg, cold=True, path=path) for _ in range(args.reps)]
        data_fingerprint(cfg)  # warms the cache
        warm = [time_fingerprint(cfg, cold=False, path=path) for _ in range(args.reps)]
        token_row = None
        if args.tokenize_mib:
            per_gib, used = tokenizer_seconds_per_gib(path, int(args.tokenize_mib * MIB))
            token_row = (
                f"| reference: bare BPE tokenizer encode, {used / MIB:.0f} MiB slice "
                f"extrapolated | 1 | {per_gib:.1f} per GiB | {1 / per_gib:.3f} |"
            )
    lines.append(f"1-min load average after: {os.getloadavg()[0]:.2f}")

    def resident(runs) -> str:
        values = [r for _, r in runs if r is not None]
        return f"{max(values) / MIB:,.0f} MiB" if values else "n/a"

    seconds_cold, rate_cold = summary([t for t, _ in cold], size)
    seconds_warm, rate_warm = summary([t for t, _ in warm], size)
    lines += [
        "",
        "| page cache | reps | data_fingerprint s, median [min-max] | GiB/s | resident before (max) |",
        "|---|---:|---:|---:|---:|",
        f"| cold-ish (DONTNEED before each) | {args.reps} | {seconds_cold} | {rate_cold} "
        f"| {resident(cold)} |",
        f"| warm (file just read) | {args.reps} | {seconds_warm} | {rate_warm} | {resident(warm)} |",
    ]
    if token_row:
        lines.append(token_row + " |")
    report = "\n".join(lines)
    print(report)
    if args.markdown:
        Path(args.markdown).write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
