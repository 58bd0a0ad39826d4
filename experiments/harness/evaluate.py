"""Held-out metrics of a trained model, computed against the known truth of every test prompt.

- **Exact match** (low-entropy tasks): greedy decoding from the chat prompt until the model's
  end-of-turn token; a hit when the decoded text equals the one correct answer and the turn ended
  (within `MAX_NEW_TOKENS`).
- **Cross entropy against the true distribution** (high-entropy tasks): for every response y in
  the prompt's support, q(y|x) is the model's probability of the whole response, i.e. of its
  tokens followed by the end-of-turn token, exactly the tokens axolotl trains on. Then
  CE(x) = -sum_y p(y|x) log q(y|x), H(x) = -sum_y p(y|x) log p(y|x) and KL(p||q) = CE - H >= 0
  (the support of p is finite and known, so both sums are exact). A model that outputs exactly
  p scores CE = H and KL = 0. `support_mass` m = sum_y q(y|x) is what the model keeps on valid
  answers (label smoothing spreads some of it over the rest of the vocabulary), and the KL
  splits exactly into KL(p || q/m), the error of the shape among the valid answers
  (`kl_valid`), plus -log m (`neg_log_mass`), the price of the mass put anywhere else.
- **Expected calibration error**, token level: for every token of every held-out reference
  response (the correct answer, or the one sampled answer of a high-entropy row; end-of-turn
  included), teacher-forced, the confidence max_v q(v | prefix) against whether the argmax is
  the reference token; 10 equal-width confidence bins,
  ECE = sum_b (n_b / N) |accuracy_b - mean confidence_b|. On high-entropy rows even the true
  distribution is right only as often as its top probability says, so a calibrated model's ECE
  is the finite-sample noise floor (reported for the truth itself as the "oracle" row).
- **Token NLL**: the mean -log q of the same reference tokens; on the test split it is what
  axolotl logs as `eval_ual_nll` (the end-to-end test checks that they agree).
- **Generation** (`generation.py`): the same prompts answered by `generate` under greedy,
  sampled and nucleus decoding, the text scored for valid answers, exact match and the total
  variation of the sampled answers against the truth.

Models are read through a `Scorer`, a function from token sequences to next-token log
probabilities; `HFScorer` wraps a transformers model, `OracleScorer` is the true distribution.
Everything is single-threaded and batched in a fixed order, so the numbers are reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .generation import MAX_NEW_TOKENS, HFGenerator, generation_metrics, pad_batch
from .truth import HIGH, LOW

ECE_BINS = 10
BATCH = 64


class Scorer:
    """Next-token log probabilities: `logprobs(seqs)[i][t]` is log q(. | seqs[i][: t + 1])."""

    vocab_size: int

    def logprobs(self, sequences: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        raise NotImplementedError


class HFScorer(Scorer):
    """A causal LM from transformers, in float32 on CPU, batched with right padding.

    With right padding and a causal mask the padded positions never influence a real one, so a
    sequence's log probabilities do not depend on what else shares its batch beyond float
    rounding; batches are always formed in the same order for reproducibility anyway.
    """

    def __init__(self, model, pad_id: int):
        """`model`: a transformers causal LM, or the folder of one (read in float32)."""
        if isinstance(model, str | Path):
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
        self.model = model.eval()
        self.vocab_size = self.model.config.vocab_size
        self.pad_id = pad_id

    @torch.inference_mode()
    def logprobs(self, sequences):
        out: list[torch.Tensor] = []
        for start in range(0, len(sequences), BATCH):
            chunk = sequences[start : start + BATCH]
            ids, mask = pad_batch(chunk, self.pad_id, left=False)
            logits = self.model(input_ids=ids, attention_mask=mask).logits
            logp = torch.log_softmax(logits.double(), dim=-1)
            out.extend(logp[row, : len(seq)] for row, seq in enumerate(chunk))
        return out


class OracleScorer(Scorer):
    """The true distribution as a language model over response tokens.

    `table` maps a prompt's token ids to {response token ids (ending with end-of-turn): p}.
    After the prompt and a partial response r, the next-token distribution is the total
    probability of the responses that continue r with each token, renormalized; inside the
    prompt it is uniform (never read). Used for the oracle row and in the metric tests.
    """

    def __init__(self, table: dict[tuple[int, ...], dict[tuple[int, ...], float]], vocab_size: int):
        self.table = table
        self.vocab_size = vocab_size
        self.prompt_lengths = sorted({len(p) for p in table}, reverse=True)

    def _prompt(self, seq: tuple[int, ...]) -> tuple[int, ...]:
        for length in self.prompt_lengths:
            if seq[:length] in self.table:
                return seq[:length]
        raise KeyError("sequence does not start with a known prompt")

    def logprobs(self, sequences):
        out = []
        for seq in sequences:
            seq = tuple(seq)
            prompt = self._prompt(seq)
            rows = torch.full(
                (len(seq), self.vocab_size), -math.log(self.vocab_size), dtype=torch.float64
            )
            for t in range(len(prompt) - 1, len(seq)):
                partial = seq[len(prompt) : t + 1]
                mass = torch.zeros(self.vocab_size, dtype=torch.float64)
                for response, p in self.table[prompt].items():
                    if len(response) > len(partial) and response[: len(partial)] == partial:
                        mass[response[len(partial)]] += p
                if mass.sum() > 0:
                    rows[t] = torch.log(mass / mass.sum())
            out.append(rows)
        return out


@dataclass(frozen=True)
class Encoded:
    """A test row in token ids: the prompt, every option's response tokens, its reference."""

    task: str
    kind: str
    prompt: tuple[int, ...]
    options: tuple[tuple[int, ...], ...]  # response tokens, end-of-turn included
    texts: tuple[str, ...]
    probs: tuple[float, ...]
    reference: int  # index of the row's own response among the options


def encode_rows(tokenizer, rows: list[dict]) -> list[Encoded]:
    """Prompt and response token ids exactly as axolotl's chat_template strategy trains them.

    The prompt is the conversation before the last (assistant) turn, up to the assistant header
    (`add_generation_prompt`); a response is what the full conversation adds after it, through
    the end-of-turn token (the template's trailing newline is not trained, and not scored).
    """
    eot = tokenizer.eos_token_id
    encoded = []
    for r in rows:
        context = r["messages"][:-1]
        prompt = tokenizer.apply_chat_template(
            context, tokenize=True, add_generation_prompt=True, return_dict=False
        )
        options = []
        for text in r["responses"]:
            full = tokenizer.apply_chat_template(
                [*context, {"role": "assistant", "content": text}],
                tokenize=True,
                return_dict=False,
            )
            if full[: len(prompt)] != prompt or eot not in full[len(prompt) :]:
                raise ValueError(f"cannot split the response of {r['messages']!r} from its prompt")
            tail = full[len(prompt) :]
            options.append(tuple(tail[: tail.index(eot) + 1]))
        encoded.append(
            Encoded(
                r["task"],
                r["kind"],
                tuple(prompt),
                tuple(options),
                tuple(r["responses"]),
                tuple(r["probs"]),
                r["responses"].index(r["messages"][-1]["content"]),
            )
        )
    return encoded


@dataclass
class TokenStats:
    """Teacher-forced statistics of response tokens: log q(target), confidence, top-1 hit."""

    logq: torch.Tensor
    confidence: torch.Tensor
    correct: torch.Tensor


def response_stats(
    scorer: Scorer, prompts: list[tuple[int, ...]], responses: list[tuple[int, ...]]
) -> list[TokenStats]:
    """For each (prompt, response) pair, the statistics of the response tokens."""
    logps = scorer.logprobs([p + r for p, r in zip(prompts, responses, strict=True)])
    stats = []
    for prompt, response, logp in zip(prompts, responses, logps, strict=True):
        rows = logp[len(prompt) - 1 : len(prompt) + len(response) - 1]  # predicting each token
        target = torch.tensor(response)
        top = rows.max(dim=-1)
        stats.append(
            TokenStats(
                rows.gather(1, target[:, None])[:, 0], top.values.exp(), top.indices == target
            )
        )
    return stats


def expected_calibration_error(
    confidence: torch.Tensor, correct: torch.Tensor, bins: int = ECE_BINS
) -> float:
    """sum over equal-width bins of (share of tokens) * |accuracy - mean confidence|."""
    if confidence.numel() == 0:
        return math.nan
    index = (confidence * bins).long().clamp(max=bins - 1)
    ece = 0.0
    for b in range(bins):
        members = index == b
        if members.any():
            gap = correct[members].double().mean() - confidence[members].double().mean()
            ece += members.double().mean().item() * abs(gap.item())
    return ece


def greedy_decode(
    scorer: Scorer,
    prompts: list[tuple[int, ...]],
    stop_id: int,
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> list[list[int]]:
    """Greedy continuations of `prompts`, each through `stop_id` or `max_new_tokens` tokens."""
    outputs: list[list[int]] = [[] for _ in prompts]
    active = list(range(len(prompts)))
    for _ in range(max_new_tokens):
        if not active:
            break
        logps = scorer.logprobs([prompts[i] + tuple(outputs[i]) for i in active])
        still = []
        for i, logp in zip(active, logps, strict=True):
            token = int(logp[-1].argmax())
            outputs[i].append(token)
            if token != stop_id:
                still.append(i)
        active = still
    return outputs


def exact_match(tokenizer, scorer: Scorer, rows: list[Encoded]) -> list[bool]:
    stop = tokenizer.eos_token_id
    generated = greedy_decode(scorer, [r.prompt for r in rows], stop)
    hits = []
    for r, out in zip(rows, generated, strict=True):
        ended = bool(out) and out[-1] == stop
        hits.append(ended and tokenizer.decode(out[:-1]) == r.texts[r.reference])
    return hits


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else math.nan


def evaluate(
    tokenizer,
    scorer: Scorer,
    test: list[dict],
    train: list[dict] | None = None,
    generator: HFGenerator | None = None,
) -> dict:
    """Every metric of one model: overall, per task type and per task; with a `generator`, the
    generation-level metrics too (under `generation`, by decoding)."""
    rows = encode_rows(tokenizer, test)
    pairs = [(i, j) for i, r in enumerate(rows) for j in range(len(r.options))]
    stats = response_stats(
        scorer, [rows[i].prompt for i, _ in pairs], [rows[i].options[j] for i, j in pairs]
    )
    by_row: dict[int, dict[int, TokenStats]] = {}
    for (i, j), s in zip(pairs, stats, strict=True):
        by_row.setdefault(i, {})[j] = s
    low = [i for i, r in enumerate(rows) if r.kind == LOW]
    hits = dict(zip(low, exact_match(tokenizer, scorer, [rows[i] for i in low]), strict=True))

    per_row = []
    for i, r in enumerate(rows):
        logq = [float(by_row[i][j].logq.sum()) for j in range(len(r.options))]
        ce = -sum(p * lq for p, lq in zip(r.probs, logq, strict=True))
        h = -sum(p * math.log(p) for p in r.probs)
        ref = by_row[i][r.reference]
        mass = sum(math.exp(lq) for lq in logq)
        per_row.append(
            {
                "task": r.task,
                "kind": r.kind,
                "ce": ce,
                "entropy": h,
                "kl": ce - h,
                "support_mass": mass,
                # KL = KL(p || q renormalized over the valid answers) + (-log mass): how wrong the
                # shape among valid answers is, and what the mass put elsewhere costs
                "kl_valid": ce - h + math.log(mass) if mass > 0 else math.inf,
                "neg_log_mass": -math.log(mass) if mass > 0 else math.inf,
                "exact_match": hits.get(i),
                "ref": ref,
            }
        )

    def summary(members: list[dict]) -> dict:
        ref_logq = torch.cat([m["ref"].logq for m in members])
        out = {
            "rows": len(members),
            "tokens": int(ref_logq.numel()),
            "token_nll": float(-ref_logq.mean()),
            "ece": expected_calibration_error(
                torch.cat([m["ref"].confidence for m in members]),
                torch.cat([m["ref"].correct for m in members]),
            ),
            "token_accuracy": float(torch.cat([m["ref"].correct for m in members]).double().mean()),
            # compared with token_accuracy: over- (>) or under- (<) confident on the whole
            "mean_confidence": float(torch.cat([m["ref"].confidence for m in members]).mean()),
        }
        if all(m["kind"] == LOW for m in members):
            out["exact_match"] = _mean(m["exact_match"] for m in members)
        if all(m["kind"] == HIGH for m in members):
            for key in ("ce", "entropy", "kl", "kl_valid", "neg_log_mass", "support_mass"):
                out[key] = _mean(m[key] for m in members)
        return out

    result = {"all": summary(per_row)}
    for kind in (LOW, HIGH):
        result[kind] = summary([m for m in per_row if m["kind"] == kind])
    result["tasks"] = {
        task: summary([m for m in per_row if m["task"] == task])
        for task in dict.fromkeys(m["task"] for m in per_row)
    }
    if train is not None:
        result["train_token_nll"] = train_token_nll(tokenizer, scorer, train)
    if generator is not None:
        result["generation"] = generation_metrics(
            tokenizer, generator, test, [r.prompt for r in rows]
        )
    return result


def train_token_nll(tokenizer, scorer: Scorer, train: list[dict]) -> dict:
    """Unsmoothed token NLL of the training responses, overall and per task type: how closely
    the model fits its own training samples (compare with the held-out `token_nll`)."""
    rows = encode_rows(tokenizer, train)
    stats = response_stats(scorer, [r.prompt for r in rows], [r.options[r.reference] for r in rows])
    out = {}
    for kind in ("all", LOW, HIGH):
        chosen = [s.logq for r, s in zip(rows, stats, strict=True) if kind in ("all", r.kind)]
        out[kind] = float(-torch.cat(chosen).mean())
    return out


def oracle_scorer(tokenizer, test: list[dict]) -> OracleScorer:
    """The truth as a scorer: each test prompt with its exact response distribution."""
    table = {}
    for r in encode_rows(tokenizer, test):
        table[r.prompt] = dict(zip(r.options, r.probs, strict=True))
    return OracleScorer(table, len(tokenizer))


def oracle_metrics(base_model: Path, test: list[dict]) -> dict:
    """The metrics of the true distribution itself (what a perfect model would score), and
    under `generation_truth` the truth sampled as often as the models are."""
    from transformers import AutoTokenizer

    from .generation import truth_samples

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    metrics = evaluate(tokenizer, oracle_scorer(tokenizer, test), test)
    metrics["generation_truth"] = truth_samples(test)
    return metrics


def evaluate_model(
    model_dir: Path, test: list[dict], train: list[dict] | None = None, generate: bool = True
) -> dict:
    """`evaluate` of a saved model; `generate=False` skips the generation-level metrics."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    scorer = HFScorer(model_dir, tokenizer.pad_token_id)
    generator = (
        HFGenerator(scorer.model, tokenizer.pad_token_id, tokenizer.eos_token_id)
        if generate
        else None
    )
    return evaluate(tokenizer, scorer, test, train, generator)
