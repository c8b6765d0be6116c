#!/usr/bin/env bash
# Reward-model audit (rlhf-gym eval-rm) of the shipped training reward and judge of every latest
# env, on the first $LIMIT test examples (the bias subset: up to $LIMIT per category from the
# whole test split). Each file is skipped when it exists (rerun to resume); then the markdown
# tables of envs/REWARD_MODELS.md are printed from the JSON files.
#   bash baselines/audit/run_audit.sh            # RLHF_GYM="python -m rlhf_gym.cli" to use a checkout
set -euo pipefail
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
RLHF_GYM=${RLHF_GYM:-rlhf-gym}
PYTHON=${PYTHON:-python}
OUT=baselines/audit
LIMIT=${LIMIT:-100}
ENVS=${ENVS:-"rlhf_gym/Dialogue-v2 rlhf_gym/Summarization-v1 rlhf_gym/Translation-v1"}
for env in $ENVS; do
  t=$(sed -E 's|.*/||; s|-v[0-9]+$||' <<< "$env" | tr '[:upper:]' '[:lower:]')
  [ -f $OUT/${t}_reward.json ] || $RLHF_GYM eval-rm --env $env --limit $LIMIT --out $OUT/${t}_reward.json
  [ -f $OUT/${t}_judge.json ] || $RLHF_GYM eval-rm --env $env --judge --limit $LIMIT --out $OUT/${t}_judge.json
done
$PYTHON baselines/audit/audit_table.py $OUT/*_reward.json $OUT/*_judge.json
