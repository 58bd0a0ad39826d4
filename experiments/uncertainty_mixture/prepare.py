"""Everything an arm trains on: the data splits, the shared base model and the axolotl configs.

Fixed by design, before any result was seen (see experiments/README.md, "Protocol"):

- one base model (random init, seed 0) for every arm and seed, so arms differ only in the loss;
- one held-out test split for every seed, and a separate split for the judge;
- per seed s, its own training split (the data seed) and `seed: s` in axolotl (the data order);
- the arms' smoothing settings in `ARMS`.
"""

from __future__ import annotations

from pathlib import Path

from ..harness.runner import Arm
from .tasks import H_MAX as H_MAX  # u = H / H_MAX, recorded in results.json
from .tasks import HIGH_TASKS, LOW_TASKS, TASKS, make_split

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "config_template.yml"

# rows per task: equal totals of low- and high-entropy rows (3 x 150 = 6 x 75 = 450)
TRAIN_PER_TASK = {**dict.fromkeys(LOW_TASKS, 150), **dict.fromkeys(HIGH_TASKS, 75)}
TEST_PER_TASK = {**dict.fromkeys(LOW_TASKS, 100), **dict.fromkeys(HIGH_TASKS, 50)}
TOKENIZER_PER_TASK = dict.fromkeys(TASKS, 100)

MODEL = {"vocab_size": 512, "hidden_size": 128, "num_layers": 2, "num_heads": 4, "seed": 0}


ARMS = {
    arm.name: arm
    for arm in (
        # plain SFT through the plugin: epsilon 0 everywhere is exactly axolotl's SFT loss
        Arm("sft", "SFT", {"ual_uncertainty_source": "field", "ual_smoothing_max": 0.0}),
        # the paper's fixed label-smoothing baseline
        Arm("ls", "fixed LS 0.1", {"ual_uncertainty_source": "constant", "ual_smoothing_max": 0.1}),
        # UAL with the true uncertainty: eps = 0.2 * H / H_MAX
        Arm(
            "ual_known",
            "UAL, known u",
            {"ual_uncertainty_source": "field", "ual_smoothing_max": 0.2, "ual_mapping": "linear"},
        ),
        # UAL with the judge's entropy score; its scale (nats / log V) is arbitrary, so the
        # package's scale-free mapping (each sample's rank quantile) spreads it over [0, 0.2]
        Arm(
            "ual_elicited",
            "UAL, elicited u",
            {"ual_uncertainty_source": "field", "ual_smoothing_max": 0.2, "ual_mapping": "rank"},
            data="elicited",
        ),
    )
}
JUDGE = Arm("judge", "judge (SFT)", ARMS["sft"].keys)


def build_base_model(out_dir: Path) -> Path:
    """The shared random-init tiny Llama, with a BPE tokenizer fitted to the task mixture.

    The tokenizer corpus is its own seeded split (plus every possible answer), so the model and
    its vocabulary are the same whichever seeds a run trains.
    """
    from axolotl_ual.tiny_model import build_tiny_model

    corpus = [
        m["content"] for r in make_split("tokenizer", TOKENIZER_PER_TASK) for m in r["messages"]
    ]
    corpus += [
        y for task in TASKS.values() for _, responses, _ in task.contents() for y in responses
    ]
    return build_tiny_model(out_dir, corpus, **MODEL)
