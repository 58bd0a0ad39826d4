"""What the controlled CPU experiments share.

- `truth`: prompts that carry their exact response distribution p(y|x), and seeded splits;
- `evaluate`: held-out metrics of a model against that truth, token level (exact match, KL,
  ECE, NLL) and, through `generation`, on generated text (valid answers, exact match, total
  variation of the sampled answers); its `Scorer`s and tokenization also serve the point-wise
  preference experiment's likelihoods;
- `runner`: the work folder, `axolotl train` in subprocesses (timed, with their peak memory),
  parallel runs, the command line, and the `Experiment` each experiment's `run` subclasses
  (`TruthExperiment` for the two evaluated against the truth);
- `report`: means over seeds, paired differences, markdown tables, the figure and the results
  files.
"""
