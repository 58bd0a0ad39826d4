"""The paper-scale recipe (not run here: it needs a GPU and the hub) is at least consistent:
its configs pass axolotl's validation and differ only in the arm's keys, its GSM8K task prompts
exactly like the training data, and its mixture builder and table collector do what they say."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from experiments.paper_scale import build_mixture, collect
from tests.support import REPO, SAMPLE_ALPACA
from tests.test_config import validate

PAPER = REPO / "experiments" / "paper_scale"
CONFIGS = {p.stem: yaml.safe_load(p.read_text()) for p in sorted((PAPER / "configs").glob("*.yml"))}


def test_the_three_arms_exist_and_differ_only_in_their_ual_keys():
    assert set(CONFIGS) == {"sft", "fixed_ls", "ual"}
    ual = CONFIGS["ual"]
    for name, cfg in CONFIGS.items():
        differing = {k for k in set(cfg) | set(ual) if cfg.get(k) != ual.get(k)}
        assert differing <= {"ual_uncertainty_source", "ual_smoothing_max", "output_dir"}, name
        assert cfg["output_dir"].endswith(f"/{name}")
    assert CONFIGS["sft"]["ual_smoothing_max"] == 0.0
    assert CONFIGS["fixed_ls"]["ual_uncertainty_source"] == "constant"
    assert CONFIGS["fixed_ls"]["ual_smoothing_max"] == 0.1
    assert ual["adapter"] == "lora" and ual["datasets"][0]["type"] == "axolotl_ual.alpaca"


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_configs_pass_axolotls_validation(tiny_model, name):
    cfg = dict(CONFIGS[name])
    cfg["datasets"] = [dict(d, path=str(SAMPLE_ALPACA)) for d in cfg["datasets"]]
    cfg.pop("base_model")
    validated = validate(tiny_model, **cfg)
    assert validated.ual_smoothing_max == CONFIGS[name]["ual_smoothing_max"]


def test_gsm8k_task_prompts_like_the_training_data():
    """The harness asks each question in exactly the prompt `type: axolotl_ual.alpaca` trains."""
    from axolotl.prompters import AlpacaPrompter
    from lm_eval.tasks import TaskManager
    from lm_eval.utils import apply_template

    task = yaml.safe_load((PAPER / "lm_eval_tasks" / "gsm8k_ual_alpaca.yaml").read_text())
    question = "Tom has 3 apples and buys 4 more. How many apples does he have?"
    rendered = apply_template(task["doc_to_text"], {"question": question})  # as the harness does
    assert rendered == "".join(AlpacaPrompter().build_prompt(question))
    assert task["task"] == collect.TASK
    assert collect.TASK in TaskManager(include_path=str(PAPER / "lm_eval_tasks")).all_tasks


def test_mixture_is_seeded_and_maps_both_sources():
    chat = [{"instruction": f"write {i}", "input": "", "output": f"text {i}"} for i in range(50)]
    math = [
        {"query": f"{i} + 1?", "response": f"The answer is: {i + 1}", "type": "GSM_AnsAug"}
        for i in range(80)
    ]
    rows = build_mixture.mix(chat, math, 10, 20, seed=0)
    assert rows == build_mixture.mix(chat, math, 10, 20, seed=0)
    assert rows != build_mixture.mix(chat, math, 10, 20, seed=1)
    sources = [r["source"] for r in rows]
    assert sources.count("alpaca-gpt4") == 10 and sources.count("metamath/GSM_AnsAug") == 20
    assert len({r["instruction"] for r in rows}) == 30  # without replacement
    for r in rows:
        assert set(r) == {"instruction", "input", "output", "source"}
        if r["source"].startswith("metamath"):
            assert r["output"] == f"The answer is: {int(r['instruction'].split()[0]) + 1}"
    with pytest.raises(SystemExit):
        build_mixture.mix(chat, math, 51, 0, seed=0)


def test_collect_reads_the_newest_harness_result_per_arm(tmp_path: Path):
    def write(arm, stamp, value):
        path = tmp_path / arm / "model__name" / f"results_{stamp}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        metrics = {
            f"exact_match,{collect.FILTER}": value,
            f"exact_match_stderr,{collect.FILTER}": 0.01,
        }
        path.write_text(json.dumps({"results": {collect.TASK: metrics}}))

    write("sft", "2024-01-01T00-00-00", 0.60)
    write("ual", "2024-01-01T00-00-00", 0.10)  # an older run of the same arm: ignored
    write("ual", "2024-02-01T00-00-00", 0.625)
    text = collect.table(tmp_path)
    assert "| SFT | 60.00 ± 1.00 |  |" in text
    assert "| UAL | 62.50 ± 1.00 | +2.50 | +1.81" in text
    assert "| fixed LS 0.1 | not run |" in text
