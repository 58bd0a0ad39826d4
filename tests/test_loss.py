"""The loss functions against independent references.

- constant eps: `F.cross_entropy(..., label_smoothing=eps)` itself;
- per-token eps: a float64 loop calling `F.cross_entropy` once per token with that token's eps,
  for values and for gradients of hidden, weight and bias.
"""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F

from axolotl_ual.loss import (
    linear_cross_entropy,
    linear_token_statistics,
    smoothed_cross_entropy,
    token_statistics,
)

IGNORE = -100


def _inputs(shape=(3, 11), d=16, vocab=37, seed=0, dtype=torch.float64, ignore_every=4):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(*shape, d, generator=g, dtype=torch.float64).to(dtype)
    weight = (torch.randn(vocab, d, generator=g, dtype=torch.float64) / d**0.5).to(dtype)
    bias = torch.randn(vocab, generator=g, dtype=torch.float64).to(dtype)
    labels = torch.randint(0, vocab, shape, generator=g)
    if ignore_every:
        labels.view(-1)[::ignore_every] = IGNORE
    eps = 0.3 * torch.rand(shape, generator=g, dtype=torch.float64)
    return hidden, weight, bias, labels, eps


def _reference(hidden, weight, bias, labels, eps, softcap=None, reduction="mean"):
    """Loop over tokens: F.cross_entropy with each token's own label_smoothing, float64."""
    logits = hidden @ weight.t()
    if bias is not None:
        logits = logits + bias
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    flat_logits, flat_labels = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
    flat_eps = torch.as_tensor(eps, dtype=torch.float64).expand(labels.shape).reshape(-1)
    per_token = []
    for i in range(flat_labels.numel()):
        if flat_labels[i] == IGNORE:
            per_token.append(flat_logits.new_zeros(()))
            continue
        per_token.append(
            F.cross_entropy(
                flat_logits[i : i + 1],
                flat_labels[i : i + 1],
                label_smoothing=float(flat_eps[i]),
                reduction="sum",
            )
        )
    per_token = torch.stack(per_token).reshape(labels.shape)
    if reduction == "none":
        return per_token
    if reduction == "sum":
        return per_token.sum()
    return per_token.sum() / (labels != IGNORE).sum()


def _grads(fn, tensors, grad_output):
    tensors = [t.detach().clone().requires_grad_(True) if t is not None else None for t in tensors]
    out = fn(*tensors)
    grads = torch.autograd.grad((out * grad_output).sum(), [t for t in tensors if t is not None])
    return out.detach(), grads


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("softcap", [None, 4.0], ids=["plain", "softcap"])
@pytest.mark.parametrize("chunk_size", [1, 5, None], ids=["chunk1", "chunk5", "default"])
def test_linear_ce_per_token_eps_matches_float64_reference(reduction, softcap, chunk_size):
    hidden, weight, bias, labels, eps = _inputs()
    grad_output = (
        torch.rand(labels.shape, dtype=torch.float64)
        if reduction == "none"
        else torch.tensor(1.7, dtype=torch.float64)
    )

    ref, ref_grads = _grads(
        lambda h, w, b: _reference(h, w, b, labels, eps, softcap, reduction),
        [hidden, weight, bias],
        grad_output,
    )
    ours, our_grads = _grads(
        lambda h, w, b: linear_cross_entropy(
            h, w, labels, eps, bias=b, softcap=softcap, reduction=reduction, chunk_size=chunk_size
        ),
        [hidden, weight, bias],
        grad_output,
    )
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    for mine, theirs in zip(our_grads, ref_grads, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-12)


def test_linear_ce_fp32_within_fp32_precision_of_float64():
    hidden, weight, bias, labels, eps = _inputs(shape=(4, 64), d=32, vocab=300)
    ref, ref_grads = _grads(
        lambda h, w, b: _reference(h, w, b, labels, eps), [hidden, weight, bias], 1.0
    )
    ours, our_grads = _grads(
        lambda h, w, b: linear_cross_entropy(h, w, labels, eps.float(), bias=b, chunk_size=40),
        [hidden.float(), weight.float(), bias.float()],
        1.0,
    )
    assert ours.dtype == torch.float32
    assert abs(ours.double() - ref) <= 1e-6 * abs(ref)
    for mine, theirs in zip(our_grads, ref_grads, strict=True):
        torch.testing.assert_close(mine.double(), theirs, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.35])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_constant_eps_equals_torch_label_smoothing(eps, reduction):
    hidden, weight, _, labels, _ = _inputs(shape=(2, 9), dtype=torch.float32)
    logits = hidden @ weight.t()
    torch_loss = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]),
        labels.reshape(-1),
        label_smoothing=eps,
        reduction=reduction,
        ignore_index=IGNORE,
    )
    if reduction == "none":
        torch_loss = torch_loss.reshape(labels.shape)
    fused = linear_cross_entropy(hidden, weight, labels, eps, reduction=reduction)
    from_logits = smoothed_cross_entropy(logits, labels, eps, reduction=reduction)
    torch.testing.assert_close(fused, torch_loss, rtol=2e-6, atol=2e-6)
    torch.testing.assert_close(from_logits, torch_loss, rtol=2e-6, atol=2e-6)


def test_smoothed_ce_from_logits_per_token_eps_and_grads():
    hidden, weight, bias, labels, eps = _inputs()
    logits = hidden @ weight.t() + bias
    ref, (ref_grad,) = _grads(lambda z: _reference_from_logits(z, labels, eps), [logits], 1.0)
    ours, (our_grad,) = _grads(lambda z: smoothed_cross_entropy(z, labels, eps), [logits], 1.0)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(our_grad, ref_grad, rtol=1e-10, atol=1e-12)


def _reference_from_logits(logits, labels, eps):
    identity = torch.eye(logits.shape[-1], dtype=logits.dtype)
    return _reference(logits, identity, None, labels, eps)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_all_ignored_gives_zero_loss_and_zero_grads(reduction):
    hidden, weight, bias, labels, eps = _inputs(dtype=torch.float32)
    labels = torch.full_like(labels, IGNORE)
    h, w, b = (t.clone().requires_grad_(True) for t in (hidden, weight, bias))
    loss = linear_cross_entropy(h, w, labels, eps.float(), bias=b, reduction=reduction)
    loss.sum().backward()
    assert torch.count_nonzero(loss) == 0 and not torch.isnan(loss).any()
    assert all(torch.count_nonzero(t.grad) == 0 for t in (h, w, b))
    from_logits = smoothed_cross_entropy(
        hidden @ weight.t(), labels, eps.float(), reduction=reduction
    )
    assert torch.count_nonzero(from_logits) == 0 and not torch.isnan(from_logits).any()


def test_bf16_inputs_accumulate_in_fp32():
    hidden, weight, bias, labels, eps = _inputs(shape=(2, 50), d=64, vocab=500)
    h16, w16, b16 = (t.to(torch.bfloat16) for t in (hidden, weight, bias))
    # reference on exactly the bf16 values, in float64
    ref, ref_grads = _grads(
        lambda h, w, b: _reference(h, w, b, labels, eps),
        [h16.double(), w16.double(), b16.double()],
        1.0,
    )
    ours, our_grads = _grads(
        lambda h, w, b: linear_cross_entropy(h, w, labels, eps.float(), bias=b),
        [h16, w16, b16],
        1.0,
    )
    assert ours.dtype == torch.float32
    assert [g.dtype for g in our_grads] == [torch.bfloat16] * 3
    # CPU rounds each logit to bf16 as the model's own lm_head would (see the docstring)
    assert abs(ours.double() - ref) <= 2e-2 * abs(ref)
    for mine, theirs in zip(our_grads, ref_grads, strict=True):
        torch.testing.assert_close(
            mine.double(), theirs, rtol=5e-2, atol=5e-2 * theirs.abs().max().item()
        )


def test_gradient_accumulation_equivalence():
    """sum of micro-batch sums / total trained tokens == the full batch's mean (value and grads)."""
    hidden, weight, bias, labels, eps = _inputs(shape=(4, 13), ignore_every=3)
    labels[0, :9] = IGNORE  # the two micro-batches hold different numbers of trained tokens
    total = (labels != IGNORE).sum()
    h, w = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
    full = linear_cross_entropy(h, w, labels, eps, bias=bias)
    full_grads = torch.autograd.grad(full, [h, w])

    h2, w2 = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
    accumulated = sum(
        linear_cross_entropy(
            h2[i : i + 2], w2, labels[i : i + 2], eps[i : i + 2], bias=bias, reduction="sum"
        )
        / total
        for i in (0, 2)
    )
    acc_grads = torch.autograd.grad(accumulated, [h2, w2])
    torch.testing.assert_close(accumulated, full, rtol=1e-12, atol=0)
    for a, b in zip(acc_grads, full_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    # whereas averaging the micro-batch means is not the same (uneven token counts)
    means = (
        sum(
            linear_cross_entropy(
                hidden[i : i + 2], weight, labels[i : i + 2], eps[i : i + 2], bias=bias
            )
            for i in (0, 2)
        )
        / 2
    )
    assert abs(means - full) > 1e-6


@pytest.mark.parametrize("softcap", [None, 3.0])
def test_token_statistics_agree(softcap):
    hidden, weight, bias, labels, eps = _inputs(shape=(2, 20), vocab=13)
    logits = hidden @ weight.t() + bias
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    fused = linear_token_statistics(
        hidden, weight, labels, bias=bias, softcap=softcap, chunk_size=7
    )
    direct = token_statistics(logits, labels)
    valid = labels != IGNORE
    lse = torch.logsumexp(logits, -1)
    target = logits.gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1)
    for stats in (fused, direct):
        assert torch.equal(stats.valid, valid)
        torch.testing.assert_close(
            stats.nll[valid].double(), (lse - target)[valid], rtol=1e-6, atol=1e-6
        )
        torch.testing.assert_close(
            stats.uniform_ce[valid].double(), (lse - logits.mean(-1))[valid], rtol=1e-6, atol=1e-6
        )
        assert torch.equal(stats.correct, valid & (logits.argmax(-1) == labels))
        smoothed = stats.smoothed(eps.float())[valid].double()
        torch.testing.assert_close(
            smoothed,
            _reference(hidden, weight, bias, labels, eps, softcap, "none")[valid],
            rtol=1e-6,
            atol=1e-6,
        )
    assert fused.correct.any()  # the check above compared something


def test_argument_errors():
    hidden, weight, _, labels, _ = _inputs(dtype=torch.float32)
    with pytest.raises(ValueError, match="labels shape"):
        linear_cross_entropy(hidden, weight, labels[:, :-1])
    with pytest.raises(ValueError, match="weight must be"):
        linear_cross_entropy(hidden, weight[:, :-1], labels)
    with pytest.raises(ValueError, match="reduction"):
        linear_cross_entropy(hidden, weight, labels, reduction="avg")
    with pytest.raises(ValueError, match="bias"):
        linear_cross_entropy(hidden, weight, labels, bias=torch.zeros(3))


def test_an_out_of_memory_error_does_not_switch_the_matmul_path(monkeypatch):
    """Whether half-precision logits come out of the matmul in fp32 is a property of the device,
    probed once; an OOM in one real call must reach the caller and change nothing for the next."""
    impl = importlib.import_module(linear_cross_entropy.__module__)
    monkeypatch.setattr(impl, "fp32_output_supported", lambda device, dtype: True)
    calls = []
    real_mm = torch.mm

    def mm(a, b, *, out_dtype=None):
        calls.append(out_dtype)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_mm(a.float(), b.float())

    monkeypatch.setattr(impl.torch, "mm", mm)
    a = torch.randn(4, 8, dtype=torch.bfloat16)
    b = torch.randn(8, 5, dtype=torch.bfloat16)
    with pytest.raises(torch.OutOfMemoryError):
        impl._half_matmul_fp32(a, b)
    assert impl._half_matmul_fp32(a, b).dtype == torch.float32
    assert calls == [torch.float32, torch.float32]  # still the fp32-output path


def test_the_capability_probe_tells_unsupported_from_out_of_memory(monkeypatch):
    impl = importlib.import_module(linear_cross_entropy.__module__)
    assert impl.fp32_output_supported("cpu", torch.bfloat16) is False  # CPU: the model's rounding
    monkeypatch.setattr(impl.torch, "ones", lambda *a, **k: torch.zeros(2, 2))
    for error, expected in [(TypeError("unexpected keyword 'out_dtype'"), False), (None, True)]:
        impl.fp32_output_supported.cache_clear()

        def mm(a, b, *, out_dtype=None, error=error):
            if error:
                raise error
            return a

        monkeypatch.setattr(impl.torch, "mm", mm)
        assert impl.fp32_output_supported("cuda", torch.bfloat16) is expected
    impl.fp32_output_supported.cache_clear()

    def oom(a, b, *, out_dtype=None):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(impl.torch, "mm", oom)
    with pytest.raises(torch.OutOfMemoryError):
        impl.fp32_output_supported("cuda", torch.bfloat16)
    impl.fp32_output_supported.cache_clear()


# --- objectives in per-token NLL and uniform CE (`TokenTerms`) ---------------------------------


def _log_softmax_reference(hidden, weight, bias, softcap):
    """Per-token log-probabilities from the materialized logits, float64 (independent form)."""
    logits = hidden @ weight.t() + bias
    if softcap:
        logits = softcap * torch.tanh(logits / softcap)
    return torch.log_softmax(logits, dim=-1)


def _sequence_objective(segments, ref_logp, positive):
    """A non-linear objective over sequences (segments of tokens), like point-wise DPO: per
    sequence i, Delta_i = mean over its tokens of (log p - ref), and the loss is
    -log sigmoid(+-0.5 * Delta_i - 0.1) (sign by the sequence's label)."""

    def extra(nll, uniform):
        logp = -nll
        losses = []
        for i in range(int(segments.max()) + 1):
            tokens = segments == i
            delta = (logp[tokens] - ref_logp[tokens]).mean()
            sign = 1.0 if positive[i] else -1.0
            losses.append(-F.logsigmoid(sign * 0.5 * delta - 0.1) + 0.05 * uniform[tokens].mean())
        return torch.stack(losses).sum()

    return extra


@pytest.mark.parametrize("softcap", [None, 3.0], ids=["plain", "softcap"])
@pytest.mark.parametrize("chunk_size", [1, 4, None], ids=["chunk1", "chunk4", "default"])
def test_linear_and_non_linear_terms_match_a_float64_reference(softcap, chunk_size):
    from axolotl_ual.loss import TokenTerms, linear_token_loss, token_loss_from_logits

    hidden, weight, bias, labels, eps = _inputs(shape=(2, 9), d=12, vocab=23, seed=3)
    trained = labels != IGNORE
    segments = torch.tensor([[0] * 4 + [1] * 5, [2] * 9]).masked_fill(~trained, -1)
    ref_logp = -torch.rand(labels.shape, dtype=torch.float64)
    weights = torch.rand(labels.shape, dtype=torch.float64) * trained  # some tokens get weight 0
    weights[0, 5] = 0.0
    extra = _sequence_objective(segments, ref_logp, positive=[True, False, False])
    terms = TokenTerms(weights * (1 - eps), weights * eps, extra)

    def reference(h, w, b):
        log_probs = _log_softmax_reference(h, w, b, softcap)
        safe = labels.masked_fill(~trained, 0)
        nll = (-log_probs.gather(-1, safe[..., None]).squeeze(-1)).masked_fill(~trained, 0)
        uniform = (-log_probs.mean(-1)).masked_fill(~trained, 0)
        return (weights * ((1 - eps) * nll + eps * uniform)).sum() + extra(nll, uniform)

    ref, ref_grads = _grads(reference, [hidden, weight, bias], 1.3)
    fused, fused_grads = _grads(
        lambda h, w, b: (
            linear_token_loss(
                h, w, labels, terms, bias=b, softcap=softcap, chunk_size=chunk_size
            ).loss
        ),
        [hidden, weight, bias],
        1.3,
    )
    logits_form, logits_grads = _grads(
        lambda h, w, b: (
            token_loss_from_logits(
                (lambda z: softcap * torch.tanh(z / softcap) if softcap else z)(h @ w.t() + b),
                labels,
                terms,
            ).loss
        ),
        [hidden, weight, bias],
        1.3,
    )
    for value, grads in ((fused, fused_grads), (logits_form, logits_grads)):
        torch.testing.assert_close(value, ref, rtol=1e-10, atol=1e-12)
        for mine, theirs in zip(grads, ref_grads, strict=True):
            torch.testing.assert_close(mine, theirs, rtol=1e-9, atol=1e-11)


def test_token_loss_reports_the_statistics_it_used():
    from axolotl_ual.loss import TokenTerms, linear_token_loss

    hidden, weight, bias, labels, eps = _inputs(shape=(2, 6), d=8, vocab=11, seed=5)
    trained = labels != IGNORE
    result = linear_token_loss(hidden, weight, labels, TokenTerms.smoothed(eps, trained), bias=bias)
    log_probs = _log_softmax_reference(hidden, weight, bias, None)
    nll = -log_probs.gather(-1, labels.masked_fill(~trained, 0)[..., None]).squeeze(-1)
    torch.testing.assert_close(result.nll, nll.masked_fill(~trained, 0))
    torch.testing.assert_close(result.uniform, (-log_probs.mean(-1)).masked_fill(~trained, 0))
    assert not result.nll.requires_grad


def test_tokens_no_term_uses_cost_no_logits(monkeypatch):
    """Weight-0 tokens (instruction tokens at ual_instruction_weight: 0) are skipped entirely."""
    from axolotl_ual.loss import TokenTerms, linear_token_loss

    impl = importlib.import_module(linear_cross_entropy.__module__)

    hidden, weight, _, labels, eps = _inputs(shape=(1, 10), d=8, vocab=11, ignore_every=0)
    weights = torch.zeros(labels.shape, dtype=torch.float64)
    weights[0, :3] = 1.0
    seen = []
    real = impl._logits
    monkeypatch.setattr(impl, "_logits", lambda h, *a: seen.append(h.shape[0]) or real(h, *a))
    linear_token_loss(hidden, weight, labels, TokenTerms.smoothed(eps, weights), chunk_size=100)
    assert seen == [3]
