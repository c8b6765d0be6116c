#!/usr/bin/env bash
# Reward-model audit (rlhf-gym eval-rm) of the shipped training reward and judge of every latest
# env, on the first $LIMIT test examples (the bias subset: up to $LIMIT per category from the
# whole test split). Each file is skipped when it exists (rerun to resume); then the markdown
# tables of envs/REWARD_MODELS.md are printed from the JSON files. V0=1 adds the v0 heads (whole test splits).
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
# V0=1: also the v0 MiniLM heads on the whole test splits (envs/REWARD_MODELS.md, "Measured"), in $OUT/v0/
if [ "${V0:-0}" = 1 ]; then
  mkdir -p $OUT/v0
  for t in translation summarization dialogue; do
    env=rlhf_gym/$(tr '[:lower:]' '[:upper:]' <<< "${t:0:1}")${t:1}-v0
    [ -f $OUT/v0/${t}_reward.json ] || $RLHF_GYM eval-rm --env $env --out $OUT/v0/${t}_reward.json
    [ -f $OUT/v0/${t}_judge.json ] || $RLHF_GYM eval-rm --env $env --judge --out $OUT/v0/${t}_judge.json
  done
  $PYTHON baselines/audit/heads_table.py
  $PYTHON baselines/audit/audit_table.py $OUT/v0/*.json
fi
