#!/usr/bin/env bash
# Rebuilds every committed baseline under baselines/ (2 CPU cores; run the tasks one after another).
# SFT of the dialogue and summarisation policies was stopped by a 6-minute time limit at steps
# 159 and 93 of the 240-step schedule; --stop-after reproduces exactly that stopping point.
set -euo pipefail
export HF_HUB_OFFLINE=1
SFT="--n-layer 2 --batch-size 16 --max-steps 240 --lr 2e-3 --warmup-steps 20 --save-every 40"
rlhf-gym train sft --env rlhf_gym/Translation-v0   --out baselines/sft/translation   $SFT
rlhf-gym train sft --env rlhf_gym/Dialogue-v0      --out baselines/sft/dialogue      $SFT --stop-after 159
rlhf-gym train sft --env rlhf_gym/Summarization-v0 --out baselines/sft/summarization $SFT --stop-after 93
for task in translation dialogue summarization; do
  Task="$(tr '[:lower:]' '[:upper:]' <<< "${task:0:1}")${task:1}"
  rlhf-gym train ppo --env "rlhf_gym/${Task}-v0" --policy "baselines/sft/${task}" --preset cpu-tiny --out "runs/ppo_${task}_v2"
done
