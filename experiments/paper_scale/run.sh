#!/usr/bin/env bash
# The UAL paper's mixed scenario at 7B scale: build the mixture, score it with a served judge,
# train SFT / fixed LS / UAL with LoRA, evaluate GSM8K with lm-evaluation-harness, collect.
# Documented, not run in CI: needs a GPU (see README.md) and the Hugging Face hub.
#
#   export JUDGE_BASE_URL=http://judge-host:8000/v1 JUDGE_MODEL=Qwen/Qwen2.5-72B-Instruct
#   bash experiments/paper_scale/run.sh
#
# Steps that are already done (their output exists) are skipped, so a re-run resumes.
set -euo pipefail
cd "$(dirname "$0")/../.."                       # the repository root: configs use its paths
: "${JUDGE_BASE_URL:?set JUDGE_BASE_URL to the judge server's OpenAI-compatible /v1 URL}"
: "${JUDGE_MODEL:?set JUDGE_MODEL to the judge model's name on that server}"
BASE_MODEL="${BASE_MODEL:-mistralai/Mistral-7B-v0.1}"   # must match base_model in configs/
N_CHAT="${N_CHAT:-20000}"
N_MATH="${N_MATH:-20000}"
WORK=experiments/paper_scale/work
mkdir -p "$WORK"

# 1. the mixture (alpaca rows with a `source` column)
[ -s "$WORK/mixture.jsonl" ] || python experiments/paper_scale/build_mixture.py \
    --chat "$N_CHAT" --math "$N_MATH" --seed 0 -o "$WORK/mixture.jsonl"

# 2. each sample's uncertainty from the judge (resumable: re-running sends only what is missing)
if [ ! -s "$WORK/scored.jsonl" ]; then
    axolotl-ual elicit "$WORK/mixture.jsonl" -o "$WORK/scored.jsonl" --backend openai \
        --base-url "$JUDGE_BASE_URL" --model "$JUDGE_MODEL" --method verbalized --samples 3 \
        --concurrency 64
fi
axolotl-ual inspect "$WORK/scored.jsonl" --config experiments/paper_scale/configs/ual.yml \
    --png "$WORK/uncertainty.png"

# 3. the three arms (same data, same seed; they differ only in their ual_* keys)
for arm in sft fixed_ls ual; do
    [ -s "$WORK/outputs/$arm/adapter_model.safetensors" ] || \
        axolotl train "experiments/paper_scale/configs/$arm.yml"
done

# 4. GSM8K, zero-shot, in the training prompt format (lm_eval_tasks/gsm8k_ual_alpaca.yaml)
for arm in sft fixed_ls ual; do
    ls "$WORK/lm_eval/$arm"/*/results_*.json >/dev/null 2>&1 || \
        lm_eval --model hf \
            --model_args "pretrained=$BASE_MODEL,peft=$WORK/outputs/$arm,dtype=bfloat16,add_bos_token=True" \
            --include_path experiments/paper_scale/lm_eval_tasks --tasks gsm8k_ual_alpaca \
            --batch_size auto --output_path "$WORK/lm_eval/$arm"
done

# 5. the table (your numbers next to the paper's)
python experiments/paper_scale/collect.py "$WORK/lm_eval" | tee "$WORK/gsm8k.md"
