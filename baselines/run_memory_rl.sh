#!/usr/bin/env bash
# RLHF for memory: RLOO with LoRA from SmolLM2 on the TRAINING episodes of a DialogueMemory env, multi-turn
# (each episode played with the policy's own replies, each trained turn a bandit sample), the smollm2-memory
# prompt (--history-view memory:4). Resumable (--resume; each bench file is skipped when it exists). The
# checkpoint is chosen on VALIDATION episodes (the base policy and each snapshot in $SNAPSHOTS, memory accuracy,
# ties to the earlier one), then the chosen one and the base are benched (greedy) on the same TEST episodes.
#   bash baselines/run_memory_rl.sh     # DialogueMemory-v1, runs/memrl2_v1 -> baselines/memory/v1/rl/retrain
# (RL=1 bash baselines/run_memory.sh runs the earlier v0 study through this script.)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
ENV_ID=${ENV_ID:-rlhf_gym/DialogueMemory-v1}
RUN=${RUN:-runs/memrl2_v1}
OUT=${OUT:-baselines/memory/v1/rl/retrain}
ITERATIONS=${ITERATIONS:-13}    # the committed study: 13 iterations (snapshots 4, 8, 12)
SNAPSHOT_EVERY=${SNAPSHOT_EVERY:-4}
RL_SECONDS=${RL_SECONDS:-6000}      # wall-clock budget of the training; it stops there, snapshots kept
VAL_LIMIT=${VAL_LIMIT:-16}
LIMIT_RL=${LIMIT_RL:-40}
TEST_BASE=${TEST_BASE:-}            # an existing bench file of the base on the same test episodes, reused if given
TRAIN_ARGS=${TRAIN_ARGS:-}          # more `train rloo` flags; later flags win (the GPU run: baselines/memory_rl_gpu.sh)
BENCH_ARGS=${BENCH_ARGS:-}          # more `bench` flags (e.g. --device cuda --batch-size 64)
STAGE=${STAGE:-all}                 # all | train | eval (eval: the benches, the selection and the table)
MAX_SNAPSHOTS=${MAX_SNAPSHOTS:-0}   # >1: validate at most this many snapshots, evenly spaced, the last included
mkdir -p "$OUT"
[ "$STAGE" = eval ] || timeout "$RL_SECONDS" "$PY" -m rlhf_gym.cli train rloo --env "$ENV_ID" --policy smollm2 \
    --preset cpu-smollm2 --out "$RUN" --history-view memory:4 --turns-per-episode 3 --rloo-k 4 --batch-size 12 \
    --mini-batch-size 6 --ppo-epochs 1 --max-new-tokens 32 --temperature 0.7 --lr 5e-4 --kl-coef 0.05 \
    --iterations "$ITERATIONS" --save-every 1 --snapshot-every "$SNAPSHOT_EVERY" --threads 1 --seed 0 --resume $TRAIN_ARGS \
    || echo "training stopped (time budget); snapshots kept"
[ "$STAGE" = train ] && exit 0
bench() {  # bench SPEC SPLIT LIMIT FILE (skipped when FILE exists)
  [ -f "$4" ] || "$PY" -m rlhf_gym.cli bench --agent "$1" --envs "$ENV_ID" --split "$2" \
      --limit "$3" --out "$4.partial" $BENCH_ARGS && { [ -f "$4" ] || mv "$4.partial" "$4"; }
}
bench smollm2-memory validation "$VAL_LIMIT" "$OUT/val_base.json"
if [ -z "${SNAPSHOTS:-}" ]; then
  SNAPSHOTS=$(ls -d "$RUN"/snapshots/iter_* 2>/dev/null || true)
  if [ "$MAX_SNAPSHOTS" -gt 1 ]; then
    SNAPSHOTS=$("$PY" -c "import sys; s, m = sys.argv[2:], int(sys.argv[1]); print(' '.join(
        s if len(s) <= m else [s[round(i * (len(s) - 1) / (m - 1))] for i in range(m)]))" "$MAX_SNAPSHOTS" $SNAPSHOTS)
  fi
fi
for snap in $SNAPSHOTS; do
  bench "smollm2-memory,policy=$snap" validation "$VAL_LIMIT" "$OUT/val_$(basename "$snap").json"
done
best=$("$PY" baselines/memory_rl_compare.py --select "$OUT/val_base.json" "$OUT"/val_iter_*.json)
echo "chosen on validation: $best"
if [ ! -f "$OUT/test_base.json" ] && [ -n "$TEST_BASE" ]; then cp "$TEST_BASE" "$OUT/test_base.json"; fi
bench smollm2-memory test "$LIMIT_RL" "$OUT/test_base.json"
bench "$best" test "$LIMIT_RL" "$OUT/test_chosen.json"
"$PY" baselines/memory_rl_compare.py "$OUT/test_base.json" "$OUT/test_chosen.json" --md "$OUT/table.md"
