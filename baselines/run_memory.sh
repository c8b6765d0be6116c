#!/usr/bin/env bash
# Reproduce the DialogueMemory-v0 baselines committed under baselines/memory/ (test split, first
# $LIMIT episodes), then the accuracy-by-distance table and PNG. Each agent's file is skipped when it
# exists (delete it to rerun), so a killed run resumes with the next agent.
#   bash baselines/run_memory.sh            # LIMIT=40 by default; AGENTS="lead smollm2-memory" for a subset
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
LIMIT=${LIMIT:-40}
OUT=${OUT:-baselines/memory}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$OUT"
AGENTS=${AGENTS:-reference lead smollm2-window smollm2-memory smollm2-full smollm2}
for agent in $AGENTS; do
  file="$OUT/${agent}.json"
  if [ -f "$file" ]; then echo "skip $agent ($file exists)"; continue; fi
  start=$(date +%s)
  "$PY" -m rlhf_gym.cli bench --agent "$agent" --envs rlhf_gym/DialogueMemory-v0 --split test \
      --limit "$LIMIT" --out "$file.partial" && mv "$file.partial" "$file"
  echo "$agent: $(( $(date +%s) - start )) s"
done
"$PY" baselines/memory_table.py "$OUT"/*.json --png "$OUT/accuracy_by_distance.png" | tee "$OUT/table.md"

# RLHF for memory (opt in: RL=1): RLOO with LoRA from SmolLM2 on the TRAINING episodes, multi-turn
# (each episode played with the policy's own replies, each trained turn a bandit sample), the
# smollm2-memory prompt (--history-view memory:4). Resumable (--resume). The checkpoint is chosen on
# VALIDATION episodes (the base policy and each snapshot, memory accuracy, ties to the earlier one),
# then the chosen one and the base are benched on the same TEST episodes as above (LIMIT_RL, default 16).
if [ "${RL:-0}" = 1 ]; then
  RUN=${RUN:-runs/memrl_rloo}
  LIMIT_RL=${LIMIT_RL:-16}
  VAL_LIMIT=${VAL_LIMIT:-8}
  timeout "${RL_SECONDS:-1500}" "$PY" -m rlhf_gym.cli train rloo --env rlhf_gym/DialogueMemory-v0 --policy smollm2 \
      --preset cpu-smollm2 --out "$RUN" --history-view memory:4 --turns-per-episode 3 --rloo-k 4 --batch-size 12 \
      --mini-batch-size 6 --ppo-epochs 1 --max-new-tokens 32 --temperature 0.7 --lr 5e-4 --iterations 6 \
      --save-every 1 --snapshot-every 2 --threads 1 --resume || echo "training stopped (time budget); snapshots kept"
  mkdir -p "$OUT/rl"
  bench() {  # bench SPEC SPLIT LIMIT FILE (skipped when FILE exists)
    [ -f "$4" ] || "$PY" -m rlhf_gym.cli bench --agent "$1" --envs rlhf_gym/DialogueMemory-v0 --split "$2" \
        --limit "$3" --out "$4.partial" && { [ -f "$4" ] || mv "$4.partial" "$4"; }
  }
  bench smollm2-memory validation "$VAL_LIMIT" "$OUT/rl/val_base.json"
  for snap in ${SNAPSHOTS:-$(ls -d "$RUN"/snapshots/iter_* 2>/dev/null)}; do
    bench "smollm2-memory,policy=$snap" validation "$VAL_LIMIT" "$OUT/rl/val_$(basename "$snap").json"
  done
  best=$("$PY" baselines/memory_rl_compare.py --select "$OUT"/rl/val_*.json)
  echo "chosen on validation: $best"
  [ -f "$OUT/rl/test_base.json" ] || cp "$OUT/n16/smollm2-memory.json" "$OUT/rl/test_base.json" 2>/dev/null \
      || bench smollm2-memory test "$LIMIT_RL" "$OUT/rl/test_base.json"
  bench "$best" test "$LIMIT_RL" "$OUT/rl/test_chosen.json"
  "$PY" baselines/memory_rl_compare.py "$OUT/rl/test_base.json" "$OUT/rl/test_chosen.json" --md "$OUT/rl/table.md"
fi
