"""The fused loss with sharded parameters (FSDP2, DeepSpeed ZeRO-3, FSDP1) equals the logits path.

Two processes (`torchrun`, gloo on CPU) run `tests/sharded_loss_worker.py`: per case the loss
and every parameter's gradient of a 2-rank sharded model, each rank computing its half of the
batch inside the output head's call, against one process computing the whole batch from the
model's logits; and the largest tensor either path produced, so that the fused path is shown
to hold no (T, V) logits tensor while the measure does see the logits path's.
"""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from axolotl_ual.toolkit import console_script
from tests.support import run_command


def _run_worker(backend: str, tmp_path) -> dict:
    out = tmp_path / f"{backend}.json"
    argv = [console_script("torchrun"), "--nproc_per_node", "2", "-m", "tests.sharded_loss_worker"]
    # DeepSpeed's CPU accelerator (gloo) where there is no GPU
    env = {} if torch.cuda.is_available() else {"DS_ACCELERATOR": "cpu"}
    result = run_command([*argv, backend, str(out)], env=env)
    assert result.returncode == 0, result.stdout[-6000:]
    return json.loads(out.read_text())


def _check(records: dict) -> None:
    assert records
    for case, r in records.items():
        assert r["loss"] == pytest.approx(r["expected_loss"], rel=1e-6), case
        assert r["worst_grad_error"] < 1e-4, case
        assert r["same_parameters_have_grads"], case
        assert r["logits_shape"][-1] == 0, case  # the model returned empty logits
        # the measure sees the logits path's (T, V) tensor; the fused path holds none: its
        # largest tensor is a chunk of logits or the head's weight, not the rank's logits
        assert r["logits_largest"] >= r["local_logits"], case
        assert r["fused_largest"] < r["local_logits"] / 4, case
        if "reference_error" in r:  # the reference log-probs computed inside the sharded head
            assert r["reference_error"] < 1e-5, case


def test_fsdp2(tmp_path):
    records = _run_worker("fsdp2", tmp_path)
    assert len(records) == 5
    _check(records)


@pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None, reason="DeepSpeed is not installed"
)
def test_deepspeed_zero3(tmp_path):
    records = _run_worker("deepspeed", tmp_path)
    assert len(records) == 4
    _check(records)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="FSDP1 needs two accelerators")
def test_fsdp1(tmp_path):
    _check(_run_worker("fsdp1", tmp_path))
