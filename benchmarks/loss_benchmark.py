"""Peak memory and forward+backward time of the UAL loss against materialized-logits losses.

Six ways to get a (label-smoothed) cross entropy from the final hidden states `hidden` (T, d)
and the output projection `weight` (V, d):

  a  materialized logits + per-token smoothing: `logits = hidden @ weight.T`, then
     `axolotl_ual.loss.smoothed_cross_entropy(logits, labels, eps_t)` (the trainer's own
     fallback; `--materialized naive` uses instead the form a user would write by hand,
     `-(1 - eps) * logp_y - eps * logp.mean(-1)` from `logits.log_softmax(-1)`)
  b  HF `transformers.trainer_pt_utils.LabelSmoother(epsilon=0.1)` on `{"logits": logits}` with
     pre-aligned labels (`shift_labels=False`); one scalar epsilon (0.1, the mean of eps_t)
  c  `F.cross_entropy((hidden @ weight.T).float(), labels)`: no smoothing, the usual loss (HF's
     causal-LM loss upcasts the logits to fp32 the same way)
  d  ours: `axolotl_ual.loss.linear_cross_entropy(hidden, weight, labels, eps_t)`, fused and
     chunked, per-token eps
  e  ours with eps = 0
  f  ours with Instruction Modelling's terms: `axolotl_ual.loss.linear_token_loss` with the
     first 40% of the positions as instruction tokens at weight 0.5 and eps 0.05 (per-token
     weights and smoothing, as the trainer runs them): the same pass as d with other
     coefficients, so its memory and time should equal d's

Inputs (seeded, identical for all methods): hidden (T, d) with requires_grad (it comes from the
model), weight (V, d) frozen unless `--train-weight` (the LoRA / QLoRA case, where only the
hidden states need a gradient), labels uniform in [0, V) with 30% of them -100 (prompt tokens),
eps_t uniform in [0, 0.2] per token. All methods reduce by the mean over non-ignored tokens.
With `--dtype bf16` hidden and weight are bf16, so are the materialized logits; a and c compute
in fp32 from them, b (LabelSmoother) takes its log_softmax in bf16 as it would inside the HF
Trainer, and ours computes softmax and reductions in fp32 chunk by chunk.

How it is measured. Every (method, V, T) runs in its own fresh Python process (this script,
started again with `--worker`), so one measurement's memory never leaks into another's. In that
process: allocate the inputs, warm up once with the same method on the first 256 tokens (kernel
and thread-pool start-up, lazily built state), then time repetitions of
`loss = f(...); loss.backward()` (on CUDA followed by `torch.cuda.synchronize()`), with the
gradients dropped between repetitions. The reported time is the median; repetitions stop at
`--reps` or once they have used `--max-seconds` (at least one is always run).

Peak memory is measured during each timed repetition, for the whole forward + backward (the
logits, everything autograd saves, the gradient of `hidden` that stays at the end):
  - CPU: peak resident set size growth of the worker process. Just before the call the
    kernel's high-water mark is reset to the current RSS (`echo 5 > /proc/self/clear_refs`,
    Linux >= 4.0); after backward the peak is `VmHWM` (/proc/self/status) minus the RSS before.
    This is exact (the kernel tracks it on every page fault), costs nothing while the loss runs,
    and needs no sampling thread. It counts pages actually touched: torch's CPU allocator hands
    large blocks back to the OS when freed (glibc mmap), so each repetition starts from the
    same baseline. Where clear_refs cannot be written, a 1 ms sampling thread reading
    /proc/self/statm is used instead (it can miss spikes shorter than its period); the table
    says which.
  - CUDA: `torch.cuda.max_memory_allocated()` after `reset_peak_memory_stats()`, minus the
    memory allocated before the call (allocator-level bytes, not reserved/cached ones).
The reported peak is the largest over the repetitions.

Each row also gives the worker's CPU time (user + system, all threads) during the timed call.
On a machine shared with other jobs, wall time stretches with their load (the `load` column is
the 1-minute load average after the row) while CPU time stays much steadier; both ratios are
printed, and the goals' PASS/FAIL is on wall time with the CPU-time verdict beside it.
With two threads on two busy cores every parallel op can wait a scheduler tick for its second
thread, which hurts code with many small ops most; `--threads 1` avoids that on a loaded box.

Configurations whose estimated peak for a/b/c would not fit in the memory available now
(MemAvailable, or free GPU memory; with 15% headroom) are skipped with the estimate printed. The
estimate is the inputs plus `factor * T * V * 4` bytes with per-method factors measured with
this script (see `MATERIALIZED_FACTOR`). A worker that dies anyway (OOM killer) is reported,
not retried.

Commands (from the repository root, with the project's environment active):

    python benchmarks/loss_benchmark.py --quick                    # V=128256, T=4096 only
    python benchmarks/loss_benchmark.py --reps 2 --max-seconds 25 > bench.log 2>&1   # full grid
    python benchmarks/loss_benchmark.py --vocab 128256 --tokens 4096 --methods d --chunk-size 1024
    python benchmarks/loss_benchmark.py --quick --materialized naive --methods ad
    python benchmarks/loss_benchmark.py --device cuda --dtype bf16   # d defaults to 4096 there

(benchmarks/RESULTS.md has the commands and output of the recorded runs.)

The goals checked (reported, not enforced) at V = 128256, T = 4096:
  memory(d) <= 1/4 memory(a) (aim 1/10); time(d) <= 1.3 x time(a); time(d) <= 1.03 x time(e).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from memory import CpuPeakMemory, CudaPeakMemory

REPO_ROOT = Path(__file__).resolve().parents[1]  # importable before the package is installed

METHODS = {
    "a": "materialized logits + per-token smoothing",
    "b": "HF LabelSmoother, scalar eps=0.1",
    "c": "F.cross_entropy, no smoothing",
    "d": "ours linear_cross_entropy, per-token eps",
    "e": "ours linear_cross_entropy, eps=0",
    "f": "ours linear_token_loss, instruction tokens at their own weight and eps",
}
MATERIALIZED_METHODS = ("a", "b", "c")

# Peak memory of a materialized method divided by the bytes of one (T, V) fp32 logits tensor,
# with margin: measured with this script on CPU fp32, frozen weight, 4.0 (a), 3.0 (b), 3.0 (c) at
# V=32000, T=2048 and at V=128256, T=4096 (3.0 for the naive form of a). Used only to decide
# what to skip.
MATERIALIZED_FACTOR = {"a": 4.5, "a-naive": 3.5, "b": 3.5, "c": 3.5}

DEFAULT_VOCABS = (32000, 128256, 152064)
DEFAULT_TOKENS = (2048, 8192)
GOAL_POINT = (128256, 4096)  # (V, T) of the goals; always added to the default grid
WARMUP_TOKENS = 256
IGNORE_FRACTION = 0.3
EPS_MAX = 0.2
HF_EPSILON = 0.1  # LabelSmoother takes one scalar: the mean of U[0, EPS_MAX]

TITLE = "Loss benchmark: fused linear cross entropy vs materialized logits"
GOAL_MEMORY = 0.25
GOAL_MEMORY_AIM = 0.10
GOAL_TIME = 1.3
GOAL_EPS_OVERHEAD = 1.03


# --------------------------------------------------------------------------------------------
# Worker: one (method, V, T) measurement in a fresh process
# --------------------------------------------------------------------------------------------


def build_inputs(torch, V, T, d, dtype, device, train_weight, seed):
    gen = torch.Generator().manual_seed(seed)
    hidden = (torch.randn(T, d, generator=gen) / 4).to(dtype=dtype, device=device)
    weight = (torch.randn(V, d, generator=gen) / d**0.5).to(dtype=dtype, device=device)
    labels = torch.randint(0, V, (T,), generator=gen)
    ignored = torch.randperm(T, generator=gen)[: round(IGNORE_FRACTION * T)]
    labels[ignored] = -100
    eps = torch.rand(T, generator=gen) * EPS_MAX
    hidden.requires_grad_(True)
    weight.requires_grad_(train_weight)
    return hidden, weight, labels.to(device), eps.to(device)


def loss_function(method, materialized, chunk_size):
    """f(hidden, weight, labels, eps) -> scalar loss, for one method."""
    import torch.nn.functional as F

    from axolotl_ual.loss import linear_cross_entropy, smoothed_cross_entropy

    def materialized_smoothed(hidden, weight, labels, eps):
        return smoothed_cross_entropy(hidden @ weight.T, labels, eps)

    def materialized_naive(hidden, weight, labels, eps):
        logp = (hidden @ weight.T).float().log_softmax(-1)
        valid = labels != -100
        safe = labels.masked_fill(~valid, 0)
        logp_y = logp.gather(1, safe[:, None]).squeeze(1)
        per_token = -(1 - eps) * logp_y - eps * logp.mean(-1)
        return (per_token * valid).sum() / valid.sum()

    def hf_label_smoother(hidden, weight, labels, eps):
        from transformers.trainer_pt_utils import (
            LabelSmoother,  # imported once, in warm-up
        )

        smoother = LabelSmoother(epsilon=HF_EPSILON)
        return smoother({"logits": hidden @ weight.T}, labels, shift_labels=False)

    def plain_cross_entropy(hidden, weight, labels, eps):
        return F.cross_entropy((hidden @ weight.T).float(), labels)

    def ours(hidden, weight, labels, eps):
        return linear_cross_entropy(hidden, weight, labels, eps, chunk_size=chunk_size)

    def ours_no_eps(hidden, weight, labels, eps):
        return linear_cross_entropy(hidden, weight, labels, 0.0, chunk_size=chunk_size)

    def ours_instruction_terms(hidden, weight, labels, eps):
        import torch

        from axolotl_ual.loss import TokenTerms, linear_token_loss

        trained = labels != -100
        # Instruction Modelling: the first 40% of the positions are instruction tokens, at
        # weight 0.5 and smoothing 0.05; the rest responses with their per-token eps
        instruction = trained & (
            torch.arange(labels.shape[0], device=labels.device) < 0.4 * len(labels)
        )
        weights = torch.where(instruction, 0.5, 1.0) * trained
        terms = TokenTerms.smoothed(
            torch.where(instruction, 0.05, eps), weights, scale=1.0 / float(weights.sum())
        )
        return linear_token_loss(hidden, weight, labels, terms, chunk_size=chunk_size).loss

    return {
        "a": materialized_naive if materialized == "naive" else materialized_smoothed,
        "b": hf_label_smoother,
        "c": plain_cross_entropy,
        "d": ours,
        "e": ours_no_eps,
        "f": ours_instruction_terms,
    }[method]


def _cpu_seconds() -> float:
    """User + system CPU time of this process, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_worker(spec: dict) -> dict:
    import torch

    sys.path.insert(0, str(REPO_ROOT))
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[spec["dtype"]]
    hidden, weight, labels, eps = build_inputs(
        torch, spec["V"], spec["T"], spec["d"], dtype, device, spec["train_weight"], spec["seed"]
    )
    f = loss_function(spec["method"], spec["materialized"], spec["chunk_size"])
    cuda = device.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def clear_grads():
        hidden.grad = None
        weight.grad = None

    # warm-up on a slice of the same shape family
    n = min(WARMUP_TOKENS, spec["T"])
    warm_hidden = hidden.detach()[:n].clone().requires_grad_(True)
    f(warm_hidden, weight, labels[:n], eps[:n]).backward()
    del warm_hidden
    clear_grads()
    sync()

    meter_factory = CudaPeakMemory if cuda else CpuPeakMemory
    times, cpu_times, peaks, loss_value, mode = [], [], [], None, None
    started = time.perf_counter()
    while len(times) < spec["reps"]:
        with meter_factory() as meter:
            c0, t0 = _cpu_seconds(), time.perf_counter()
            loss = f(hidden, weight, labels, eps)
            loss.backward()
            sync()
            times.append(time.perf_counter() - t0)
            cpu_times.append(_cpu_seconds() - c0)
        peaks.append(meter.peak)
        mode = meter.mode
        if loss_value is None:
            loss_value = loss.item()
        del loss
        clear_grads()
        if time.perf_counter() - started >= spec["max_seconds"]:
            break
    return {
        "times": times,
        "cpu_times": cpu_times,
        "peak_bytes": max(peaks),
        "memory_mode": mode,
        "loss": loss_value,
        "threads": torch.get_num_threads(),
    }


# --------------------------------------------------------------------------------------------
# Parent: plan, launch workers, print the table
# --------------------------------------------------------------------------------------------


@dataclass
class Result:
    V: int
    T: int
    method: str
    times: list | None = None
    cpu_times: list | None = None
    peak_bytes: int | None = None
    loss: float | None = None
    memory_mode: str | None = None
    skipped: str | None = None  # reason, when not measured
    load: str = ""

    @property
    def time(self):
        return statistics.median(self.times) if self.times else None

    @property
    def cpu_time(self):
        return statistics.median(self.cpu_times) if self.cpu_times else None


def available_bytes(device: str) -> int:
    if device == "cuda":
        import torch

        free, _total = torch.cuda.mem_get_info()
        return free
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def estimate_bytes(method, V, T, d, args) -> int:
    """Rough peak of one worker process: inputs plus the loss's own peak."""
    elem = 2 if args.dtype == "bf16" else 4
    inputs = (V * d + 2 * T * d) * elem * (2 if args.train_weight else 1)
    if method in MATERIALIZED_METHODS:
        key = "a-naive" if method == "a" and args.materialized == "naive" else method
        logits = T * V * 4  # the losses run in fp32 whatever the input dtype
        return inputs + int(MATERIALIZED_FACTOR[key] * logits)
    chunk = args.chunk_size or max(16, 256 * 2**20 // (4 * V))
    return inputs + 3 * min(chunk, T) * V * 4


def measure(method, V, T, args, budget) -> Result:
    need = estimate_bytes(method, V, T, args.d, args)
    if need > 0.85 * budget:
        return Result(
            V,
            T,
            method,
            skipped=(
                f"estimated {need / 2**30:.1f} GiB > 85% of {budget / 2**30:.1f} GiB available"
            ),
        )
    spec = {
        "method": method,
        "V": V,
        "T": T,
        "d": args.d,
        "dtype": args.dtype,
        "device": args.device,
        "train_weight": args.train_weight,
        "seed": args.seed,
        "reps": args.reps,
        "max_seconds": args.max_seconds,
        "chunk_size": args.chunk_size,
        "materialized": args.materialized,
        "threads": args.threads,
    }
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=False,  # a failed worker is reported in the table
    )
    load = _loadavg()
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        if proc.returncode in (-9, 137):
            why = "killed (likely out of memory)"
        else:
            last = proc.stderr.strip().splitlines()[-1:]
            why = f"worker failed (exit {proc.returncode}): {last}"
        return Result(V, T, method, skipped=why, load=load)
    out = json.loads(lines[-1])
    return Result(
        V,
        T,
        method,
        times=out["times"],
        cpu_times=out["cpu_times"],
        peak_bytes=out["peak_bytes"],
        loss=out["loss"],
        memory_mode=out["memory_mode"],
        load=load,
    )


def _loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return f.read().split()[0]
    except OSError:
        return "?"


def ratio(results, V, T, num, den, attr):
    by = {r.method: r for r in results if r.V == V and r.T == T}
    a, b = by.get(num), by.get(den)
    if a is None or b is None:
        return None
    x, y = getattr(a, attr), getattr(b, attr)
    if not x or not y:
        return None
    return x / y


def fmt_mib(n):
    return "-" if n is None else f"{n / 2**20:,.0f}"


def fmt_time(r: Result):
    if r.times is None:
        return "-"
    spread = f" [{min(r.times):.2f}-{max(r.times):.2f}]" if len(r.times) > 1 else ""
    return f"{r.time:.2f}{spread}"


def render(results, args, configs) -> str:
    """The results table, the ratios and the goals, as markdown."""
    out = []
    out.append(
        "| V | T | method | peak MiB | time s, median [min-max] | CPU s | reps | loss | load |"
    )
    out.append("|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for V, T in configs:
        for r in (r for r in results if r.V == V and r.T == T):
            label = f"{r.method}: {METHODS[r.method]}"
            if r.skipped:
                out.append(f"| {V} | {T} | {label} | skipped: {r.skipped} | | | | | {r.load} |")
                continue
            out.append(
                f"| {V} | {T} | {label} | {fmt_mib(r.peak_bytes)} | {fmt_time(r)} | "
                f"{r.cpu_time:.2f} | {len(r.times)} | {r.loss:.5f} | {r.load} |"
            )
    out.append("")
    out.append("Ratios (same run; time = wall-clock median, CPU = process CPU-time median)")
    out.append("")
    out.append(
        "| V | T | mem d/a | time d/a | time d/e | CPU d/a | CPU d/e | mem d/c | time d/c "
        "| mem f/d | CPU f/d |"
    )
    out.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for V, T in configs:
        cells = [
            ratio(results, V, T, "d", "a", "peak_bytes"),
            ratio(results, V, T, "d", "a", "time"),
            ratio(results, V, T, "d", "e", "time"),
            ratio(results, V, T, "d", "a", "cpu_time"),
            ratio(results, V, T, "d", "e", "cpu_time"),
            ratio(results, V, T, "d", "c", "peak_bytes"),
            ratio(results, V, T, "d", "c", "time"),
            ratio(results, V, T, "f", "d", "peak_bytes"),
            ratio(results, V, T, "f", "d", "cpu_time"),
        ]
        out.append(
            f"| {V} | {T} | " + " | ".join("-" if c is None else f"{c:.3f}" for c in cells) + " |"
        )
    out.append("")
    out.extend(goal_lines(results, args))
    return "\n".join(out)


def goal_lines(results, args):
    """PASS/FAIL of each goal on wall time, with the CPU-time ratio beside it.

    On a machine shared with other work the wall time of one process can stretch by tens of
    percent; its CPU time much less. Both are printed; the verdict is on wall time.
    """
    V, T = GOAL_POINT
    lines = [f"Goals at V={V}, T={T} (reported, not enforced; verdict on wall time):"]

    def verdict(what, num, den, attr, limit, extra=""):
        value = ratio(results, V, T, num, den, attr)
        if value is None:
            return f"- {what}: NOT MEASURED"
        state = "PASS" if value <= limit else "FAIL"
        line = f"- {what}: {value:.3f} (limit {limit}{extra}) -> {state}"
        if attr == "time":
            cpu = ratio(results, V, T, num, den, "cpu_time")
            line += f"; CPU-time ratio {cpu:.3f} -> {'PASS' if cpu <= limit else 'FAIL'}"
        return line

    mem = ratio(results, V, T, "d", "a", "peak_bytes")
    aim = (
        ""
        if mem is None
        else (f"; aim {GOAL_MEMORY_AIM}: {'met' if mem <= GOAL_MEMORY_AIM else 'not met'}")
    )
    lines.append(verdict("peak memory d/a", "d", "a", "peak_bytes", GOAL_MEMORY, aim))
    lines.append(verdict(f"time d/a ({args.device})", "d", "a", "time", GOAL_TIME))
    lines.append(verdict("time d/e (per-token eps overhead)", "d", "e", "time", GOAL_EPS_OVERHEAD))
    by = {r.method: r for r in results if r.V == V and r.T == T and r.times}
    if "d" in by and "e" in by:
        if min(len(by["d"].times), len(by["e"].times)) < 2:
            lines.append("  (one repetition of d or e: its noise is unknown here)")
        else:
            eps = by["d"].time / by["e"].time
            spread = max(_rel_spread(by["d"]), _rel_spread(by["e"]))
            note = (
                "inconclusive, |d/e - 1| is within it"
                if abs(eps - 1) <= spread
                else ("the difference exceeds it")
            )
            lines.append(
                f"  (repetition spread within d and e: up to {100 * spread:.1f}% of the "
                f"median; {note})"
            )
    return lines


def _rel_spread(r: Result) -> float:
    return (max(r.times) - min(r.times)) / r.time


def machine_lines(args):
    import torch
    import transformers

    with open("/proc/meminfo") as f:
        total = int(f.readline().split()[1]) * 1024
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    lines = [
        f"date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        (
            f"machine: {cpu}, {os.cpu_count()} cores, {total / 2**30:.1f} GiB RAM, "
            f"{platform.system()} {platform.release()}; torch {torch.__version__} "
            f"({args.threads or torch.get_num_threads()} threads), "
            f"transformers {transformers.__version__}, Python {platform.python_version()}"
        ),
    ]
    if args.device == "cuda":
        lines.append(f"GPU: {torch.cuda.get_device_name()}")
    return lines


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--d", type=int, default=None, help="hidden size (default 1024 CPU, 4096 CUDA)")
    p.add_argument("--vocab", type=int, nargs="+", default=None, help=f"default {DEFAULT_VOCABS}")
    p.add_argument(
        "--tokens",
        type=int,
        nargs="+",
        default=None,
        help=f"default {DEFAULT_TOKENS} (plus T={GOAL_POINT[1]} at V={GOAL_POINT[0]})",
    )
    p.add_argument(
        "--quick", action="store_true", help=f"only V={GOAL_POINT[0]}, T={GOAL_POINT[1]}"
    )
    p.add_argument("--methods", default="abcdef", help="subset of abcdef (default all)")
    p.add_argument(
        "--materialized",
        choices=("smoothed", "naive"),
        default="smoothed",
        help="method a: smoothed_cross_entropy (default) or the hand-written form",
    )
    p.add_argument("--train-weight", action="store_true", help="weight needs a gradient too")
    p.add_argument("--chunk-size", type=int, default=None, help="ours: tokens per chunk")
    p.add_argument("--reps", type=int, default=3, help="timed repetitions at most (default 3)")
    p.add_argument(
        "--max-seconds",
        type=float,
        default=60.0,
        help="stop repeating a measurement once it has used this long (default 60)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--markdown", type=Path, default=None, help="also write the table here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.d is None:
        args.d = 4096 if args.device == "cuda" else 1024
    bad = set(args.methods) - set(METHODS)
    if bad:
        p.error(f"unknown methods {sorted(bad)}")
    return args


def configs_for(args):
    if args.quick:
        return [GOAL_POINT]
    if args.vocab is None and args.tokens is None:
        grid = {(V, T) for V in DEFAULT_VOCABS for T in DEFAULT_TOKENS} | {GOAL_POINT}
    else:
        grid = {
            (V, T) for V in (args.vocab or DEFAULT_VOCABS) for T in (args.tokens or DEFAULT_TOKENS)
        }
    return sorted(grid)


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(json.loads(args.worker))))
        return
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            sys.exit("--device cuda: CUDA is not available")

    configs = configs_for(args)
    materialized_a = (
        "smoothed_cross_entropy(hidden @ weight.T, labels, eps_t)"
        if args.materialized == "smoothed"
        else "naive: logp = logits.log_softmax(-1); -(1-eps)*logp_y - eps*logp.mean(-1)"
    )
    header = [
        f"command: python {' '.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}",
        *machine_lines(args),
        (
            f"device {args.device}, dtype {args.dtype}, d={args.d}, weight "
            f"{'trained (needs grad)' if args.train_weight else 'frozen (LoRA case)'}, "
            f"{int(IGNORE_FRACTION * 100)}% labels = -100, eps_t ~ U[0, {EPS_MAX}]"
        ),
        f"method a = {materialized_a}",
        f"ours: chunk_size = {args.chunk_size or 'default (256 MiB of fp32 logits per chunk)'}",
        (
            f"time = forward + backward, median over up to {args.reps} reps (stopping after "
            f"{args.max_seconds:g} s) after a {WARMUP_TOKENS}-token warm-up; one process per row"
        ),
        (
            "CPU s = user+system CPU time of the worker process during the timed call (median; "
            "less sensitive than wall time to other programs sharing the cores)"
        ),
        (
            "peak MiB = peak RSS growth of the worker during forward+backward (CPU: VmHWM reset "
            "via /proc/self/clear_refs) or max_memory_allocated growth (CUDA); "
            "load = 1-min load average after the row"
        ),
    ]
    print(f"{TITLE}\n\n" + "\n".join(header), flush=True)

    results = []
    for V, T in configs:
        for method in args.methods:
            budget = available_bytes(args.device)
            r = measure(method, V, T, args, budget)
            results.append(r)
            status = r.skipped or (
                f"peak {fmt_mib(r.peak_bytes)} MiB, time {fmt_time(r)} s, CPU {r.cpu_time:.2f} s, "
                f"loss {r.loss:.5f} [{r.memory_mode}]"
            )
            print(f"V={V} T={T} {method}: {status}", flush=True)

    table = render(results, args, configs)
    print("\n" + table, flush=True)
    if args.markdown:
        settings = "\n".join(header)
        args.markdown.write_text(f"# {TITLE}\n\n```text\n{settings}\n```\n\n{table}\n")
        print(f"\nwrote {args.markdown}")


if __name__ == "__main__":
    main()
