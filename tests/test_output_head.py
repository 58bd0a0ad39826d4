"""The fused path reproduces each model's logits, loss and gradients, or refuses with a reason.

"Fused" is what `UALTrainer` does: run the model with its output head stood in for, then
`linear_cross_entropy` on the captured hidden states. "Logits" is the plain path: the model's
own logits and `smoothed_cross_entropy`. Both must give the same loss and the same gradients
for every trainable parameter.
"""

from __future__ import annotations

import pytest
import torch
import transformers
from peft import LoraConfig, get_peft_model
from torch import nn

from axolotl_ual.loss import linear_cross_entropy, smoothed_cross_entropy
from axolotl_ual.output_head import UnsupportedHead, find_output_head

VOCAB, HIDDEN = 96, 32
SMALL = {
    "vocab_size": VOCAB,
    "hidden_size": HIDDEN,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 8,
    "max_position_embeddings": 64,
}


def _model(kind: str, **extra):
    torch.manual_seed(0)
    if kind == "llama":
        return transformers.LlamaForCausalLM(transformers.LlamaConfig(**SMALL, **extra))
    if kind == "gemma2":  # final-logit softcapping
        config = transformers.Gemma2Config(**SMALL, final_logit_softcapping=2.0, **extra)
        return transformers.Gemma2ForCausalLM(config)
    if kind == "cohere":  # logits * logit_scale, tied embeddings
        return transformers.CohereForCausalLM(
            transformers.CohereConfig(**SMALL, logit_scale=0.5, **extra)
        )
    if kind == "granite":  # logits / logits_scaling
        return transformers.GraniteForCausalLM(
            transformers.GraniteConfig(**SMALL, logits_scaling=4.0, **extra)
        )
    raise ValueError(kind)


def _batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (2, 12), generator=g)
    labels = ids.clone()
    labels[:, :4] = -100  # a prompt
    eps = torch.tensor([[0.05], [0.3]]).expand(2, 12).contiguous()
    return ids, labels, eps


def _shift(labels, eps):
    labels = torch.nn.functional.pad(labels, (0, 1), value=-100)[:, 1:]
    eps = torch.nn.functional.pad(eps, (0, 1))[:, 1:]
    return labels, eps


def _loss_and_grads(model, fused: bool):
    ids, labels, eps = _batch()
    labels, eps = _shift(labels, eps)
    model.zero_grad()
    if fused:
        head = find_output_head(model)

        def reduce(hidden, weight, bias):
            return linear_cross_entropy(
                hidden,
                weight,
                labels,
                eps,
                bias=bias,
                softcap=head.softcap,
                reduction="sum",
                chunk_size=5,
            )

        with head.reduce_in_forward(reduce) as results:
            out = model(input_ids=ids)
        assert out.logits.numel() == 0  # the full logits were never built
        loss = results[0]
    else:
        loss = smoothed_cross_entropy(model(input_ids=ids).logits, labels, eps, reduction="sum")
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


def _assert_fused_equals_logits(model):
    ours, our_grads = _loss_and_grads(model, fused=True)
    theirs, their_grads = _loss_and_grads(model, fused=False)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    assert our_grads.keys() == their_grads.keys() and their_grads
    for name in their_grads:
        torch.testing.assert_close(
            our_grads[name], their_grads[name], rtol=1e-4, atol=1e-6, msg=name
        )


@pytest.mark.parametrize("kind", ["llama", "gemma2", "cohere", "granite"])
def test_fused_equals_logits_path(kind):
    model = _model(kind)
    head = find_output_head(model)
    assert head.matches_model(model, {"input_ids": _batch()[0]})[0]
    expected = {
        "llama": (1.0, None),
        "gemma2": (1.0, 2.0),
        "cohere": (0.5, None),
        "granite": (0.25, None),
    }
    assert (head.scale, head.softcap) == expected[kind]
    _assert_fused_equals_logits(model)


def test_tied_embeddings_get_both_gradients():
    model = _model("llama", tie_word_embeddings=True)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    _assert_fused_equals_logits(model)


def test_output_bias():
    model = _model("llama")
    model.lm_head = nn.Linear(HIDDEN, VOCAB, bias=True)
    assert find_output_head(model).weight_and_bias()[1] is model.lm_head.bias
    _assert_fused_equals_logits(model)


def test_peft_lora_with_lm_head_in_modules_to_save():
    model = get_peft_model(
        _model("llama"),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj"], modules_to_save=["lm_head"]),
    )
    head = find_output_head(model)
    weight, _ = head.weight_and_bias()
    trainable = model.base_model.model.lm_head.modules_to_save["default"].weight
    assert weight is trainable and weight.requires_grad
    _assert_fused_equals_logits(model)
    with model.disable_adapter():  # the frozen original head is used then
        assert find_output_head(model).weight_and_bias()[0] is not trainable


def test_lora_on_the_head_is_refused():
    model = get_peft_model(_model("llama"), LoraConfig(r=4, target_modules=["q_proj", "lm_head"]))
    with pytest.raises(UnsupportedHead, match="adapter layer"):
        find_output_head(model)


def test_unknown_logit_transform_is_detected():
    model = _model("llama")
    original = model.forward

    def doubled(*args, **kwargs):
        out = original(*args, **kwargs)
        out.logits = out.logits * 2
        return out

    model.forward = doubled
    ok, reason = find_output_head(model).matches_model(model, {"input_ids": _batch()[0]})
    assert not ok and "transforms its logits" in reason


def test_reduce_in_forward_restores_the_head():
    model = _model("llama")
    head = find_output_head(model)
    ids = _batch()[0]
    with head.reduce_in_forward(lambda hidden, weight, bias: None) as results:
        assert model(input_ids=ids).logits.shape[-1] == 0
    assert results == [None]
    assert model(input_ids=ids).logits.shape[-1] == VOCAB
    assert "forward" not in model.lm_head.__dict__
