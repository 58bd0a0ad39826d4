"""`axolotl-ual generate`: taxonomy-guided synthetic data (LAB's pipelines) through a teacher
behind any OpenAI-compatible server, with `elicit`'s client, runner, cache and output rules.

- `taxonomy.py`  the InstructLab taxonomy: qna.yaml leaves read and validated, documents, chunks
- `prompts.py`   each step's prompts (versioned) and the strict parsing of the replies
- `steps.py`     what each kind of leaf goes through, step by step, and the rows it gives
- `teacher.py`   sending a step's requests through `elicit.client.OpenAIChatClient`
- `cache.py`     the resumable cache, one record per answered request
- `run.py`       the command: passes through the runner, output files, summary
- `fake_teacher.py`  the loopback server's answers to these prompts (tests, trying it out)
- `sdg_hub.py`   the input rows of sdg-hub's knowledge flow, for whoever runs it themselves
"""
