"""`python -m axolotl_ual.phases.tiny [FOLDER]`: the tiny model of the tiny CPU recipe.

Builds a tiny Llama and a BPE tokenizer trained on the recipe's data (`example_configs/lab/data`
by default) into FOLDER (default `example_configs/lab/tiny-model`, where
`tiny_cpu_base.yml` looks for it), with no download. Does nothing if the model is already there.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..toolkit import REPO

LAB = REPO / "example_configs" / "lab"


def build(folder: Path, data: Path) -> Path:
    from ..tiny_model import build_tiny_model, corpus_from_jsonl

    if (folder / "config.json").exists():
        return folder
    files = sorted(Path(data).glob("*.jsonl"))
    if not files:
        raise SystemExit(f"no .jsonl files in {data} to train the tokenizer on")
    corpus = [text for path in files for text in corpus_from_jsonl(path)]
    return build_tiny_model(folder, corpus)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m axolotl_ual.phases.tiny", description=__doc__)
    parser.add_argument("folder", nargs="?", default=str(LAB / "tiny-model"))
    parser.add_argument("--data", default=str(LAB / "data"), help="the .jsonl files to learn from")
    args = parser.parse_args(argv)
    print(build(Path(args.folder), Path(args.data)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
