#!/usr/bin/env bash
# One round of the human-feedback loop, end to end from the CLI, with SmolLM2 at a small scale
# (Dialogue-v1, validation prompts, 2 CPU cores). The annotator is simulated by the gold judge
# through the real /compare page (baselines/label_with_judge.py): synthetic-gold labels standing in
# for a person. Every step skips work already done.
set -euo pipefail
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
ENV=rlhf_gym/Dialogue-v1
D=${LOOP_DIR:-runs/loop_smollm2}
N=${N_PROMPTS:-48}
DB=$D/feedback.db
mkdir -p "$D"
# the current policy (greedy) and a second system to compare it with (the same policy sampling at T=1)
[ -f $D/smollm2.json ] || rlhf-gym bench --agent smollm2 --envs $ENV --split validation --limit $N --batch-size 16 --out $D/smollm2.json
[ -f $D/smollm2_t1.json ] || rlhf-gym bench --agent smollm2,temperature=1.0,seed=1 --envs $ENV --split validation \
  --limit $N --batch-size 16 --out $D/smollm2_t1.json
rlhf-gym feedback queue --results $D/smollm2.json $D/smollm2_t1.json --db $DB
if [ ! -f $D/labelled.ok ]; then  # (an if, not `||`: set -e must stop the script when labelling fails)
  python baselines/label_with_judge.py --db $DB --split validation --annotator gold-judge-r1
  touch $D/labelled.ok
fi
rlhf-gym loop status --db $DB
rlhf-gym loop round --env $ENV --db $DB --candidate $D/smollm2.json --policy smollm2 --out $D/round1 \
  --preset cpu-smollm2 --iterations ${ITERS:-3} --batch-size 8 --mini-batch-size 4 --min-pairs 16
cp $D/round1/round.json baselines/smollm2/loop_round1.json
