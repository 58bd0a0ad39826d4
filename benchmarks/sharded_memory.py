"""Peak memory of one training step under FSDP2 (2 processes, CPU, gloo): fused loss vs logits.

A small Llama with a realistic output layer (V = 128256 rows, Llama 3's vocabulary; d = 256,
2 layers) is sharded with torch's `fully_shard` (each decoder layer, then the root) across two
processes, and each rank runs one forward + backward on its own T-token sequence with UAL's
smoothed loss (per-sample epsilon, instruction tokens at their own weight):

  fused   the loss inside the output head's call (`OutputHead.reduce_in_forward` +
          `linear_token_loss`), as `UALTrainer` does: the head's weight is gathered for that
          call, the (T, V) logits never exist
  logits  the model's own logits and `token_loss_from_logits` (what UAL did under sharding
          before, and what any loss on `outputs.logits` does)

Each path runs in its own `torchrun`, so one path's memory never counts in the other's. Per
rank: the peak resident-memory growth during forward + backward (the kernel's high-water mark,
reset just before, as in `loss_benchmark.py`), the largest tensor any operation produced, and
the loss (both paths must agree).

    python benchmarks/sharded_memory.py                    # T = 2048 tokens per rank
    python benchmarks/sharded_memory.py --tokens 4096      # about 6 GB per rank for `logits`
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS.parent))
sys.path.insert(0, str(BENCHMARKS))

from memory import CpuPeakMemory, LargestTensor  # noqa: E402

from axolotl_ual.toolkit import REPO, console_script, offline_env  # noqa: E402


def worker(args) -> None:
    import torch
    import torch.distributed as dist
    import transformers
    from torch.distributed.fsdp import fully_shard

    from axolotl_ual.columns import INSTRUCTION, SEGMENT, UNCERTAINTY
    from axolotl_ual.loss import linear_token_loss, token_loss_from_logits
    from axolotl_ual.mapping import UncertaintyToEpsilon
    from axolotl_ual.objectives import PredictionBatch, SmoothedSFT
    from axolotl_ual.output_head import find_output_head

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=2 * args.hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=args.tokens,
    )
    model = transformers.LlamaForCausalLM(config)
    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)

    g = torch.Generator().manual_seed(1 + rank)
    ids = torch.randint(0, args.vocab, (1, args.tokens), generator=g)
    labels = ids.clone()
    labels[:, : args.tokens // 4] = -100  # a prompt
    instruction = torch.zeros_like(ids, dtype=torch.bool)
    instruction[:, args.tokens // 8 : args.tokens // 4] = True  # half of it trained
    labels[instruction] = ids[instruction]
    columns = {
        UNCERTAINTY.name: torch.full(ids.shape, 0.3 + 0.4 * rank),
        INSTRUCTION.name: instruction,
        SEGMENT.name: torch.zeros_like(ids),
    }
    objective = SmoothedSFT(
        UncertaintyToEpsilon("linear", 0.0, 0.2), instruction_weight=0.5, instruction_smoothing=0.0
    )
    batch = PredictionBatch.shifted(labels, columns)
    terms = objective.terms(batch)
    normalizer = torch.as_tensor(objective.normalizer(batch), dtype=torch.float64)
    dist.all_reduce(normalizer)
    head = find_output_head(model)

    def step():
        if args.path == "logits":
            total = token_loss_from_logits(model(input_ids=ids).logits, batch.labels, terms).loss
        else:

            def reduce(hidden, weight, bias):
                return linear_token_loss(hidden, weight, batch.labels, terms, bias=bias)

            with head.reduce_in_forward(reduce) as results:
                out = model(input_ids=ids)
            total = results[0].loss + out.logits.sum()
        loss = total / normalizer.to(total.dtype)
        (loss * dist.get_world_size()).backward()
        return loss

    memory, largest = CpuPeakMemory(), LargestTensor()
    start = time.perf_counter()
    with memory, largest:
        loss = step()
    seconds = time.perf_counter() - start
    total = loss.detach().clone()
    dist.all_reduce(total)
    record = {
        "rank": rank,
        "peak_mib": memory.peak / 2**20,
        "peak_mode": memory.mode,
        "largest_tensor_mib": largest.numel * 4 / 2**20,
        "logits_mib": args.tokens * args.vocab * 4 / 2**20,
        "loss": total.item(),
        "seconds": seconds,
    }
    records = [None] * dist.get_world_size()
    dist.all_gather_object(records, record)
    if rank == 0:
        Path(args.out).write_text(json.dumps(records))
    dist.destroy_process_group()


def run_path(path: str, args) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "records.json"
        command = [
            console_script("torchrun"),
            *("--nproc_per_node", "2", str(Path(__file__).resolve()), "--worker"),
            *("--path", path, "--out", str(out)),
            *("--vocab", str(args.vocab), "--hidden", str(args.hidden)),
            *("--tokens", str(args.tokens)),
        ]
        env = offline_env(OMP_NUM_THREADS="1")
        result = subprocess.run(
            command, cwd=REPO, env=env, text=True, capture_output=True, check=False
        )
        if result.returncode != 0:
            sys.exit(f"the {path} run failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
        return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--vocab", type=int, default=128256)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--tokens", type=int, default=2048, help="tokens per rank")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--path", choices=("fused", "logits"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    import torch

    print(
        f"FSDP2 (fully_shard) on 2 CPU processes (gloo), torch {torch.__version__}; "
        f"V={args.vocab}, d={args.hidden}, 2 layers, T={args.tokens} tokens per rank, fp32; "
        f"one sequence's logits = {args.tokens * args.vocab * 4 / 2**20:,.0f} MiB; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    results = {path: run_path(path, args) for path in ("fused", "logits")}
    print()
    print("| loss path | rank | peak memory growth | largest tensor | loss | step s |")
    print("|---|---:|---:|---:|---:|---:|")
    for path, records in results.items():
        for r in records:
            print(
                f"| {path} | {r['rank']} | {r['peak_mib']:,.0f} MiB | "
                f"{r['largest_tensor_mib']:,.0f} MiB | {r['loss']:.6f} | {r['seconds']:.1f} |"
            )
    fused = max(r["peak_mib"] for r in results["fused"])
    logits = max(r["peak_mib"] for r in results["logits"])
    same = abs(results["fused"][0]["loss"] - results["logits"][0]["loss"])
    print(
        f"\npeak fused / logits = {fused / logits:.3f} (largest rank each); "
        f"|loss difference| = {same:.2e}; peak measured by {results['fused'][0]['peak_mode']}"
    )


if __name__ == "__main__":
    main()
