#!/bin/bash
# The whole Dialogue-v1 test split (219): the GPU-trained PPO LoRA (snapshot chosen on validation) vs its SmolLM2 start; run after run_smollm2.sh select_gpu
set -euo pipefail
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1
R=baselines/smollm2; P=runs/proxy
[ -f $R/ppo_gpu_dialogue_test_full.json ] || rlhf-gym bench --agent ppo:$R/ppo_gpu_dialogue --envs rlhf_gym/Dialogue-v1 --batch-size 16 --out $R/ppo_gpu_dialogue_test_full.json
[ -f $R/zeroshot_dialogue_full.json ] || rlhf-gym bench --agent smollm2 --envs rlhf_gym/Dialogue-v1 --batch-size 16 --out $R/zeroshot_dialogue_full.json
for n in ppo_gpu_dialogue_test_full zeroshot_dialogue_full; do
  python -c "import json; d=json.load(open('$R/$n.json')); [print(json.dumps({'id': g['id'], 'prediction': g['prediction']})) for g in d['envs']['rlhf_gym/Dialogue-v1']['generations']]" > $P/$n.preds.jsonl
done
rlhf-gym score --env rlhf_gym/Dialogue-v1 --predictions $P/ppo_gpu_dialogue_test_full.preds.jsonl --vs-predictions $P/zeroshot_dialogue_full.preds.jsonl --out $R/ppo_gpu_vs_smollm2_dialogue_full.json
