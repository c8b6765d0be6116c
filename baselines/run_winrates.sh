#!/usr/bin/env bash
# Raw vs length-controlled (LC) win rates (rlhf_gym/winrate.py) on the test split (first N_TEST=100 examples):
#   - lead, retrieval, reference and pad (the reference padded with filler sentences up to the env's
#     action-length limit) on Dialogue-v1 and Summarization-v1 (MPNet gold judge); ENVS adds the -v0
#     twins (MiniLM judge heads: a second judge with its own length behaviour);
#   - the committed SmolLM2 outputs in baselines/smollm2/ (zero-shot, best-of-4, PPO), scored from their
#     predictions with `rlhf-gym score`;
#   - the newest envs (Summarization-v2, Dialogue-v3: reference-free e5 judge against the reference):
#     lead, reference, pad and padsrc (the reference followed by 0-3 of the source's sentences, a seeded
#     number per prompt), and padsrc:lead on Summarization-v2, one file per agent ({agent}_newest.json).
# Every file is skipped when it exists (rerun to resume). One thread per job. Then prints the table.
set -euo pipefail
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
RG=${RLHF_GYM:-rlhf-gym}
PY=${PYTHON:-python}
R=baselines/winrates
W=runs/winrates
N=${N_TEST:-100}
ENVS=${ENVS:-"Dialogue-v1 Summarization-v1"}  # add "Dialogue-v0 Summarization-v0" for the MiniLM judges
mkdir -p "$R" "$W"

for E in $ENVS; do
  for A in lead retrieval pad; do
    [ -f "$R/${A}_$E.json" ] || $RG bench --agent $A --envs rlhf_gym/$E --limit "$N" --out "$R/${A}_$E.json"
  done
  # The reference goes through `score`: 2 of the first 100 dialogue test replies are longer than the env's
  # 300-character action limit, which `bench --agent reference` rejects; they are cut to the limit here.
  if [ ! -f "$R/reference_$E.json" ]; then
    $RG data --env rlhf_gym/$E --split test --limit "$N" | $PY -c "
import json, sys
from rlhf_gym.tasks import get_task
limit = get_task('rlhf_gym/$E').max_response_chars
cut = 0
for line in sys.stdin:
    ex = json.loads(line)
    cut += len(ex['references'][0]) > limit
    print(json.dumps({'id': ex['id'], 'prediction': ex['references'][0][:limit]}, ensure_ascii=False))
print(f'reference on $E: {cut} of $N cut to the {limit}-character action limit', file=sys.stderr)
" > "$W/reference_$E.preds.jsonl" 2>> "$R/cut_to_limit.log"
    $RG score --env rlhf_gym/$E --limit "$N" --predictions "$W/reference_$E.preds.jsonl" --out "$R/reference_$E.json"
  fi
done

# SmolLM2 outputs committed by baselines/run_smollm2.sh (v1 envs): predictions extracted from the bench files.
for spec in zeroshot:dialogue zeroshot:summarization bon4:dialogue bon4:summarization ppo_dialogue_test:dialogue; do
  name=${spec%%:*}; task=${spec##*:}
  src=baselines/smollm2/${name}.json; [ -f "$src" ] || src=baselines/smollm2/${name}_${task}.json
  E=$(tr '[:lower:]' '[:upper:]' <<< "${task:0:1}")${task:1}-v1
  out=$R/smollm2_${name%_dialogue_test}_$E.json
  [ -f "$out" ] && continue
  $PY -c "
import json
d = json.load(open('$src'))
for g in d['envs']['rlhf_gym/$E']['generations']:
    print(json.dumps({'id': g['id'], 'prediction': g['prediction']}, ensure_ascii=False))
" > "$W/$(basename "$out" .json).preds.jsonl"
  $RG score --env rlhf_gym/$E --limit "$N" --predictions "$W/$(basename "$out" .json).preds.jsonl" --out "$out"
done

# The newest envs (Translation-v2 in its own files: its only source text is the Japanese verse, so
# padsrc appends that, not an on-topic filler; baselines/README.md).
NEWEST=${NEWEST:-"rlhf_gym/Summarization-v2 rlhf_gym/Dialogue-v3"}
for A in lead reference pad padsrc; do
  [ -f "$R/${A}_newest.json" ] || $RG bench --agent $A --envs $NEWEST --limit "$N" --out "$R/${A}_newest.json"
done
for A in lead reference padsrc; do
  [ -f "$R/${A}_translation_newest.json" ] || \
    $RG bench --agent $A --envs rlhf_gym/Translation-v2 --limit "$N" --out "$R/${A}_translation_newest.json"
done
# lead-1 followed by more abstract sentences (on dialogue lead echoes the partner's turn, which is the
# whole source: padsrc:lead would add nothing there)
[ -f "$R/padsrc_lead_newest.json" ] || \
  $RG bench --agent padsrc:lead --envs rlhf_gym/Summarization-v2 --limit "$N" --out "$R/padsrc_lead_newest.json"

$PY baselines/winrates_table.py | tee "$R/table.md"
