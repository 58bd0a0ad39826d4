"""The `hf` backend on a tiny local Llama, checked against independent forward passes; the
`vllm` backend's conversions and its missing-package error."""

from __future__ import annotations

import importlib.util
import math
from types import SimpleNamespace

import pytest
import torch
import transformers

from axolotl_ual.elicit.entropy import entropy_from_top_logprobs
from axolotl_ual.elicit.prompts import (
    LOGPROB_SCALE,
    VERBALIZED_SCALE,
    judge_messages,
    parse_score,
    token_digit,
)
from axolotl_ual.elicit.samples import prepare_samples

from .support import chat_rows, read_jsonl, write_jsonl


@pytest.fixture(scope="module")
def model_and_tokenizer(judge_model):
    tokenizer = transformers.AutoTokenizer.from_pretrained(judge_model)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        judge_model, dtype=torch.float32
    ).eval()
    return model, tokenizer


def entropy_rows():
    rows = chat_rows(5)
    rows[1]["messages"][1]["content"] = (
        "A much longer answer, so that this batch needs padding: " * 3
    )
    rows.append(
        {
            "id": 5,
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Q5: hi"},
                {"role": "assistant", "content": "Hello there."},
                {"role": "user", "content": "and again?"},
                {"role": "assistant", "content": "Hello again."},
            ],
        }
    )
    rows.append({"id": 6, "messages": [{"role": "user", "content": "Q6: no answer yet"}]})
    return rows


def chatml_entropy(model, tokenizer, messages) -> float:
    """Mean entropy over the assistant turns' tokens, by hand: content + <|im_end|>, what
    axolotl trains, not the newline the template writes after the turn."""
    ids, response = [], []
    for message in messages:
        head = f"<|im_start|>{message['role']}\n"
        body = f"{message['content']}<|im_end|>"
        head_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
        body_ids = tokenizer(body, add_special_tokens=False)["input_ids"]
        newline_ids = tokenizer("\n", add_special_tokens=False)["input_ids"]
        ids += head_ids + body_ids + newline_ids
        response += (
            [False] * len(head_ids)
            + [message["role"] == "assistant"] * len(body_ids)
            + [False] * len(newline_ids)
        )
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    entropy = -(logp.exp() * logp).sum(-1)  # entropy[t] is the prediction of token t + 1
    values = [float(entropy[t - 1]) for t in range(1, len(ids)) if response[t]]
    return sum(values) / len(values) / math.log(logits.shape[-1])


def test_hf_entropy_matches_an_independent_computation(
    tmp_path, judge_model, model_and_tokenizer, run_elicit
):
    model, tokenizer = model_and_tokenizer
    rows = entropy_rows()
    write_jsonl(tmp_path / "data.jsonl", rows)
    code, stdout, stderr = run_elicit(
        f"elicit {tmp_path / 'data.jsonl'} -o {tmp_path / 'out.jsonl'} --backend hf --model {judge_model} --method entropy --batch-size 4"
    )
    assert code == 1, stderr  # row 6 has no response to measure
    scored = read_jsonl(tmp_path / "out.jsonl")
    for row in rows[:6]:
        expected = chatml_entropy(model, tokenizer, row["messages"])
        assert scored[row["id"]]["uncertainty"] == pytest.approx(expected, abs=1e-5)
        assert scored[row["id"]]["uncertainty_score"] == pytest.approx(
            expected * math.log(len(tokenizer)), abs=1e-4
        )
    assert scored[6]["uncertainty"] is None
    assert "no response tokens to measure" in stdout


def test_hf_logprob_matches_the_digit_distribution(
    tmp_path, judge_model, model_and_tokenizer, run_elicit
):
    model, tokenizer = model_and_tokenizer
    rows = chat_rows(3)
    rows[2]["messages"][0]["content"] += " (a longer question, for padding)" * 4
    write_jsonl(tmp_path / "data.jsonl", rows)
    command = (
        f"elicit {tmp_path / 'data.jsonl'} -o {tmp_path / 'out.jsonl'} --backend hf "
        f"--model {judge_model} --method logprob --batch-size 3"
    )
    # an untrained model puts a few percent on the digits: by default its rows are null
    code, stdout, stderr = run_elicit(command)
    assert code == 1, stderr
    assert [row["uncertainty"] for row in read_jsonl(tmp_path / "out.jsonl")] == [None] * 3
    assert "warning: the judge put on average only" in stdout
    code, _, stderr = run_elicit(command + " --min-digit-mass 0")
    assert code == 0, stderr
    digit_of = {i: token_digit(tokenizer.decode([i])) for i in range(len(tokenizer))}
    for sample, row in zip(
        prepare_samples(rows, "chat"), read_jsonl(tmp_path / "out.jsonl"), strict=True
    ):
        text = tokenizer.apply_chat_template(
            judge_messages(sample, LOGPROB_SCALE, 16000), tokenize=False, add_generation_prompt=True
        )
        with torch.no_grad():
            logits = model(
                torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
            ).logits[0, -1]
        probs = torch.softmax(logits.double(), -1)
        mass = [0.0] * 10
        for token_id, digit in digit_of.items():
            if digit is not None:
                mass[digit] += float(probs[token_id])
        expected = sum(d * p for d, p in enumerate(mass)) / sum(mass)
        assert row["uncertainty_digit_mass"] == pytest.approx(sum(mass), rel=1e-4)
        assert row["uncertainty_score"] == pytest.approx(expected, abs=1e-4)
        assert row["uncertainty"] == pytest.approx(expected / 9, abs=1e-5)


def test_hf_verbalized_parses_greedy_generations(
    tmp_path, judge_model, model_and_tokenizer, run_elicit
):
    """A random tiny model mostly writes nonsense: what it writes is parsed like any reply."""
    model, tokenizer = model_and_tokenizer
    rows = chat_rows(3)
    write_jsonl(tmp_path / "data.jsonl", rows)
    code, _, _ = run_elicit(
        f"elicit {tmp_path / 'data.jsonl'} -o {tmp_path / 'out.jsonl'} --backend hf --model {judge_model} --max-tokens 3 --parse-retries 0"
    )
    scored = read_jsonl(tmp_path / "out.jsonl")
    expected = []
    for sample in prepare_samples(rows, "chat"):
        text = tokenizer.apply_chat_template(
            judge_messages(sample, VERBALIZED_SCALE, 16000),
            tokenize=False,
            add_generation_prompt=True,
        )
        ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            output = model.generate(
                ids, max_new_tokens=3, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
        score = parse_score(
            tokenizer.decode(output[0, ids.shape[1] :], skip_special_tokens=True), 1, 10
        )
        expected.append(None if score is None else (score - 1) / 9)
    assert [row["uncertainty"] for row in scored] == expected
    assert code == (1 if None in expected else 0)


def test_entropy_needs_a_local_model(tmp_path, run_elicit):
    write_jsonl(tmp_path / "data.jsonl", chat_rows(1))
    code, _, stderr = run_elicit(
        f"elicit {tmp_path / 'data.jsonl'} -o {tmp_path / 'o.jsonl'} --model m --method entropy --backend openai"
    )
    assert code == 2 and "use --backend hf or --backend vllm" in stderr


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_vllm_missing_names_the_extra(tmp_path, run_elicit):
    write_jsonl(tmp_path / "data.jsonl", chat_rows(1))
    code, _, stderr = run_elicit(
        f"elicit {tmp_path / 'data.jsonl'} -o {tmp_path / 'o.jsonl'} --model m --backend vllm"
    )
    assert code == 2 and "pip install 'axolotl-ual[vllm]'" in stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_vllm_output_conversions():
    from axolotl_ual.elicit.backends.vllm_backend import completion_positions, prompt_entropy

    def lp(value, text):
        return SimpleNamespace(logprob=value, decoded_token=text)

    completion = SimpleNamespace(
        token_ids=[11, 7],
        logprobs=[
            {11: lp(-0.1, "**"), 12: lp(-2.5, "3")},
            {7: lp(math.log(0.7), "7"), 8: lp(math.log(0.3), " 8")},
        ],
    )
    positions = completion_positions(completion)
    assert [p.token for p in positions] == ["**", "7"]
    assert positions[1].alternatives == [("7", math.log(0.7)), (" 8", math.log(0.3))]

    top = {1: lp(math.log(0.5), "a"), 2: lp(math.log(0.25), "b")}
    prompt_logprobs = [None, top, top, top]
    mean, count = prompt_entropy(prompt_logprobs, [False, True, False, True], vocab_size=102)
    # known: 0.5 and 0.25; the other 0.25 spread over 100 tokens
    expected = -(0.5 * math.log(0.5) + 0.25 * math.log(0.25)) - 0.25 * math.log(0.25 / 100)
    assert count == 2 and mean == pytest.approx(expected)
    assert entropy_from_top_logprobs([math.log(0.5), math.log(0.5)], 10) == pytest.approx(
        math.log(2)
    )
