#!/usr/bin/env bash
# RLHF for memory, probe-focused, on 2 CPU cores: RLOO with LoRA from SmolLM2 (memory:4 view) on the TRAINING
# episodes of DialogueMemory-v1, where every iteration trains 2 turns of each of 3 episodes (its probes: every
# episode has 2-3) with k=8 replies each (48 samples, 2 optimiser steps of 24). The turns before them carry
# the conversation's real human replies (--history-replies human), so only the trained turns are generated,
# and the memory bonus weighs 10 (--memory-weight 10; the env's default is 3.0, which the GPU run showed the
# policy trades for reward-model score: baselines/memory/v1/rl/gpu/). Snapshots every 8 iterations are
# validated on the first 16 validation episodes; the chosen one and the base are benched on the first 40 test
# episodes (the base's bench is reused from baselines/memory/v1/rl/retrain/). Resumable. The committed run
# (baselines/memory/v1/rl/probe/) was trained in slices (2,700 s at 2 threads to iteration 23, then to 24 at
# 1 thread beside a validation bench, then on at 2 threads):
#   bash baselines/memory_rl_probe.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export RUN=${RUN:-runs/memrl3_v1}
export OUT=${RESULTS:-baselines/memory/v1/rl/probe}
export ITERATIONS=${ITERATIONS:-40} RL_SECONDS=${RL_SECONDS:-6000} SNAPSHOT_EVERY=8 VAL_LIMIT=16 LIMIT_RL=40
export TEST_BASE=${TEST_BASE:-baselines/memory/v1/rl/retrain/test_base.json} OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
mkdir -p "$OUT"
[ -f "$OUT/val_base.json" ] || cp baselines/memory/v1/rl/retrain/val_base.json "$OUT/val_base.json"
export TRAIN_ARGS="--threads ${THREADS:-2} --turns-per-episode 2 --rloo-k 8 --batch-size 48 --mini-batch-size 24
  --lr 3e-4 --history-replies human --memory-weight 10 --save-every 2"
exec bash baselines/run_memory_rl.sh
