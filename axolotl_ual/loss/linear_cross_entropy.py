"""Fused linear + label-smoothed cross entropy that never materializes the full logits.

The logits of a long sequence over a large vocabulary are the largest tensor of LLM training
(T=4096, V=128k: 2 GiB in fp32, several times that once log-softmax and its gradient exist).
This computes the loss chunk by chunk of tokens: each chunk's logits are built, turned into
probabilities in place, reduced to per-token losses and, when gradients are needed, into the
gradients for `hidden`, `weight` and `bias`, then freed. Pure PyTorch; runs wherever
`torch.matmul` does.

Label smoothing costs almost nothing here. For one token with logits z = W h + b, target y and
smoothing eps (PyTorch's convention, mass eps spread over all V classes),

    loss = lse(z) - (1 - eps) * z_y - eps * mean(z)
    dloss/dz = softmax(z) - (1 - eps) * onehot(y) - eps / V

and mean(z) = h . mean_rows(W) + mean(b) is linear in h, so both the mean and the uniform
`eps / V` part of the gradient are rank-one terms computed in O(d) per token instead of
O(V). Final-logit softcapping (z -> c * tanh(z / c)) breaks that linearity; there the mean and
the uniform term are taken over the capped logits inside each chunk.

Every objective the trainer hosts (label smoothing per sample, instruction tokens with their own
weight, point-wise preference terms) is a function of two per-token quantities, the NLL
`lse - z_y` and the uniform cross entropy `lse - mean(z)` (`TokenTerms`). `linear_token_loss`
evaluates any such objective in one chunked pass: the part linear in them with per-token
coefficients gets its gradients chunk by chunk during that pass; a non-linear rest (a
per-sequence sigmoid, say) is evaluated on the per-token values afterwards, and its gradient
coefficients drive a second pass over the tokens it touches only.
"""

from __future__ import annotations

import functools

import torch

from ._common import (
    TokenLoss,
    TokenStatistics,
    TokenTerms,
    broadcast_epsilon,
    check_reduction,
    compute_dtype,
)

# Bytes of fp32 logits held per chunk by default: large enough for efficient matmuls, small
# next to the rest of a training step (512 tokens at V=128k).
DEFAULT_CHUNK_BYTES = 256 * 2**20


def default_chunk_size(vocab_size: int) -> int:
    """Tokens per chunk so that one chunk of fp32 logits takes about `DEFAULT_CHUNK_BYTES`."""
    return max(16, DEFAULT_CHUNK_BYTES // (4 * vocab_size))


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    epsilon: float | torch.Tensor = 0.0,
    *,
    bias: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    softcap: float | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Cross entropy of `hidden @ weight.T + bias` against `labels`, smoothed per token.

    Equal in value and gradients to::

        logits = hidden @ weight.T + bias
        if softcap: logits = softcap * tanh(logits / softcap)
        F.cross_entropy(logits, labels, label_smoothing=eps_t)   # eps_t per token

    without ever holding more than one chunk of logits.

    Args:
        hidden: (..., d) final hidden states, fp32/bf16/fp16.
        weight: (V, d) output projection (an `lm_head` or tied embedding matrix).
        labels: (...) target ids aligned with `hidden` (the caller shifts for causal LM);
            `ignore_index` marks tokens without a loss; they cost no compute.
        epsilon: label smoothing, a float or a tensor broadcastable to `labels`, in [0, 1).
        bias: optional (V,) output bias.
        ignore_index: label value to skip.
        reduction: "mean" over non-ignored tokens (0, not NaN, when there are none), "sum",
            or "none" (a tensor shaped like `labels`, 0 at ignored tokens).
        softcap: final-logit softcapping value (Gemma 2/3 style), or None.
        chunk_size: tokens per chunk; default `default_chunk_size(V)`.

    Returns:
        The loss in fp32 (fp64 for fp64 inputs). Logits, softmax and reductions are computed
        in fp32; matmuls run in the weight's dtype, accumulating in fp32 (on CUDA the bf16/fp16
        logits matmul also outputs fp32; elsewhere its result is rounded to the input dtype
        first, as the model's own `lm_head` would).

    With reduction "mean"/"sum" the gradients are computed during the forward pass (one
    logits pass in all) and only scaled in backward; with "none" the backward pass
    recomputes each chunk's logits.
    """
    check_reduction(reduction)
    eps = broadcast_epsilon(epsilon, labels)
    if reduction == "none":
        flat_hidden, flat_labels, valid, spec = _flatten(
            hidden, weight, labels, bias, ignore_index, softcap, chunk_size
        )
        per_valid = _PerTokenLoss.apply(
            flat_hidden, weight, bias, flat_labels, eps.reshape(-1), valid, spec
        )
        per_token = per_valid.new_zeros(flat_labels.shape).index_put((valid,), per_valid)
        return per_token.reshape(labels.shape)

    trained = labels != ignore_index
    scale = 1.0 / max(int(trained.sum()), 1) if reduction == "mean" else 1.0
    terms = TokenTerms.smoothed(eps, trained, scale)
    return linear_token_loss(
        hidden,
        weight,
        labels,
        terms,
        bias=bias,
        ignore_index=ignore_index,
        softcap=softcap,
        chunk_size=chunk_size,
    ).loss


def linear_token_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    terms: TokenTerms,
    *,
    bias: torch.Tensor | None = None,
    ignore_index: int = -100,
    softcap: float | None = None,
    chunk_size: int | None = None,
) -> TokenLoss:
    """The objective `terms` of the logits `hidden @ weight.T + bias`, without full logits.

    With `nll_t = lse_t - z_t[y_t]` and `uniform_t = lse_t - mean(z_t)` over the tokens whose
    label is not `ignore_index`, the loss is

        sum_t terms.nll_weight_t * nll_t + terms.uniform_weight_t * uniform_t
        + terms.extra(nll, uniform)

    Value and gradients (hidden, weight, bias) equal those of `token_loss_from_logits` on the
    materialized logits. Returns the loss and the per-token `nll` / `uniform` (detached, shaped
    like `labels`, 0 at ignored tokens and at tokens no term uses) for metrics.
    """
    flat_hidden, flat_labels, valid, spec = _flatten(
        hidden, weight, labels, bias, ignore_index, softcap, chunk_size
    )
    coefficients = terms.flat_weights(labels.shape, hidden.device, spec.acc)
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (hidden, weight, bias)
    )
    stats: list[torch.Tensor] = []
    loss = _TermsLoss.apply(
        flat_hidden,
        weight,
        bias,
        flat_labels,
        valid,
        spec,
        coefficients,
        terms.extra,
        labels.shape,
        needs_grad,
        stats,
    )
    nll, uniform = (t.reshape(labels.shape) for t in stats)
    return TokenLoss(loss, nll, uniform)


def _flatten(hidden, weight, labels, bias, ignore_index, softcap, chunk_size):
    """Check shapes; flatten to (N, d) / (N,); the indices of non-ignored tokens; the `_Spec`."""
    if labels.shape != hidden.shape[:-1]:
        raise ValueError(
            f"labels shape {tuple(labels.shape)} must equal hidden's leading shape "
            f"{tuple(hidden.shape[:-1])}"
        )
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise ValueError(
            f"weight must be (V, d) with d={hidden.shape[-1]}, got {tuple(weight.shape)}"
        )
    if bias is not None and bias.shape != weight.shape[:1]:
        raise ValueError(f"bias must be (V,)=({weight.shape[0]},), got {tuple(bias.shape)}")
    flat_labels = labels.reshape(-1)
    spec = _Spec(
        weight,
        bias,
        softcap=float(softcap) if softcap else None,
        chunk_size=int(chunk_size or default_chunk_size(weight.shape[0])),
    )
    valid = (flat_labels != ignore_index).nonzero().squeeze(1)
    return hidden.reshape(-1, hidden.shape[-1]), flat_labels, valid, spec


class _Spec:
    """Per-call constants: chunking, softcap, and the mean logit row (rank-one terms)."""

    __slots__ = ("acc", "chunk_size", "mean_bias", "mean_row", "softcap")

    def __init__(self, weight, bias, softcap: float | None, chunk_size: int):
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.softcap = softcap
        self.chunk_size = chunk_size
        self.acc = compute_dtype(weight)
        self.mean_row = self.mean_bias = None
        if softcap is None:
            with torch.no_grad():
                self.mean_row = _mean_rows(weight, self.acc)
                self.mean_bias = bias.to(self.acc).mean() if bias is not None else None

    def mean_logit(self, hidden: torch.Tensor) -> torch.Tensor:
        """mean over the vocabulary of hidden @ weight.T + bias, in O(d) per token."""
        mean = hidden.to(self.acc) @ self.mean_row
        return mean if self.mean_bias is None else mean + self.mean_bias


class _TermsLoss(torch.autograd.Function):
    """`TokenTerms` of the chunked logits; every gradient is computed in the forward pass."""

    @staticmethod
    def forward(
        ctx,
        hidden,
        weight,
        bias,
        labels,
        valid,
        spec,
        coefficients,
        extra,
        shape,
        needs_grad,
        stats_out,
    ):
        want = (
            needs_grad and hidden.requires_grad,
            needs_grad and weight.requires_grad,
            needs_grad and bias is not None and bias.requires_grad,
        )
        grads = _Gradients(hidden, weight, bias, want, spec.acc)
        nll_weight, uniform_weight = coefficients
        nll = torch.zeros(labels.shape, dtype=spec.acc, device=hidden.device)
        uniform = torch.zeros_like(nll)
        total = torch.zeros((), dtype=torch.float64, device=hidden.device)

        # pass 1: the linear part (and, for `extra`, every token's statistics)
        used = (nll_weight != 0) | (uniform_weight != 0)
        rows_1 = valid if extra is not None else valid[used[valid]]
        for rows in rows_1.split(spec.chunk_size):
            chunk = _Chunk(hidden, weight, bias, labels, rows, spec)
            nll[rows], uniform[rows] = chunk.nll, chunk.uniform
            a, b = nll_weight[rows], uniform_weight[rows]
            total += (a * chunk.nll + b * chunk.uniform).sum(dtype=torch.float64)
            if grads.any:
                grads.add_chunk(chunk, a, b)

        # pass 2: the non-linear rest, through the coefficients its gradient gives each token
        if extra is not None:
            with torch.enable_grad():
                nll_in = nll.detach().reshape(shape).requires_grad_()
                uniform_in = uniform.detach().reshape(shape).requires_grad_()
                value = extra(nll_in, uniform_in)
                if grads.any and value.requires_grad:
                    grad_nll, grad_uniform = torch.autograd.grad(
                        value, (nll_in, uniform_in), allow_unused=True
                    )
                else:
                    grad_nll = grad_uniform = None
            total += value.detach().to(torch.float64)
            if grad_nll is not None or grad_uniform is not None:
                a2 = _flat_or_zeros(grad_nll, nll)
                b2 = _flat_or_zeros(grad_uniform, nll)
                for rows in valid[((a2 != 0) | (b2 != 0))[valid]].split(spec.chunk_size):
                    grads.add_chunk(
                        _Chunk(hidden, weight, bias, labels, rows, spec), a2[rows], b2[rows]
                    )
        stats_out.extend((nll.detach(), uniform.detach()))
        ctx.grads = grads.finish()
        return total.to(spec.acc)

    @staticmethod
    def backward(ctx, grad_output, *_):
        grad_hidden, grad_weight, grad_bias = ctx.grads
        ctx.grads = None
        scaled = [
            None if g is None else g.mul_(grad_output.to(g.dtype))
            for g in (grad_hidden, grad_weight, grad_bias)
        ]
        return (*scaled, None, None, None, None, None, None, None, None)


def _flat_or_zeros(grad: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like) if grad is None else grad.reshape(-1).to(like.dtype)


class _PerTokenLoss(torch.autograd.Function):
    """Per-token losses of the valid tokens; backward recomputes each chunk's logits."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, eps, valid, spec):
        losses = []
        for rows in valid.split(spec.chunk_size):
            chunk = _Chunk(hidden, weight, bias, labels, rows, spec)
            e = eps[rows].to(spec.acc)
            losses.append((1.0 - e) * chunk.nll + e * chunk.uniform)
        ctx.save_for_backward(hidden, weight, bias, labels, eps, valid)
        ctx.spec = spec
        if not losses:
            return hidden.new_zeros((0,), dtype=spec.acc)
        return torch.cat(losses)

    @staticmethod
    def backward(ctx, grad_losses):
        hidden, weight, bias, labels, eps, valid = ctx.saved_tensors
        want = ctx.needs_input_grad[:3]
        grads = _Gradients(hidden, weight, bias, want, ctx.spec.acc)
        start = 0
        for rows in valid.split(ctx.spec.chunk_size):
            chunk = _Chunk(hidden, weight, bias, labels, rows, ctx.spec)
            g = grad_losses[start : start + rows.numel()].to(ctx.spec.acc)
            e = eps[rows].to(ctx.spec.acc)
            grads.add_chunk(chunk, g * (1.0 - e), g * e)
            start += rows.numel()
        return (*grads.finish(), None, None, None, None)


class _Chunk:
    """One chunk of tokens: per-token NLL and uniform CE, and softmax(logits) kept for gradients."""

    def __init__(self, hidden, weight, bias, labels, rows, spec: _Spec):
        self.rows = rows
        self.hidden = hidden.index_select(0, rows)
        self.labels = labels.index_select(0, rows)
        self.spec = spec
        self.softcap = spec.softcap
        logits = _logits(self.hidden, weight, bias, spec.acc)
        if self.softcap is None:
            target = logits.gather(1, self.labels[:, None]).squeeze(1)
            mean = spec.mean_logit(self.hidden)
            self.tanh = None
        else:
            # logits buffer becomes tanh(z / c); the capped logits are c * tanh
            self.tanh = logits.div_(self.softcap).tanh_()
            target = self.softcap * self.tanh.gather(1, self.labels[:, None]).squeeze(1)
            mean = self.softcap * self.tanh.mean(dim=1)
            logits = self.tanh * self.softcap
        self.lse = _softmax_(logits)
        self.probs = logits
        self.target_logit = target
        self.mean_logit = mean
        self.nll = self.lse - target
        self.uniform = self.lse - mean

    def logits_grad_(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """d(sum_t a_t nll_t + b_t uniform_t)/d(raw logits), in place of the probabilities:
        (a + b) softmax - a onehot(y) - b / V.

        Without softcap the uniform `-b / V` term is left out (see `_Gradients`).
        """
        grad = self.probs.mul_((a + b)[:, None])
        grad.scatter_add_(1, self.labels[:, None], -a[:, None])
        if self.softcap is not None:
            grad.sub_((b / grad.shape[1])[:, None])
            grad.mul_(self.tanh.mul_(self.tanh).neg_().add_(1.0))  # d(c*tanh(z/c))/dz
        self.probs = self.tanh = None
        return grad


class _Gradients:
    """Accumulates gradients for hidden / weight / bias over chunks."""

    def __init__(self, hidden, weight, bias, want, acc: torch.dtype):
        self.want_hidden, self.want_weight, self.want_bias = want
        self.any = any(want)
        self.weight = weight
        self.bias = bias
        self.vocab = weight.shape[0]
        self.acc = acc
        full = {"dtype": acc, "device": weight.device}
        self.hidden = torch.zeros_like(hidden) if self.want_hidden else None
        self.weight_acc = torch.zeros(weight.shape, **full) if self.want_weight else None
        self.bias_acc = torch.zeros(weight.shape[:1], **full) if self.want_bias else None
        # rank-one parts of the uniform -b/V gradient term (no softcap only)
        self._uniform_hidden_sum = torch.zeros(weight.shape[1], **full)
        self._uniform_total = torch.zeros((), **full)

    def add_chunk(self, chunk: _Chunk, a: torch.Tensor, b: torch.Tensor) -> None:
        """Add the gradients of sum_t a_t nll_t + b_t uniform_t over the chunk's tokens."""
        uniform = chunk.softcap is None
        grad_logits = chunk.logits_grad_(a, b)
        low = grad_logits.to(self.weight.dtype)
        if self.want_hidden:
            grad_h = (low @ self.weight).to(self.acc)
            if uniform:
                grad_h -= b[:, None] * chunk.spec.mean_row  # the rank-one -b / V part
            # add, not copy: a token a non-linear term also uses is visited twice
            self.hidden.index_add_(0, chunk.rows, grad_h.to(self.hidden.dtype))
        if self.want_weight:
            h = chunk.hidden.to(self.weight.dtype)
            if self.weight.dtype == self.acc:
                self.weight_acc.addmm_(low.t(), h)
            else:
                self.weight_acc += (low.t() @ h).to(self.acc)
            if uniform:
                self._uniform_hidden_sum += b @ chunk.hidden.to(self.acc)
        if self.want_bias:
            self.bias_acc += grad_logits.sum(dim=0)
            if uniform:
                self._uniform_total += b.sum()

    def finish(self):
        grad_weight = grad_bias = None
        if self.want_weight:
            self.weight_acc -= self._uniform_hidden_sum[None, :] / self.vocab
            grad_weight = self.weight_acc.to(self.weight.dtype)
        if self.want_bias:
            self.bias_acc -= self._uniform_total / self.vocab
            grad_bias = self.bias_acc.to(self.bias.dtype)
        return self.hidden, grad_weight, grad_bias


def _softmax_(logits: torch.Tensor) -> torch.Tensor:
    """Turn logits into probabilities in place; return the log-sum-exp per row."""
    row_max = logits.amax(dim=1, keepdim=True)
    logits.sub_(row_max).exp_()
    row_sum = logits.sum(dim=1, keepdim=True)
    logits.div_(row_sum)
    return (row_max + row_sum.log()).squeeze(1)


def _mean_rows(weight: torch.Tensor, acc: torch.dtype, rows_per_step: int = 8192):
    """mean over rows of `weight`, accumulated in `acc`, one block of rows at a time (no
    full-size fp32 copy of a bf16 weight)."""
    total = torch.zeros(weight.shape[1], dtype=acc, device=weight.device)
    for block in weight.split(rows_per_step):
        total += block.sum(dim=0, dtype=acc)
    return total / weight.shape[0]


def _logits(hidden: torch.Tensor, weight: torch.Tensor, bias, acc: torch.dtype):
    h = hidden.to(weight.dtype)
    logits = h @ weight.t() if weight.dtype == acc else _half_matmul_fp32(h, weight.t())
    if bias is not None:
        logits += bias.to(acc)
    return logits


def _half_matmul_fp32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 matmul with an fp32 result: exact fp32 output where the device supports it."""
    if fp32_output_supported(a.device.type, a.dtype):
        return torch.mm(a, b, out_dtype=torch.float32)
    return (a @ b).float()


@functools.cache
def fp32_output_supported(device_type: str, dtype: torch.dtype) -> bool:
    """Whether `torch.mm(..., out_dtype=torch.float32)` runs for `dtype` inputs on CUDA.

    Decided once per device type and dtype by a 2x2 probe, never from a failure of a real call:
    an out-of-memory error there is the caller's to see, not a reason to switch paths. Other
    devices keep the model's own rounding of the logits to the input dtype.
    """
    if device_type != "cuda":
        return False
    probe = torch.ones(2, 2, dtype=dtype, device=device_type)
    try:
        torch.mm(probe, probe, out_dtype=torch.float32)
    except torch.OutOfMemoryError:
        raise
    except (RuntimeError, TypeError, NotImplementedError):  # an older torch or kernel
        return False
    return True


@torch.no_grad()
def linear_token_statistics(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    ignore_index: int = -100,
    softcap: float | None = None,
    chunk_size: int | None = None,
) -> TokenStatistics:
    """Per-token NLL, uniform cross entropy and top-1 correctness, without full logits.

    The no-grad counterpart of `linear_cross_entropy` for evaluation: one pass gives both the
    smoothed loss (`TokenStatistics.smoothed`) and unsmoothed metrics.
    """
    flat_hidden, flat_labels, valid, spec = _flatten(
        hidden, weight, labels, bias, ignore_index, softcap, chunk_size
    )
    zeros = torch.zeros(flat_labels.shape, dtype=torch.float32, device=hidden.device)
    stats = TokenStatistics(
        nll=zeros.clone(),
        uniform_ce=zeros.clone(),
        correct=torch.zeros_like(flat_labels, dtype=torch.bool),
        valid=flat_labels != ignore_index,
    )
    for rows in valid.split(spec.chunk_size):
        chunk = _Chunk(flat_hidden, weight, bias, flat_labels, rows, spec)
        stats.nll[rows] = (chunk.lse - chunk.target_logit).float()
        stats.uniform_ce[rows] = (chunk.lse - chunk.mean_logit).float()
        target_prob = chunk.probs.gather(1, chunk.labels[:, None]).squeeze(1)
        stats.correct[rows] = target_prob >= chunk.probs.amax(dim=1)
    return stats.reshape(labels.shape)
