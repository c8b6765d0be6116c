"""Degenerate text must lose to the human reference under the training reward and every judge.

For each v1 task, on the test split (first --limit examples): the mean training reward (the env's
proxy head) and the gold judge score of the human reference and of degenerate outputs (one word
repeated to the env's length limit, a phrase looped, word salad of training words, the
reference followed by looped filler), and the share of examples where the reference scores higher.

    python baselines/degenerate_check.py --limit 100 --out baselines/smollm2/degenerate_check.json
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


def main() -> None:
    import numpy as np

    from rlhf_gym.metrics import rate_with_ci
    from rlhf_gym.rewards.preferences import degenerate_text, split_vocabulary
    from rlhf_gym.tasks import get_task

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--envs", nargs="+", default=["rlhf_gym/Dialogue-v1", "rlhf_gym/Summarization-v1",
                                                  "rlhf_gym/Translation-v1"])
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    out = {}
    for env_id in args.envs:
        task = get_task(env_id)
        ex = task.examples("test")[: args.limit]
        vocab = split_vocabulary(e.references[0] for e in task.examples("train")[:2000])
        prompts = [e.prompt for e in ex]
        refs = [list(e.references) for e in ex]
        candidates = {"reference": [r[0] for r in refs]}
        for kind in ("repeat_word", "repeat_phrase", "word_salad", "filler"):
            candidates[kind] = [degenerate_text(kind, e.references[0], e.prompt[-200:], vocab,
                                                random.Random(f"{env_id}{i}{kind}"), task.max_response_chars)
                                for i, e in enumerate(ex)]
        block = {}
        for role, model in (("reward", task.reward_model()), ("judge", task.judge_model())):
            scores = {k: np.asarray(model(prompts, v, refs)) for k, v in candidates.items()}
            block[role] = {"name": model.name,
                           "mean": {k: float(v.mean()) for k, v in scores.items()},
                           "reference_wins": {k: rate_with_ci(scores["reference"] > v)
                                              for k, v in scores.items() if k != "reference"}}
        out[env_id] = {"n": len(ex), **block, "example": {k: v[0][:160] for k, v in candidates.items()}}
        print(env_id, json.dumps({r: {k: round(x["mean"], 3) for k, x in block[r]["reference_wins"].items()}
                                  for r in ("reward", "judge")}))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
