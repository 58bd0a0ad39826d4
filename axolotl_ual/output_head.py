"""The model's output projection, for computing the loss from hidden states.

The fused loss needs what the model does after its last hidden state:
`logits = softcap(scale * (hidden @ W.T + b))`. This module finds W and b (through PEFT and
distributed wrappers, tied embeddings, `modules_to_save`), reads scale and softcap from the
config, and computes the loss during the real forward pass by standing in for the head's
forward: the model never builds its full logits, and where its parameters are sharded (FSDP,
DeepSpeed ZeRO-3) they are whole there, gathered for the head's call as for any module.
`OutputHead.matches_model` checks the whole reconstruction against the model's own logits once,
so an unknown transform falls back to the logits path instead of training with a wrong loss.
No axolotl imports.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .errors import UALError
from .loss import TokenLoss


class UnsupportedHead(UALError):
    """The fused loss cannot reproduce this model's logits; the message says why."""


@dataclass
class OutputHead:
    module: nn.Module  # what the model calls (may be a PEFT wrapper)
    scale: float = 1.0  # logits multiplier (Cohere logit_scale, 1 / Granite logits_scaling)
    softcap: float | None = None  # final-logit softcapping (Gemma 2/3)

    def weight_and_bias(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The head's parameters as the module holds them now: inside its forward they are whole,
        outside it they may be shards (FSDP, DeepSpeed ZeRO-3)."""
        linear = _effective_linear(self.module)
        return linear.weight, linear.bias

    def _linear_inputs(self, hidden: torch.Tensor):
        """(hidden, weight, bias) such that `scale * (hidden @ W.T + b)` = hidden' @ W.T + b'."""
        weight, bias = self.weight_and_bias()
        if self.scale != 1.0:
            hidden = hidden * self.scale
            bias = None if bias is None else bias * self.scale
        return hidden, weight, bias

    @contextlib.contextmanager
    def reduce_in_forward(self, reduce: Callable[[torch.Tensor, torch.Tensor, Any], Any]):
        """Within the block, each call of the head computes `reduce(hidden, weight, bias)` (the
        scale folded in; `softcap` is the caller's) instead of the logits, records the result
        in the list it yields, and returns empty logits: the full logits are never built.

        `reduce` runs inside the head's own call, where FSDP (1 and 2) and DeepSpeed ZeRO-3
        have gathered its sharded parameters, so the same code serves sharded and whole
        models. When the result is a `TokenLoss` with a gradient, the empty logits are tied to
        it, so that the hooks those frameworks put on a module's output (FSDP2's pre-backward,
        ZeRO-3's parameter fetch) run before the loss's backward, as they would for real logits.
        """
        results: list[Any] = []

        def forward(original, hidden, *args, **kwargs):
            result = reduce(*self._linear_inputs(hidden))
            results.append(result)
            empty = hidden.new_zeros((*hidden.shape[:-1], 0))
            loss = result.loss if isinstance(result, TokenLoss) else result
            if torch.is_tensor(loss) and loss.requires_grad:
                empty = empty + loss.sum().to(empty.dtype)  # 0 elements: a value-free tie
            return empty

        with self._forward_replaced(forward):
            yield results

    @contextlib.contextmanager
    def _forward_replaced(self, forward):
        """Within the block the module's forward is `forward(original_forward, *args)`; its
        hooks (accelerate's, FSDP's, DeepSpeed's) still run around it."""
        # accelerate hooks may have set `forward` on the instance already: restore exactly that
        previous = self.module.__dict__.get("forward")
        self.module.forward = functools.partial(forward, self.module.forward)
        try:
            yield
        finally:
            if previous is None:
                del self.module.forward
            else:
                self.module.forward = previous

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The logits the model would compute from `hidden` (materialized: checks only; call
        inside the head's forward, where its parameters are whole)."""
        hidden, weight, bias = self._linear_inputs(hidden)
        logits = hidden.float() @ weight.float().t()
        if bias is not None:
            logits = logits + bias.float()
        if self.softcap:
            logits = self.softcap * torch.tanh(logits / self.softcap)
        return logits

    def matches_model(self, model: nn.Module, inputs: dict) -> tuple[bool, str]:
        """Run `model` once on `inputs` (no grad) and compare its logits with ours, rebuilt from
        the head's input inside the head's call (collective under FSDP / ZeRO-3: every rank
        runs it)."""
        ours: list[torch.Tensor | str] = []

        def forward(original, hidden, *args, **kwargs):
            weight, _ = self.weight_and_bias()
            if weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
                ours.append(f"the head's weight has shape {tuple(weight.shape)} in its forward")
            else:
                ours.append(self._logits(hidden))
            return original(hidden, *args, **kwargs)

        was_training = model.training
        model.eval()  # one deterministic forward; no gradient-checkpointing replay
        try:
            with torch.no_grad(), self._forward_replaced(forward):
                logits = model(**inputs).logits
        finally:
            model.train(was_training)
        if len(ours) != 1:
            return False, f"the output head ran {len(ours)} times in one forward pass"
        if isinstance(ours[0], str):
            return False, ours[0]
        reference = logits.float()
        if ours[0].shape != reference.shape:
            return False, f"logits shape {tuple(reference.shape)} != {tuple(ours[0].shape)}"
        scale = reference.abs().max().clamp(min=1e-6)
        error = ((ours[0] - reference).abs().max() / scale).item()
        tolerance = 1e-4 if logits.dtype == torch.float32 else 3e-2
        if error > tolerance:
            return False, (
                f"the model's logits differ from softcap(scale * (hidden @ W.T + b)) by {error:.2e} "
                "(relative): it transforms its logits in a way UAL does not know"
            )
        return True, f"logits reproduced to {error:.1e} (relative)"


def find_output_head(model: nn.Module) -> OutputHead:
    """The output head of a (possibly PEFT- or DDP-wrapped) causal LM."""
    base = model
    while hasattr(base, "module") and isinstance(base.module, nn.Module):  # DDP and friends
        base = base.module
    if hasattr(base, "get_base_model"):  # PEFT
        base = base.get_base_model()
    get_head = getattr(base, "get_output_embeddings", None)
    module = get_head() if callable(get_head) else None
    if module is None:
        raise UnsupportedHead(f"{type(base).__name__} exposes no output embeddings")
    _effective_linear(module)  # raises UnsupportedHead early
    config = getattr(base, "config", None)
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    scale = float(getattr(text_config, "logit_scale", None) or 1.0)
    logits_scaling = getattr(text_config, "logits_scaling", None)
    if logits_scaling:
        scale /= float(logits_scaling)
    softcap = getattr(text_config, "final_logit_softcapping", None)
    return OutputHead(module=module, scale=scale, softcap=float(softcap) if softcap else None)


def _effective_linear(module: nn.Module) -> nn.Linear:
    """The plain `nn.Linear` whose weight produces the logits."""
    wrapped = getattr(module, "modules_to_save", None)
    if isinstance(wrapped, nn.ModuleDict):  # PEFT ModulesToSaveWrapper
        active = list(getattr(module, "active_adapters", []) or [])
        if getattr(module, "disable_adapters", False) or not active or active[0] not in wrapped:
            return _effective_linear(module.original_module)
        return _effective_linear(wrapped[active[0]])
    if hasattr(module, "base_layer"):
        raise UnsupportedHead(
            f"the output head is an adapter layer ({type(module).__name__}, e.g. LoRA on lm_head)"
        )
    if _unsharded_class(module) is not nn.Linear:
        raise UnsupportedHead(f"the output head is a {type(module).__name__}, not a plain Linear")
    if not module.weight.is_floating_point():
        raise UnsupportedHead(f"the output head's weight has dtype {module.weight.dtype}")
    return module


def _unsharded_class(module: nn.Module) -> type:
    """The module's own class: FSDP2's `fully_shard` swaps it for a subclass of (FSDPModule,
    the class) named `FSDP<class>` (torch 2.6-2.14)."""
    cls = type(module)
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # a torch built without distributed support
        return cls
    if issubclass(cls, FSDPModule):
        return next(base for base in cls.__bases__ if not issubclass(base, FSDPModule))
    return cls
