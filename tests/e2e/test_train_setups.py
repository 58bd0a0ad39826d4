"""`axolotl train` end to end in the setups users run: data parallel, QLoRA, the demo."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from axolotl_ual.toolkit import console_script
from tests.reference import axolotl_tokenized, read_jsonl, smoothed_loss_reference
from tests.support import (
    LORA_ON_CPU,
    SAMPLE_CHAT,
    log_history,
    run_axolotl,
    run_command,
    train,
    ual_config,
    write_config,
)

pytestmark = pytest.mark.e2e


def test_two_process_data_parallel_matches_single_process_reference(
    tiny_model, tiny_tokenizer, tmp_path
):
    """2 ranks x 27 rows (gloo on CPU) = all 54 rows in one step: the same loss as one process.

    Each rank normalizes by the token count of the *global* batch; averaging per-rank means
    instead would give a different number, since the ranks hold different token counts.
    """
    # 27 per rank: accelerate would fill an uneven last batch by repeating samples
    cfg = ual_config(tiny_model, tmp_path, max_steps=1, micro_batch_size=27)
    launcher = [
        console_script("accelerate"),
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "axolotl.cli.train",
    ]
    result = run_axolotl(
        "train",
        write_config(tmp_path / "cfg.yml", cfg),
        launcher=launcher,
        env={"ACCELERATE_USE_CPU": "1"},  # accelerate: a CPU process group (gloo), not CUDA
    )
    assert result.returncode == 0, result.stdout[-6000:]
    logged = next(r for r in log_history(tmp_path / "out") if "loss" in r)
    assert json.loads((tmp_path / "out" / "ual_run.json").read_text())["world_size"] == 2

    rows = read_jsonl(SAMPLE_CHAT)
    expected, expected_eps = smoothed_loss_reference(
        tiny_model, axolotl_tokenized(tiny_tokenizer, rows), [0.2 * r["uncertainty"] for r in rows]
    )
    assert logged["loss"] == pytest.approx(expected, rel=1e-6)
    assert logged["ual_epsilon_mean"] == pytest.approx(expected_eps, abs=1e-6)


def test_qlora_packing_checkpointing_and_eval_split(tiny_model, tmp_path):
    """QLoRA with packing, gradient checkpointing, an eval split and instruction tokens at
    their own weight (Instruction Modelling): what a 24 GB GPU user runs."""
    cfg = ual_config(
        tiny_model,
        tmp_path,
        max_steps=2,
        sample_packing=True,
        micro_batch_size=1,
        sequence_len=512,
        adapter="qlora",
        load_in_4bit=True,
        **LORA_ON_CPU,
        gradient_checkpointing=True,
        val_set_size=0.2,
        eval_steps=1,
        train_on_inputs=True,
        ual_instruction_weight=0.5,
    )
    records = train(write_config(tmp_path / "cfg.yml", cfg))
    run = json.loads((tmp_path / "out" / "ual_run.json").read_text())
    # the tiny Llama has 2 layers x 7 projections, all quantized to bitsandbytes 4-bit
    assert run["linear_4bit_layers"] == 14
    assert run["loss_path"] == "fused"
    assert 0 < run["trainable_parameters"] < 50_000  # LoRA only: the tiny model has ~150k
    assert (tmp_path / "out" / "adapter_model.safetensors").exists()

    train_logs = [r for r in records if "loss" in r]
    assert len(train_logs) == 2 and all(0 < r["ual_epsilon_mean"] < 0.2 for r in train_logs)
    assert all(0 < r["ual_instruction_fraction"] < 1 for r in train_logs)
    evals = [r for r in records if "eval_loss" in r]
    assert evals, "no evaluation was logged"
    last = evals[-1]
    buckets = ("low", "mid", "high")
    tokens = [last[f"eval_ual_tokens_{b}"] for b in buckets]
    assert sum(tokens) == last["eval_ual_tokens"] > 0
    # the overall NLL is the token-weighted mean of the buckets' NLLs
    weighted = sum(
        last[f"eval_ual_nll_{b}"] * n for b, n in zip(buckets, tokens, strict=True) if n
    ) / sum(tokens)
    assert last["eval_ual_nll"] == pytest.approx(weighted, rel=1e-3)
    # and split into instruction and response tokens, which add up the same way
    kinds = {k: last[f"eval_ual_tokens_{k}"] for k in ("instruction", "response")}
    assert all(kinds.values()) and sum(kinds.values()) == last["eval_ual_tokens"]
    by_kind = sum(last[f"eval_ual_nll_{k}"] * n for k, n in kinds.items()) / sum(kinds.values())
    assert last["eval_ual_nll"] == pytest.approx(by_kind, rel=1e-3)


def test_demo_command(tmp_path):
    """The README's main command, on the embedded default (tiny model, bundled data, CPU)."""
    import matplotlib.image

    from axolotl_ual.compat import logged_metrics

    workdir = tmp_path / "demo"
    result = run_command([console_script("axolotl-ual"), "demo", "--workdir", str(workdir)])
    assert result.returncode == 0, result.stdout[-6000:]
    out = result.stdout.splitlines()

    # one line on what is trained, one on where the log is
    described = next(line for line in out if line.startswith("Training a tiny Llama ("))
    for part in ("on 54 chat rows", "for 3 epochs", "eps = 0.2 * u per row"):
        assert part in described
    log_line = next(line for line in out if line.startswith("Full log: "))
    log = Path(log_line.removeprefix("Full log: ").split(" (")[0])
    assert log == workdir / "train.log" and log.is_file()
    assert "[axolotl.cli.config]" not in result.stdout and "torchao" not in result.stdout

    # progress as it trains: stamped when each line arrived, all before the summary
    def stamped(pattern: str) -> list[tuple[int, int]]:  # (line index, seconds)
        return [
            (i, int(m[1]))
            for i, line in enumerate(out)
            if (m := re.match(rf"\[\s*(\d+)s\] {pattern}", line))
        ]

    steps, evals = stamped(r"step\s+\d+/9  loss "), stamped(r"eval at step \d+/9: loss ")
    finished = next(i for i, line in enumerate(out) if line.startswith("UAL demo finished in"))
    assert len(steps) == 9 and len(evals) >= 2
    assert max(i for i, _ in steps + evals) < finished
    # streamed, not printed at exit: the step count was known well before the last step
    [(_, planned)] = stamped("axolotl: 9 optimizer steps")
    assert planned < steps[-1][1]

    # the summary explains the bucketed NLLs and points at the plot
    assert any(line.startswith("  eval_ual_nll_low/mid/high: the unsmoothed NLL") for line in out)
    plot_line = next(line for line in out if line.startswith("  plot: "))
    png = Path(plot_line.removeprefix("  plot: ").split(" (")[0])
    assert png == workdir / "ual_demo.png"
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert matplotlib.image.imread(png).ndim == 3

    records = logged_metrics(log.read_text())
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) >= 3 and losses[-1] < losses[0]  # it learns
    assert any("eval_ual_nll_high" in r for r in records)
