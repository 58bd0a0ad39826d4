"""Peak memory of real `axolotl train` steps with a 128k vocabulary: fused loss vs logits.

Builds a small Llama whose output layer has V = 128256 rows (Llama 3's vocabulary; the
tokenizer is the tiny local one, so only the output width is realistic), packs the bundled
sample data into 4096-token sequences, and runs the same `axolotl train` twice with UAL:
`ual_fused_loss: true` (the default: the logits are never built) and `false` (the model's
own logits). Each run is a separate process; its peak resident memory is read by GNU time
(`%M`, kilobytes), so it includes everything the process held: weights, activations,
optimizer states and the loss. Printed side by side.

    python benchmarks/train_step_memory.py                 # LoRA, 2 steps, T=4096, d=256
    python benchmarks/train_step_memory.py --full          # full fine-tuning (lm_head trained too)

CPU by default (what this machine has); on a GPU machine pass `--gpu` to read peak CUDA
memory from the trainer's own log (`memory/max_allocated`) instead.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from axolotl_ual.compat import logged_metrics
from axolotl_ual.tiny_model import build_tiny_tokenizer, corpus_from_jsonl
from axolotl_ual.toolkit import DATA

SAMPLE = DATA / "sample_chat.jsonl"


def build_model(out_dir: Path, vocab: int, hidden: int, layers: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tiny_tokenizer(corpus_from_jsonl(SAMPLE))
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=8192,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def write_data(path: Path, copies: int) -> None:
    rows = SAMPLE.read_text().splitlines()
    path.write_text("\n".join(rows * copies) + "\n")


def config(model: Path, data: Path, workdir: Path, *, fused: bool, args) -> Path:
    cfg = {
        "base_model": str(model),
        "plugins": ["axolotl_ual.UALPlugin"],
        "ual_fused_loss": fused,
        "datasets": [{"path": str(data), "type": "axolotl_ual.chat_template"}],
        "chat_template": "tokenizer_default",
        "sequence_len": args.seq_len,
        "sample_packing": True,
        "micro_batch_size": 1,
        "gradient_accumulation_steps": 1,
        "max_steps": args.steps,
        "learning_rate": 1e-4,
        "optimizer": "adamw_torch",
        "logging_steps": 1,
        "save_strategy": "no",
        "output_dir": str(workdir / "out"),
        "dataset_prepared_path": str(workdir / "prepared"),
        "bf16": "auto" if args.gpu else False,
        "fp16": False,
        "tf32": False,
        "attn_implementation": "sdpa",
        "dataset_num_proc": 1,
    }
    if not args.full:
        cfg.update(
            adapter="lora",
            lora_r=8,
            lora_alpha=16,
            lora_target_linear=True,
            lora_mlp_kernel=False,
            lora_qkv_kernel=False,
            lora_o_kernel=False,
        )
    path = workdir / "cfg.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run(cfg: Path, gpu: bool) -> dict:
    from axolotl_ual.toolkit import console_script, offline_env

    env = offline_env()
    axolotl = console_script("axolotl")
    start = time.perf_counter()
    result = subprocess.run(
        ["/usr/bin/time", "-f", "PEAK_RSS_KB=%M", axolotl, "train", str(cfg)],
        cwd=cfg.parent,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"axolotl train failed:\n{result.stdout[-4000:]}")
    peak_kb = int(result.stdout.rsplit("PEAK_RSS_KB=", 1)[1].split()[0])
    logs = [r for r in logged_metrics(result.stdout) if "loss" in r]
    record = json.loads((cfg.parent / "out" / "ual_run.json").read_text())
    out = {
        "peak_rss_gib": peak_kb / 2**20,
        "seconds": elapsed,
        "loss": logs[0]["loss"],
        "loss_path": record["loss_path"],
    }
    if gpu:
        out["cuda_max_allocated_gib"] = max(r.get("memory/max_allocated (GiB)", 0) for r in logs)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--vocab", type=int, default=128256)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    parser.add_argument("--gpu", action="store_true", help="read CUDA peak memory from the log")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="ual-memory-"))
    try:
        build_model(workdir / "model", args.vocab, args.hidden, args.layers)
        write_data(workdir / "data.jsonl", copies=8)  # enough rows for a few full 4096-token packs
        results = {}
        for fused in (True, False):
            arm = workdir / ("fused" if fused else "logits")
            arm.mkdir()
            results[fused] = run(
                config(workdir / "model", workdir / "data.jsonl", arm, fused=fused, args=args),
                args.gpu,
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    mode = "full fine-tuning" if args.full else "LoRA"
    print(
        f"axolotl train, {mode}, V={args.vocab}, d={args.hidden}, {args.layers} layers, "
        f"T={args.seq_len} (packed), {args.steps} steps, {'GPU' if args.gpu else 'CPU'}"
    )
    print(
        f"{'loss path':<10} {'peak RSS GiB':>13} {'CUDA peak GiB':>14} {'first loss':>11} {'wall s':>7}"
    )
    for fused in (True, False):
        r = results[fused]
        cuda = f"{r['cuda_max_allocated_gib']:.2f}" if "cuda_max_allocated_gib" in r else "-"
        print(
            f"{r['loss_path']:<10} {r['peak_rss_gib']:>13.2f} {cuda:>14} {r['loss']:>11.4f} {r['seconds']:>7.1f}"
        )
    saved = results[False]["peak_rss_gib"] - results[True]["peak_rss_gib"]
    print(
        f"fused saves {saved:.2f} GiB of peak memory ({saved / results[False]['peak_rss_gib']:.0%}); "
        f"the fp32 logits of one sequence alone are {args.seq_len * args.vocab * 4 / 2**30:.2f} GiB"
    )


if __name__ == "__main__":
    main()
