"""Everything an arm trains on: the data splits, the shared base model and the axolotl configs.

Fixed before any run of this experiment (see experiments/README.md, "Instruction Modelling"):

- the tasks and split sizes below: 60 training rows per task (240 in all: few samples, long
  instructions, short responses), 100 held-out rows per task shared by every seed;
- one base model (random init, seed 0, the uncertainty mixture's size) for every arm and seed;
- per seed s, its own training split (the data seed) and `seed: s` in axolotl (the data order);
- the training settings in `config_template.yml`, the same for every arm;
- the arms in `ARMS`: they differ only in whether and how the instruction tokens are trained.
"""

from __future__ import annotations

from pathlib import Path

from ..harness.runner import Arm
from ..uncertainty_mixture.prepare import MODEL
from .tasks import H_MAX as H_MAX  # u = H / H_MAX, recorded in results.json
from .tasks import TASKS, make_split, vocabulary

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "config_template.yml"

TRAIN_PER_TASK = dict.fromkeys(TASKS, 60)
TEST_PER_TASK = dict.fromkeys(TASKS, 100)
TOKENIZER_PER_TASK = dict.fromkeys(TASKS, 100)

# The response tokens get epsilon 0 in every arm (`ual_smoothing_max: 0`): the arms differ only
# in the instruction tokens, which are trained when `train_on_inputs` is true.
RESPONSES = {"ual_uncertainty_source": "field", "ual_smoothing_max": 0.0}
ARMS = {
    arm.name: arm
    for arm in (
        # plain SFT through the plugin: exactly axolotl's SFT loss (tests/e2e)
        Arm("sft", "SFT", {**RESPONSES, "train_on_inputs": False}),
        # IM (Shi et al. 2024): the loss over instruction and response tokens alike; weight 1,
        # epsilon 0 is exactly axolotl's `train_on_inputs: true` loss (tests/e2e)
        Arm(
            "im",
            "IM",
            {
                **RESPONSES,
                "train_on_inputs": True,
                "ual_instruction_weight": 1.0,
                "ual_instruction_smoothing": 0.0,
            },
        ),
        # IM with the instruction tokens label-smoothed (epsilon 0.1), the responses not
        Arm(
            "im_smooth",
            "IM, instructions smoothed 0.1",
            {
                **RESPONSES,
                "train_on_inputs": True,
                "ual_instruction_weight": 1.0,
                "ual_instruction_smoothing": 0.1,
            },
        ),
    )
}


def build_base_model(out_dir: Path) -> Path:
    """The shared random-init tiny Llama, with a BPE tokenizer fitted to the cards.

    The tokenizer corpus is its own seeded split plus every value a card can hold, so the model
    and its vocabulary are the same whichever seeds a run trains.
    """
    from axolotl_ual.tiny_model import build_tiny_model

    corpus = [
        m["content"] for r in make_split("tokenizer", TOKENIZER_PER_TASK) for m in r["messages"]
    ]
    return build_tiny_model(out_dir, corpus + vocabulary(), **MODEL)
