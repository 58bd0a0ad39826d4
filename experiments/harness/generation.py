"""Generation-level metrics: what a model's generated text looks like against the known truth.

The papers' claims are about generated text (AlpacaEval, GSM8K), not token likelihoods, so each
model also generates answers to every held-out prompt, under three decodings fixed in advance:

- `greedy`: the argmax token at every step (what GSM8K-style evaluations use);
- `sample`: ancestral sampling at temperature 1, no top-k / top-p: the model's own distribution
  over whole responses (so its expected share of valid answers is the token-level `support_mass`);
- `top_p`: nucleus sampling, top-p 0.9 at temperature 1, a common chat setting that cuts the
  low-probability tail.

Each generated response (through the end-of-turn token, at most `MAX_NEW_TOKENS` tokens) is
decoded to text and scored against the prompt's true distribution p(y|x):

- **valid**: the share of samples whose text is one of the prompt's valid answers (a response
  that never ends within the token budget is invalid);
- **exact match** (low-entropy prompts): the share of samples equal to the one correct answer
  (on these prompts the same as `valid`);
- **total variation** (high-entropy prompts): TV(p, q̂) = ½ Σ_y |p(y) − q̂(y)| between the truth
  and q̂, the empirical distribution of the prompt's *valid* samples (renormalized over them,
  so it measures the shape among valid answers; `valid` measures the rest). TV rather than KL:
  q̂ is an empirical distribution with zeros, so KL(p‖q̂) is infinite whenever a valid answer
  was never sampled (likely with 32 samples of 12 answers) and any smoothing constant that
  fixed it would be arbitrary; TV is bounded in [0, 1], needs no constant, and is the largest
  difference in probability the two give any set of answers. It has a finite-sample floor: the
  truth itself, sampled as often, scores E[TV(p, p̂)] > 0 (the "truth (sampled)" row).
  `tv` also counts invalid samples as mass outside p (TV over answers ∪ {invalid}).

Sampling goes through Hugging Face's `generate` in greedy mode with `GumbelSampling` as a
logits processor: argmax(log q + G) with G i.i.d. Gumbel(0, 1) is an exact sample of q (the
Gumbel-max trick), and the noise comes from a local `torch.Generator`, so a model's samples are
reproducible and independent of any other evaluation running in another thread (`generate`'s
own sampling draws from torch's global generator). Every model gets the same noise (common
random numbers), which makes paired differences between models less noisy.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass

import torch

from .truth import HIGH, LOW

MAX_NEW_TOKENS = 16
SAMPLES = {LOW: 8, HIGH: 32}  # samples per prompt of each kind (greedy: 1)
BATCH_SEQUENCES = 256  # generated sequences per `generate` call


@dataclass(frozen=True)
class Decoding:
    name: str
    sample: bool  # False: greedy
    top_p: float = 1.0  # temperature is always 1


GREEDY = Decoding("greedy", sample=False)
SAMPLE = Decoding("sample", sample=True)
TOP_P = Decoding("top_p", sample=True, top_p=0.9)
DECODINGS = (GREEDY, SAMPLE, TOP_P)


class GumbelSampling:
    """A `generate` logits processor that turns greedy decoding into seeded sampling.

    Returns log q (restricted to the nucleus when top_p < 1, by transformers' own
    `TopPLogitsWarper`) plus Gumbel noise from `generator`; `generate`'s argmax of that is a
    sample of q. Rows that have already ended are processed too (and then padded by `generate`).
    """

    def __init__(self, generator: torch.Generator, top_p: float = 1.0):
        from transformers import TopPLogitsWarper

        self.generator = generator
        self.nucleus = TopPLogitsWarper(top_p) if top_p < 1.0 else None

    def log_probs(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        logq = torch.log_softmax(scores.double(), dim=-1)
        if self.nucleus is not None:
            logq = torch.log_softmax(self.nucleus(input_ids, logq), dim=-1)
        return logq

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        logq = self.log_probs(input_ids, scores)
        uniform = torch.rand(logq.shape, generator=self.generator, dtype=torch.float64)
        # -log(-log U) is Gumbel(0, 1); U = 0 gives -inf, a token never chosen
        return (logq - torch.log(-torch.log(uniform))).to(scores.dtype)


def pad_batch(
    sequences: list[tuple[int, ...]], pad_id: int, left: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids padded to one width (on the left for `generate`) and their attention mask."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        where = slice(width - len(seq), width) if left else slice(0, len(seq))
        ids[row, where] = torch.tensor(seq)
        mask[row, where] = 1
    return ids, mask


class HFGenerator:
    """Batched `generate` of a causal LM (CPU, float32): left padding, one stop token."""

    def __init__(self, model, pad_id: int, stop_id: int):
        self.model = model
        self.pad_id = pad_id
        self.stop_id = stop_id

    @torch.inference_mode()
    def generate(
        self,
        prompts: list[tuple[int, ...]],
        decoding: Decoding,
        n: int,
        seed: str,
        max_new_tokens: int = MAX_NEW_TOKENS,
    ) -> list[list[tuple[int, ...]]]:
        """`n` responses per prompt (token ids, through the stop token if one was generated)."""
        from transformers import LogitsProcessorList

        per_call = max(1, BATCH_SEQUENCES // n)
        out: list[list[tuple[int, ...]]] = []
        for start in range(0, len(prompts), per_call):
            chunk = prompts[start : start + per_call]
            ids, mask = pad_batch(chunk, self.pad_id, left=True)
            width = ids.shape[1]
            processors = LogitsProcessorList()
            if decoding.sample:
                generator = torch.Generator().manual_seed(_seed(f"{seed} {start}"))
                processors.append(GumbelSampling(generator, decoding.top_p))
            # each prompt n times (greedy `generate` refuses num_return_sequences > 1)
            generated = self.model.generate(
                input_ids=ids.repeat_interleave(n, dim=0),
                attention_mask=mask.repeat_interleave(n, dim=0),
                do_sample=False,  # the sampling is GumbelSampling's
                max_new_tokens=max_new_tokens,
                logits_processor=processors,
                pad_token_id=self.pad_id,
                eos_token_id=self.stop_id,
            )[:, width:]
            for row in range(len(chunk)):
                out.append([self._cut(generated[row * n + k].tolist()) for k in range(n)])
        return out

    def _cut(self, tokens: list[int]) -> tuple[int, ...]:
        return tuple(tokens[: tokens.index(self.stop_id) + 1] if self.stop_id in tokens else tokens)


def _seed(text: str) -> int:
    """A 63-bit seed from a string (`random.Random` hashes strings independently of
    PYTHONHASHSEED)."""
    return random.Random(text).getrandbits(63)


def decode_samples(tokenizer, samples: list[tuple[int, ...]]) -> list[str | None]:
    """Each sample's text before the end-of-turn token; None where it never ended."""
    stop = tokenizer.eos_token_id
    return [tokenizer.decode(list(s[:-1])) if s and s[-1] == stop else None for s in samples]


def total_variation(p: dict[str, float], q: dict[str, float]) -> float:
    """½ Σ |p(y) − q(y)| over the union of both supports."""
    return 0.5 * sum(abs(p.get(y, 0.0) - q.get(y, 0.0)) for y in set(p) | set(q))


def score_samples(texts: list[str | None], responses: list[str], probs: list[float]) -> dict:
    """The metrics of one prompt's samples (`texts`, None = never ended) against its truth."""
    truth = dict(zip(responses, probs, strict=True))
    n = len(texts)
    valid = [t for t in texts if t in truth]
    counts = Counter(valid)
    out = {
        "samples": n,
        "valid": len(valid) / n,
        "ended": sum(t is not None for t in texts) / n,
        # invalid samples are mass outside the support: TV over answers plus {invalid}
        "tv": total_variation(truth, {y: c / n for y, c in counts.items()})
        + 0.5 * (1 - len(valid) / n),
    }
    if len(truth) == 1:
        out["exact_match"] = out["valid"]
    if valid:
        out["tv_valid"] = total_variation(truth, {y: c / len(valid) for y, c in counts.items()})
    return out


def summarize(scores: list[dict], kinds: list[str]) -> dict:
    """Means over prompts; `tv_valid` over the prompts with at least one valid sample."""

    def mean(values):
        values = list(values)
        return sum(values) / len(values) if values else math.nan

    out = {
        "rows": len(scores),
        "samples": sum(s["samples"] for s in scores),
        "valid": mean(s["valid"] for s in scores),
        "ended": mean(s["ended"] for s in scores),
    }
    if all(k == LOW for k in kinds):
        out["exact_match"] = mean(s["exact_match"] for s in scores)
    if all(k == HIGH for k in kinds):
        out["tv"] = mean(s["tv"] for s in scores)
        out["tv_valid"] = mean(s["tv_valid"] for s in scores if "tv_valid" in s)
        out["rows_without_valid"] = sum("tv_valid" not in s for s in scores)
    return out


def grouped_summary(scores: list[dict], rows: list[dict]) -> dict:
    """`summarize` overall, per task type and per task."""
    kinds = [r["kind"] for r in rows]

    def part(keep) -> dict:
        chosen = [i for i, r in enumerate(rows) if keep(r)]
        return summarize([scores[i] for i in chosen], [kinds[i] for i in chosen])

    result = {"all": part(lambda r: True)}
    for kind in (LOW, HIGH):
        result[kind] = part(lambda r, kind=kind: r["kind"] == kind)
    result["tasks"] = {
        task: part(lambda r, task=task: r["task"] == task)
        for task in dict.fromkeys(r["task"] for r in rows)
    }
    return result


def generation_metrics(
    tokenizer, generator: HFGenerator, rows: list[dict], prompts: list[tuple[int, ...]]
) -> dict:
    """Every decoding's metrics on `rows` (test rows with their truth; `prompts` their ids)."""
    result = {}
    for decoding in DECODINGS:
        texts: list[list[str | None]] = [[] for _ in rows]
        for kind in (LOW, HIGH):
            chosen = [i for i, r in enumerate(rows) if r["kind"] == kind]
            n = SAMPLES[kind] if decoding.sample else 1
            samples = generator.generate(
                [prompts[i] for i in chosen], decoding, n, seed=f"{decoding.name} {kind}"
            )
            for i, s in zip(chosen, samples, strict=True):
                texts[i] = decode_samples(tokenizer, s)
        scores = [
            score_samples(t, r["responses"], r["probs"]) for t, r in zip(texts, rows, strict=True)
        ]
        result[decoding.name] = grouped_summary(scores, rows)
    return result


def truth_samples(rows: list[dict], seed: str = "truth") -> dict:
    """The floor: the truth itself sampled as often as a model (`SAMPLES`), scored the same way."""
    scores = []
    for i, r in enumerate(rows):
        rng = random.Random(f"{seed} {i}")
        texts = rng.choices(r["responses"], weights=r["probs"], k=SAMPLES[r["kind"]])
        scores.append(score_samples(texts, r["responses"], r["probs"]))
    return grouped_summary(scores, rows)
