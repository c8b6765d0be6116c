"""Choose a PPO/RLOO run's policy on VALIDATION prompts (never test) by the gold judge.

A thin user of ``rlhf_gym.overopt`` (one place measures checkpoints): for the starting policy
(iteration 0) and every snapshot in RUN/snapshots/iter_*, greedy outputs (what ``bench``
evaluates) on the first --limit validation prompts are scored with the run's training reward (the
proxy) and the env's judge (gold); KL is the run's logged training KL of each snapshot's weights.
The measurements go to RUN/overopt_greedy.json (resumable); the snapshot with the highest gold
mean wins. For the over-optimisation curve with KL measured on validation samples, use
``rlhf-gym overopt RUN``.

    python baselines/select_snapshot.py --run runs/ppo_smollm2_dialogue --limit 32 --out sel.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    from rlhf_gym.evaluation import write_json_atomic
    from rlhf_gym.overopt import overopt

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--env", default=None, help="checked against the run's env (optional)")
    ap.add_argument("--start", default=None, help="the run's starting policy spec (default: from its config)")
    ap.add_argument("--limit", type=int, default=32)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    run = Path(args.run)
    env_id = json.loads((run / "ppo_config.json").read_text())["env_id"]
    if args.env and args.env != env_id:
        raise SystemExit(f"--env {args.env} but {run} was trained on {env_id}")
    report = overopt(run, limit=args.limit, split="validation", decoding="greedy", kl="train",
                     out=run / "overopt_greedy.json", plot=False, start=args.start)
    rows = [{"iteration": r["iteration"], "policy": r["policy"], "kl": r["train_kl"],
             "proxy_mean": r["greedy"]["proxy_mean"], "gold_mean": r["greedy"]["gold_mean"],
             "median_words": r["greedy"]["median_words"], "most_repeated_share": r["greedy"]["most_repeated_share"]}
            for r in report["rows"]]
    for row in rows:
        print(json.dumps(row))
    # iteration 0 is the reference point, not a candidate: the question is which trained policy
    best = max(rows[1:], key=lambda r: r["gold_mean"])
    write_json_atomic(args.out, {"run": str(run), "env_id": env_id, "split": "validation", "n": args.limit,
                                 "criterion": "gold_mean (the env's judge) of greedy outputs on validation",
                                 "kl": "the run's logged training KL of each snapshot's weights", "rows": rows,
                                 "chosen": best["policy"], "chosen_iteration": best["iteration"],
                                 "start_gold_mean": rows[0]["gold_mean"]})
    print(f"chosen: iteration {best['iteration']} ({best['policy']})")


if __name__ == "__main__":
    main()
