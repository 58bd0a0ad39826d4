"""The model's output projection, for computing the loss from hidden states.

The fused loss needs what the model does after its last hidden state:
`logits = softcap(scale * (hidden @ W.T + b))`. This module finds W and b (through PEFT and
distributed wrappers, tied embeddings, `modules_to_save`), reads scale and softcap from the
config, and captures the hidden states during the real forward pass by standing in for the
head: the model never builds its full logits. `OutputHead.matches_model` checks the whole
reconstruction against the model's own logits once, so an unknown transform falls back to the
logits path instead of training with a wrong loss. No axolotl imports.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from .errors import UALError


class UnsupportedHead(UALError):
    """The fused loss cannot reproduce this model's logits; the message says why."""


@dataclass
class OutputHead:
    module: nn.Module  # what the model calls (may be a PEFT wrapper)
    scale: float = 1.0  # logits multiplier (Cohere logit_scale, 1 / Granite logits_scaling)
    softcap: float | None = None  # final-logit softcapping (Gemma 2/3)

    def weight_and_bias(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        linear = _effective_linear(self.module)
        return linear.weight, linear.bias

    def linear_inputs(self, hidden: torch.Tensor):
        """(hidden, weight, bias) such that `scale * (hidden @ W.T + b)` = hidden' @ W.T + b'."""
        weight, bias = self.weight_and_bias()
        if self.scale != 1.0:
            hidden = hidden * self.scale
            bias = None if bias is None else bias * self.scale
        return hidden, weight, bias

    @contextlib.contextmanager
    def capture(self):
        """Within the block, calls to the head record their input and return empty logits."""
        captured: list[torch.Tensor] = []
        # accelerate hooks may have set `forward` on the instance already: restore exactly that
        previous = self.module.__dict__.get("forward")

        def stand_in(hidden, *args, **kwargs):
            captured.append(hidden)
            return hidden.new_empty(*hidden.shape[:-1], 0)

        self.module.forward = stand_in
        try:
            yield captured
        finally:
            if previous is None:
                del self.module.forward
            else:
                self.module.forward = previous

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The logits the model would compute from `hidden` (materialized: checks only)."""
        weight, bias = self.weight_and_bias()
        logits = hidden.float() @ weight.float().t()
        if bias is not None:
            logits = logits + bias.float()
        logits = logits * self.scale
        if self.softcap:
            logits = self.softcap * torch.tanh(logits / self.softcap)
        return logits

    def matches_model(self, model: nn.Module, inputs: dict) -> tuple[bool, str]:
        """Run `model` once on `inputs` (no grad) and compare its logits with ours."""
        seen: list[torch.Tensor] = []
        handle = self.module.register_forward_hook(lambda mod, args, out: seen.append(args[0]))
        was_training = model.training
        model.eval()  # one deterministic forward; no gradient-checkpointing replay
        try:
            with torch.no_grad():
                logits = model(**inputs).logits
        finally:
            handle.remove()
            model.train(was_training)
        if len(seen) != 1:
            return False, f"the output head ran {len(seen)} times in one forward pass"
        with torch.no_grad():
            ours = self.logits(seen[0])
        reference = logits.float()
        if ours.shape != reference.shape:
            return False, f"logits shape {tuple(reference.shape)} != {tuple(ours.shape)}"
        scale = reference.abs().max().clamp(min=1e-6)
        error = ((ours - reference).abs().max() / scale).item()
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
    if type(module) is not nn.Linear:
        raise UnsupportedHead(f"the output head is a {type(module).__name__}, not a plain Linear")
    if not module.weight.is_floating_point() or module.weight.dim() != 2:
        raise UnsupportedHead(f"the output head's weight has dtype {module.weight.dtype}")
    return module
