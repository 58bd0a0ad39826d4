"""`axolotl-ual phases recipe.yml`: multi-phase training with replay, one `axolotl train` a phase.

A recipe names a base axolotl config and an ordered list of phases; each phase overrides the
axolotl keys it needs, can replay a share of earlier phases' data, and starts from the previous
phase's chosen checkpoint (LAB's phased training, arXiv 2403.01081). A journal in the work
folder makes a re-run after a crash resume where the run stopped.

- `recipe`: the recipe file: schema, errors that name the phase and the key, the plan of phases.
- `data`: the rows each phase trains on (replay samples, uncertainty buckets), written to files.
- `configs`: the axolotl config each phase runs (chaining, checkpoints, evaluation).
- `checkpoints`: which checkpoints a phase left, which are complete, which one it hands on.
- `journal`: the run's record, its inputs' fingerprint, the work folder's lock.
- `runner`: the loop that runs the phases; `cli`: the `phases` subcommand.
- `tiny`: builds the tiny model of `example_configs/lab/tiny_cpu_recipe.yml`.

No torch or axolotl imports at module level: axolotl's config schema is imported only to check
the recipe's keys, and training runs in subprocesses.
"""
