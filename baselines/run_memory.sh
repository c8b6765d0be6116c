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

# RLHF for memory (opt in: RL=1): the v0 study (RLOO from SmolLM2, 6 iterations, snapshots every 2, chosen on 8
# validation episodes, benched on the 16 test episodes of n16/), through baselines/run_memory_rl.sh.
if [ "${RL:-0}" = 1 ]; then
  PY="$PY" ENV_ID=rlhf_gym/DialogueMemory-v0 RUN=${RUN:-runs/memrl_rloo} OUT="$OUT/rl" ITERATIONS=6 SNAPSHOT_EVERY=2 \
      RL_SECONDS=${RL_SECONDS:-1500} VAL_LIMIT=${VAL_LIMIT:-8} LIMIT_RL=${LIMIT_RL:-16} TEST_BASE="$OUT/n16/smollm2-memory.json" \
      bash baselines/run_memory_rl.sh
fi
