"""What the controlled CPU experiments share.

- `truth`: prompts that carry their exact response distribution p(y|x), and seeded splits;
- `evaluate`: held-out metrics of a model against that truth, token level (exact match, KL,
  ECE, NLL) and, through `generation`, on generated text (valid answers, exact match, total
  variation of the sampled answers);
- `runner`: the work folder, `axolotl train` in subprocesses, parallel runs, the command line;
- `report`: means over seeds, paired differences, markdown tables, the results files.
"""
