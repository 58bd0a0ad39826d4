"""Fake models for the experiments' metric tests, their answers known in closed form."""

from __future__ import annotations

from experiments.harness.evaluate import OracleScorer, encode_rows


def believing(tokenizer, rows, belief) -> OracleScorer:
    """A fake model whose response distribution for each row is `belief(row)`: {text: q}.

    Probability left over (1 - sum q) goes to a response outside the row's support."""
    table = {}
    outside = tokenizer.apply_chat_template(
        [{"role": "user", "content": "x"}, {"role": "assistant", "content": "zzz qqq"}],
        tokenize=True,
        return_dict=False,
    )
    for r, enc in zip(rows, encode_rows(tokenizer, rows), strict=True):
        q = belief(r)
        dist = {enc.options[enc.texts.index(y)]: p for y, p in q.items()}
        rest = 1 - sum(q.values())
        if rest > 1e-12:
            dist[tuple(outside[-4:-1])] = rest  # some tokens ending with end-of-turn
        table[enc.prompt] = dist
    return OracleScorer(table, len(tokenizer))
