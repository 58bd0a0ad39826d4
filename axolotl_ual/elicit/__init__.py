"""`axolotl-ual elicit`: ask a judge LLM how uncertain each training sample is.

The judge rates every sample's intrinsic uncertainty once, before training; the scores land in
a column of the dataset (or a sidecar file keyed by `axolotl_ual.rows.sample_key`) that the UAL
plugin turns into a per-sample label-smoothing epsilon.

Modules: `io` (datasets in and out), `output_paths` (what may be written where), `samples`
(rows -> judged content and keys), `prompts` (judge prompts, reply parsing), `methods`
(verbalized / logprob / entropy), `chat_render` and `entropy` (what the entropy method
measures), `backends` (openai, hf, vllm: one registry), `client` (OpenAI-compatible requests and
their error policy, for any task), `redact` (the API key masked in all output), `cache`
(resumable results), `runner` (concurrency, durable recording, progress), `pipeline` (the
command end to end), `shards`, `inspect`, `report`, `cli`, `fake_server` (a loopback judge).
Nothing here imports torch, transformers, vllm or openai at module level.
"""
