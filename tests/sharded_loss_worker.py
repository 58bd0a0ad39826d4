"""Run by `tests/test_sharded_loss.py`: `torchrun --nproc_per_node 2 -m tests.sharded_loss_worker
<fsdp2|deepspeed|fsdp1> out.json` (gloo on CPU, nccl on GPUs).

Each case builds a tiny causal LM twice from one seed: whole, in one process, computing the
loss of the full batch from the model's logits (the reference); and sharded across the ranks
(torch's FSDP2 `fully_shard`, DeepSpeed ZeRO-3, or FSDP1), each rank computing its half of the
batch with the fused loss inside the output head's call, as `UALTrainer` does. Rank 0 writes,
per case, both losses, the largest relative gradient difference over all parameters (the
sharded gradients gathered whole), and the largest tensor any operation produced in each path:
the fused path must never hold a (T, V) logits tensor; the reference path shows that the
measure sees one.
"""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist
import transformers

from axolotl_ual.columns import INSTRUCTION, PREFERENCE, REFERENCE, SEGMENT, UNCERTAINTY
from axolotl_ual.loss import linear_token_loss, token_loss_from_logits
from axolotl_ual.mapping import UncertaintyToEpsilon
from axolotl_ual.objectives import PointwisePreference, PredictionBatch, SmoothedSFT
from axolotl_ual.output_head import find_output_head
from axolotl_ual.reference import adapter_reference, token_logprobs
from benchmarks.memory import LargestTensor

VOCAB, HIDDEN, SEQUENCES, LENGTH, CHUNK = 8192, 32, 4, 256, 16
IGNORE = -100


def build(seed: int, tied: bool = False, lora: bool = False):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=LENGTH,
        tie_word_embeddings=tied,
    )
    model = transformers.LlamaForCausalLM(config)
    if lora:
        from peft import LoraConfig, get_peft_model

        # random A and B: the adapters change the model from the first step (Delta != 0)
        lora_config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
        model = get_peft_model(model, lora_config)
    return model.to(device())


def device() -> torch.device:
    return (
        torch.device("cuda", dist.get_rank()) if torch.cuda.is_available() else torch.device("cpu")
    )


def decoder_layers(model):
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return list(base.model.layers)


class FSDP2:
    """torch's `fully_shard` on each decoder layer (and the head, if asked), then the root."""

    def __init__(self, head_alone: bool = False):
        self.head_alone = head_alone

    def shard(self, model, train: bool = True):
        from torch.distributed.fsdp import fully_shard

        for layer in decoder_layers(model):
            fully_shard(layer)
        if self.head_alone:  # the head its own FSDP group, resharded after its forward
            fully_shard(model.get_output_embeddings())
        fully_shard(model)
        return model

    def backward(self, model, loss):
        loss.backward()

    def gradients(self, model) -> dict[str, torch.Tensor]:
        return {n: p.grad.full_tensor() for n, p in model.named_parameters() if p.grad is not None}


class FSDP1:
    """FullyShardedDataParallel with one unit per decoder layer (needs an accelerator)."""

    def shard(self, model, train: bool = True):
        from torch.distributed.fsdp import FullyShardedDataParallel
        from torch.distributed.fsdp.wrap import ModuleWrapPolicy

        policy = ModuleWrapPolicy({type(decoder_layers(model)[0])})
        return FullyShardedDataParallel(model, auto_wrap_policy=policy, use_orig_params=True)

    def backward(self, model, loss):
        loss.backward()

    def gradients(self, model) -> dict[str, torch.Tensor]:
        from torch.distributed.fsdp import FullyShardedDataParallel

        with FullyShardedDataParallel.summon_full_params(model, with_grads=True):
            return {
                name.replace("_fsdp_wrapped_module.", ""): p.grad.clone()
                for name, p in model.named_parameters()
                if p.grad is not None
            }


class ZeRO3:
    """A DeepSpeed ZeRO-3 engine (parameters partitioned, gathered per module call)."""

    def shard(self, model, train: bool = True):
        import deepspeed

        config = {
            "train_micro_batch_size_per_gpu": SEQUENCES // dist.get_world_size(),
            "gradient_accumulation_steps": 1,
            "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0},
            "steps_per_print": 10**9,
        }
        if train:
            config["optimizer"] = {"type": "SGD", "params": {"lr": 0.0}}
            config["zero_allow_untested_optimizer"] = True
            params = [p for p in model.parameters() if p.requires_grad]
            engine, *_ = deepspeed.initialize(model=model, model_parameters=params, config=config)
        else:  # the reference model: partitioned, no optimizer
            engine, *_ = deepspeed.initialize(model=model, config=config)
        return engine

    def backward(self, engine, loss):
        engine.backward(loss)

    def gradients(self, engine) -> dict[str, torch.Tensor]:
        from deepspeed.utils import safe_get_full_grad

        grads = {n: safe_get_full_grad(p) for n, p in engine.module.named_parameters()}
        return {n: g for n, g in grads.items() if g is not None}


def data():
    """Input ids and the side columns of 4 sequences: a prompt (2 of 8 instruction tokens
    trained), a response, uncertainties, labels good / bad, and each token's sequence."""
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, VOCAB, (SEQUENCES, LENGTH), generator=g)
    labels = ids.clone()
    labels[:, :8] = IGNORE
    labels[:, 3:5] = ids[:, 3:5]  # trained instruction tokens
    instruction = torch.zeros_like(ids, dtype=torch.bool)
    instruction[:, 3:5] = True
    u = torch.tensor([0.1, 0.9, 0.5, 0.3])[:, None].expand(SEQUENCES, LENGTH)
    good = torch.tensor([1.0, 0.0, 1.0, 0.0])[:, None].expand(SEQUENCES, LENGTH)
    segment = torch.arange(SEQUENCES)[:, None].expand(SEQUENCES, LENGTH)
    columns = {
        UNCERTAINTY.name: u.contiguous(),
        INSTRUCTION.name: instruction,
        PREFERENCE.name: good.contiguous(),
        SEGMENT.name: segment.contiguous(),
    }
    return ids.to(device()), labels.to(device()), {k: v.to(device()) for k, v in columns.items()}


def objective(kind: str):
    mapping = UncertaintyToEpsilon("linear", 0.0, 0.3)
    if kind == "sft":
        return SmoothedSFT(mapping, instruction_weight=0.5, instruction_smoothing=0.05)
    return PointwisePreference(mapping, variant="ulma", beta=0.5, constant=0.1)


def reference_logprobs(model, head, ids, labels, adapter: bool):
    inputs = {"input_ids": ids}
    if adapter:
        return adapter_reference(model, head, inputs, labels)
    return token_logprobs(model, head, inputs, labels)


def module_of(model):
    return getattr(model, "module", model)  # a DeepSpeed engine's model


def run_case(sharding, kind: str, tied=False, lora=False) -> dict:
    rank, world = dist.get_rank(), dist.get_world_size()
    ids, labels, columns = data()
    goal = objective(kind)
    # full fine-tuning: the reference is another model (the initial weights in training)
    reference_seed = None if lora else 1

    # --- reference: whole model, whole batch, logits path
    model = build(0, tied, lora)
    if goal.needs_reference:
        source = model if lora else build(reference_seed)
        columns[REFERENCE.name] = reference_logprobs(source, None, ids, labels, adapter=lora)
    batch = PredictionBatch.shifted(labels, columns)
    with LargestTensor() as logits_path:
        logits = model(input_ids=ids).logits
        result = token_loss_from_logits(logits, batch.labels, goal.terms(batch))
        expected = result.loss / goal.normalizer(batch)
        expected.backward()
    expected_grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    # --- sharded: each rank its half of the batch, the loss inside the head's call
    model = sharding.shard(build(0, tied, lora))
    part = slice(rank * SEQUENCES // world, (rank + 1) * SEQUENCES // world)
    local = {name: value[part] for name, value in columns.items()}
    local[SEGMENT.name] = local[SEGMENT.name] - part.start  # per micro-batch, as the collator
    head = find_output_head(module_of(model))
    record = {}
    if goal.needs_reference:
        if lora:
            source, source_head = module_of(model), head
        else:
            source = sharding.shard(build(reference_seed), train=False)
            source_head = find_output_head(module_of(source))
        with torch.no_grad():
            local_reference = reference_logprobs(
                source, source_head, ids[part], labels[part], adapter=lora
            )
        error = (local_reference - columns[REFERENCE.name][part]).abs().max()
        record["reference_error"] = float(error)
        local[REFERENCE.name] = local_reference
    batch = PredictionBatch.shifted(labels[part], local)
    terms = goal.terms(batch)
    normalizer = torch.as_tensor(goal.normalizer(batch), dtype=torch.float64, device=device())
    dist.all_reduce(normalizer)  # the trainer's normalizer: the whole step, all ranks

    def reduce(hidden, weight, bias):
        return linear_token_loss(
            hidden, weight, batch.labels, terms, bias=bias, softcap=head.softcap, chunk_size=CHUNK
        )

    with LargestTensor() as fused_path:
        with head.reduce_in_forward(reduce) as results:
            out = model(input_ids=ids[part])
        # as the trainer: tied to the (empty) logits, times the world size (the sharded
        # frameworks average gradients over ranks)
        total = results[0].loss + out.logits.sum()
        loss = total / normalizer.to(total.dtype)
        sharding.backward(model, loss * world)
    gathered = loss.detach().clone()
    dist.all_reduce(gathered)

    grads = sharding.gradients(model)
    errors = {
        name: float((grad - expected_grads[name]).abs().max() / expected_grads[name].abs().max())
        for name, grad in grads.items()
    }
    record.update(
        loss=gathered.item(),
        expected_loss=expected.item(),
        worst_grad_error=max(errors.values()),
        same_parameters_have_grads=sorted(grads) == sorted(expected_grads),
        logits_shape=list(out.logits.shape),
        fused_largest=fused_path.numel,
        logits_largest=logits_path.numel,
        local_logits=(part.stop - part.start) * LENGTH * VOCAB,
    )
    return record


CASES = {
    "fsdp2": {
        "sft, head in the root group": (FSDP2(), {"kind": "sft"}),
        "sft, head its own group": (FSDP2(head_alone=True), {"kind": "sft"}),
        "sft, tied embeddings": (FSDP2(), {"kind": "sft", "tied": True}),
        "ulma, full fine-tuning": (FSDP2(), {"kind": "ulma"}),
        "ulma, lora (adapter-disabled reference)": (FSDP2(), {"kind": "ulma", "lora": True}),
    },
    "deepspeed": {
        "sft": (ZeRO3(), {"kind": "sft"}),
        "sft, tied embeddings": (ZeRO3(), {"kind": "sft", "tied": True}),
        "ulma, full fine-tuning": (ZeRO3(), {"kind": "ulma"}),
        "ulma, lora (adapter-disabled reference)": (ZeRO3(), {"kind": "ulma", "lora": True}),
    },
    "fsdp1": {
        "sft": (FSDP1(), {"kind": "sft"}),
        "ulma, full fine-tuning": (FSDP1(), {"kind": "ulma"}),
    },
}


def main(backend: str, out_path: str) -> None:
    if backend == "deepspeed":
        import deepspeed

        deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
    else:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    torch.set_num_threads(1)
    records = {name: run_case(s, **case) for name, (s, case) in CASES[backend].items()}
    if dist.get_rank() == 0:
        with open(out_path, "w") as f:
            json.dump(records, f, indent=2)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
