"""How far the gold judge can be trusted on MODEL outputs, not only on corruptions.

On the SmolLM2 samples written by ``rlhf-gym sample`` (k samples per prompt; here validation
prompts, never used to train the proxy), every pair of distinct samples of one prompt is judged by
the gold judge and by independent reference-based metrics computed with their own libraries
(sentence chrF from sacrebleu, ROUGE-L from rouge-score). Reported: the share of pairs where the
gold judge prefers the same sample as each metric (95% Wilson CI), the Spearman correlation of the
gold score with each metric over all samples, and how often the human reference beats every
sample under the gold judge.

    python baselines/validate_gold.py --env rlhf_gym/Dialogue-v1 --samples runs/proxy/dialogue_val.jsonl
"""

from __future__ import annotations

import argparse
import itertools
import json

import numpy as np


def spearman(a, b) -> float:
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])


def main() -> None:
    from pathlib import Path

    from rlhf_gym.data import read_records
    from rlhf_gym.metrics import rate_with_ci
    from rlhf_gym.rewards.base import MetricReward
    from rlhf_gym.rewards.spec import load_reward
    from rlhf_gym.tasks import get_task

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--env", required=True)
    ap.add_argument("--samples", required=True)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    task = get_task(args.env)
    records = [r for _, r in read_records(Path(args.samples))]
    gold = load_reward("gold", task)
    metrics = {"chrf": MetricReward("chrf"), "rougeL": MetricReward("rougeL")}
    prompts, responses, refs, owner = [], [], [], []
    for i, rec in enumerate(records):
        for resp in rec["responses"]:
            prompts.append(rec["prompt"]); responses.append(resp); refs.append(rec["references"]); owner.append(i)
    g = gold(prompts, responses, refs)
    m = {name: metric(prompts, responses, refs) for name, metric in metrics.items()}
    g_ref = gold([r["prompt"] for r in records], [r["references"][0] for r in records],
                 [r["references"] for r in records])
    agree = {name: [] for name in metrics}
    owner = np.asarray(owner)
    for i in range(len(records)):
        idx = np.flatnonzero(owner == i)
        for a, b in itertools.combinations(idx, 2):
            if responses[a] == responses[b] or g[a] == g[b]:
                continue
            for name in metrics:
                if m[name][a] != m[name][b]:
                    agree[name].append((g[a] > g[b]) == (m[name][a] > m[name][b]))
    ref_beats_all = [g_ref[i] > g[owner == i].max() for i in range(len(records))]
    out = {"env_id": task.env_id, "samples": args.samples, "n_prompts": len(records), "n_samples": len(responses),
           "pair_agreement": {k: rate_with_ci(v) for k, v in agree.items()},
           "spearman": {k: spearman(g, v) for k, v in m.items()},
           "reference_beats_every_sample": rate_with_ci(ref_beats_all)}
    print(json.dumps(out, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
