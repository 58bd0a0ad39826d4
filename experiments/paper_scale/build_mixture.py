"""Build the paper-scale training mixture: open-ended chat (high entropy) + MetaMathQA (low entropy).

    python experiments/paper_scale/build_mixture.py --chat 20000 --math 20000 -o mixture.jsonl

The UAL paper's "mixed scenario" trains one model on open-ended instructions together with
MetaMath-style math. Public stand-ins, both in alpaca form (`instruction`, `input`, `output`):

- high entropy: `vicgalle/alpaca-gpt4` (52k instructions answered by GPT-4);
- low entropy: `meta-math/MetaMathQA` (395k GSM8K/MATH-derived problems, each response ending
  in "The answer is: X"), mapped as instruction = query, output = response.

Rows are sampled without replacement with a fixed seed and shuffled together; each keeps a
`source` column so that per-source statistics of the judge's scores can be checked later
(`axolotl-ual inspect`). Needs the Hugging Face hub (run on the GPU machine).
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Iterable
from pathlib import Path

CHAT = ("vicgalle/alpaca-gpt4", "train")
MATH = ("meta-math/MetaMathQA", "train")


def chat_row(row: dict) -> dict:
    return {
        "instruction": row["instruction"],
        "input": row.get("input") or "",
        "output": row["output"],
        "source": "alpaca-gpt4",
    }


def math_row(row: dict) -> dict:
    return {
        "instruction": row["query"],
        "input": "",
        "output": row["response"],
        "source": f"metamath/{row.get('type', '')}".rstrip("/"),
    }


def mix(
    chat: Iterable[dict], math: Iterable[dict], n_chat: int, n_math: int, seed: int
) -> list[dict]:
    """`n_chat` chat rows and `n_math` math rows (without replacement), shuffled together."""
    rng = random.Random(f"paper-scale mixture {seed}")
    chat, math = [chat_row(r) for r in chat], [math_row(r) for r in math]
    if n_chat > len(chat) or n_math > len(math):
        raise SystemExit(
            f"asked for {n_chat} chat / {n_math} math rows; the sources hold "
            f"{len(chat)} / {len(math)}"
        )
    rows = rng.sample(chat, n_chat) + rng.sample(math, n_math)
    rng.shuffle(rows)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chat", type=int, default=20000, help="rows of open-ended chat")
    parser.add_argument("--math", type=int, default=20000, help="rows of MetaMathQA")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)

    from datasets import load_dataset

    rows = mix(
        load_dataset(CHAT[0], split=CHAT[1]),
        load_dataset(MATH[0], split=MATH[1]),
        args.chat,
        args.math,
        args.seed,
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    print(f"wrote {len(rows)} rows ({args.chat} chat, {args.math} math) to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
