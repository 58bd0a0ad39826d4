"""`axolotl-ual elicit`: ask a judge LLM how uncertain each training sample is.

The judge rates every sample's intrinsic uncertainty once, before training; the scores land in
a column of the dataset (or a sidecar file keyed by `axolotl_ual.rows.sample_key`) that the UAL
plugin turns into a per-sample label-smoothing epsilon.

Modules: `io` (datasets in and out), `samples` (rows -> judged content and keys), `prompts`
(judge prompts, reply parsing), `methods` (verbalized / logprob / entropy), `backends`
(openai, hf, vllm), `cache` (resumable results), `runner` (concurrency, progress),
`pipeline` (the command end to end), `shards`, `inspect`, `report`, `cli`.
Nothing here imports torch, transformers, vllm or openai at module level.
"""
