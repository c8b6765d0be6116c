#!/usr/bin/env bash
# RLHF for memory on one GPU: the study of baselines/run_memory_rl.sh (RLOO, LoRA, SmolLM2, the memory:4
# view, DialogueMemory-v1 training episodes; snapshot chosen on VALIDATION episodes, then base and chosen
# on the same TEST episodes), with a GPU's batch: 12 episodes per iteration, 4 trained turns each (its
# probes first), k=8 replies per trained turn = 384 samples, 4 optimiser steps of 96 (2 accumulated
# mini-batches of 48). k=8 rather than 4: the base names the right value in about 7% of probe replies,
# so 4 samples of a probe are all wrong (no RLOO signal) about 75% of the time, 8 samples about 56%. Training stops
# at a wall-clock budget (RL_SECONDS); at most MAX_SNAPSHOTS snapshots are validated; the test is the
# whole test split (134 episodes). The committed run (one lent H100, baselines/memory/v1/rl/gpu/):
#   bash baselines/memory_rl_gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
export RUN=${RUN:-runs/memrl_gpu_v1}
export OUT=${RESULTS:-baselines/memory/v1/rl/gpu}
export ITERATIONS=${ITERATIONS:-200} RL_SECONDS=${RL_SECONDS:-240} SNAPSHOT_EVERY=${SNAPSHOT_EVERY:-3}
export MAX_SNAPSHOTS=${MAX_SNAPSHOTS:-4} VAL_LIMIT=${VAL_LIMIT:-40} LIMIT_RL=${LIMIT_RL:-134}
export TRAIN_ARGS="--device $DEVICE --threads ${THREADS:-8} --rloo-k ${K:-8} --batch-size ${BATCH:-384}
  --mini-batch-size ${MINI_BATCH:-48} --grad-accum-steps ${ACCUM:-2} --turns-per-episode 4 --lr ${LR:-2e-4}
  --save-every $SNAPSHOT_EVERY ${EXTRA_TRAIN_ARGS:-}"
export BENCH_ARGS="--device $DEVICE --batch-size ${BENCH_BATCH:-134}"
exec bash baselines/run_memory_rl.sh
