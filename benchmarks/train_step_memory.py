"""Peak memory of real `axolotl train` steps with a 128k vocabulary: UAL's loss paths and plain SFT.

Builds a small Llama whose output layer has V = 128256 rows (Llama 3's vocabulary; the
tokenizer is the tiny local one, so only the output width is realistic), packs the bundled
sample data into 4096-token sequences, and runs the same `axolotl train` four times:

  fused          UAL, `ual_fused_loss: true` (the default: the logits are never built)
  fused + IM     the same with Instruction Modelling's terms: `train_on_inputs: true`,
                 instruction tokens at weight 0.5 and their own smoothing 0.05
  logits         UAL, `ual_fused_loss: false` (the model's own logits)
  plain SFT      axolotl without the plugin (`type: chat_template`): its own loss, no smoothing

Each run is a separate process; its peak resident memory is read by GNU time (`%M`,
kilobytes), so it includes everything the process held: weights, activations, optimizer states
and the loss. Printed side by side. The first losses differ by design (UAL smooths, plain SFT
does not; IM trains the instruction tokens too).

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


# what each arm adds to the common config
ARMS = {
    "fused": {"plugins": ["axolotl_ual.UALPlugin"], "ual_fused_loss": True},
    "fused + IM": {
        "plugins": ["axolotl_ual.UALPlugin"],
        "ual_fused_loss": True,
        "train_on_inputs": True,
        "ual_instruction_weight": 0.5,
        "ual_instruction_smoothing": 0.05,
    },
    "logits": {"plugins": ["axolotl_ual.UALPlugin"], "ual_fused_loss": False},
    "plain SFT": {},
}


def config(model: Path, data: Path, workdir: Path, *, arm: str, args) -> Path:
    ual = "plugins" in ARMS[arm]
    cfg = {
        "base_model": str(model),
        **ARMS[arm],
        "datasets": [
            {"path": str(data), "type": "axolotl_ual.chat_template" if ual else "chat_template"}
        ],
        "chat_template": "tokenizer_default",
        "sequence_len": args.seq_len,
        "sample_packing": True,
        "micro_batch_size": 1,
        "gradient_accumulation_steps": 1,
        "max_steps": args.steps,
        "learning_rate": 1e-4,
        "optimizer": "adamw_torch",
        "logging_steps": 1,
        # one checkpoint at the end: its trainer_state.json has the losses at full precision
        # (the console shows 4 digits)
        "save_strategy": "steps",
        "save_steps": args.steps,
        "save_only_model": True,
        "output_dir": str(workdir / "out"),
        "dataset_prepared_path": str(workdir / "prepared"),
        "bf16": "auto" if args.gpu else False,
        "fp16": False,
        "tf32": False,
        "attn_implementation": "sdpa",
        "dataset_num_proc": 1,
        "seed": 0,
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
    record = cfg.parent / "out" / "ual_run.json"  # written by the plugin only
    out = {
        "peak_rss_gib": peak_kb / 2**20,
        "seconds": elapsed,
        "loss": first_loss(cfg.parent / "out"),
        "loss_path": json.loads(record.read_text())["loss_path"] if record.exists() else "axolotl",
    }
    if gpu:
        out["cuda_max_allocated_gib"] = max(r.get("memory/max_allocated (GiB)", 0) for r in logs)
    return out


def first_loss(output_dir: Path) -> float:
    (state,) = output_dir.glob("checkpoint-*/trainer_state.json")
    return next(r["loss"] for r in json.loads(state.read_text())["log_history"] if "loss" in r)


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
        for number, arm in enumerate(ARMS):
            folder = workdir / f"arm{number}"
            folder.mkdir()
            cfg = config(workdir / "model", workdir / "data.jsonl", folder, arm=arm, args=args)
            results[arm] = run(cfg, args.gpu)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    mode = "full fine-tuning" if args.full else "LoRA"
    print(
        f"axolotl train, {mode}, V={args.vocab}, d={args.hidden}, {args.layers} layers, "
        f"T={args.seq_len} (packed), {args.steps} steps, {'GPU' if args.gpu else 'CPU'}"
    )
    print("| arm | loss path | peak RSS GiB | CUDA peak GiB | first loss | wall s |")
    print("|---|---|---:|---:|---:|---:|")
    for arm, r in results.items():
        cuda = f"{r['cuda_max_allocated_gib']:.2f}" if "cuda_max_allocated_gib" in r else "-"
        print(
            f"| {arm} | {r['loss_path']} | {r['peak_rss_gib']:.2f} | {cuda} | {r['loss']:.6f} "
            f"| {r['seconds']:.1f} |"
        )
    fused, logits = results["fused"]["peak_rss_gib"], results["logits"]["peak_rss_gib"]
    print(
        f"fused saves {logits - fused:.2f} GiB of peak memory ({(logits - fused) / logits:.0%}) "
        f"against the logits path and {results['plain SFT']['peak_rss_gib'] - fused:.2f} GiB "
        f"against plain SFT; the instruction terms add "
        f"{results['fused + IM']['peak_rss_gib'] - fused:+.2f} GiB; the fp32 logits of one "
        f"sequence alone are {args.seq_len * args.vocab * 4 / 2**30:.2f} GiB"
    )


if __name__ == "__main__":
    main()
