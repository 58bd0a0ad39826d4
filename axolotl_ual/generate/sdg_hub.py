"""The input rows of sdg-hub's knowledge flows, from a taxonomy's knowledge leaf.

`generate` does not run sdg-hub (see docs/generate.md, "Why not sdg-hub"): its requests would
bypass this package's client, cache and stop policy, and it has no skills flows. Whoever wants
its knowledge flows on a taxonomy gets their input here: one row per document chunk, with the
columns sdg-hub 0.9.4's "Document Based Knowledge Tuning Dataset Generation Flow" requires
(`dataset_requirements.required_columns` of its flow.yaml), the in-context example rotating
over the leaf's seed examples, and the leaf and branch to tag the results with.

    import pandas as pd
    from sdg_hub import Flow, FlowRegistry
    rows = [r for leaf in read_taxonomy("taxonomy") if leaf.branch == "knowledge"
            for r in knowledge_flow_rows(leaf)]
    flow = Flow.from_yaml(FlowRegistry.get_flow_path(KNOWLEDGE_FLOW))
    flow.set_model_config(model="hosted_vllm/<name>", api_base="http://...:8000/v1", api_key="...")
    generated = flow.generate(pd.DataFrame(rows))

No sdg-hub import here; it is not a dependency.
"""

from __future__ import annotations

from typing import Any

from .taxonomy import KNOWLEDGE, Leaf, chunk_words

KNOWLEDGE_FLOW = "Document Based Knowledge Tuning Dataset Generation Flow"
REQUIRED_COLUMNS = (
    "document",
    "document_outline",
    "domain",
    "icl_document",
    "icl_query_1",
    "icl_query_2",
    "icl_query_3",
)


def knowledge_flow_rows(leaf: Leaf, chunk_size: int = 1000) -> list[dict[str, Any]]:
    """One row per chunk of the leaf's documents (chunks of about `chunk_size` words)."""
    if leaf.branch != KNOWLEDGE:
        raise ValueError(f"{leaf.path} is a {leaf.branch} leaf, not a knowledge leaf")
    rows = []
    for document in leaf.documents:
        for chunk in chunk_words(document.text, chunk_size):
            seed = leaf.knowledge_seeds[len(rows) % len(leaf.knowledge_seeds)]
            queries = [question for question, _ in seed.pairs[:3]]
            rows.append(
                {
                    "document": chunk,
                    "document_outline": leaf.document_outline,
                    "domain": leaf.domain,
                    "icl_document": seed.context,
                    **{f"icl_query_{i}": q for i, q in enumerate(queries, 1)},
                    "leaf": leaf.path,
                    "branch": leaf.branch,
                    "source_document": document.name,
                }
            )
    return rows
