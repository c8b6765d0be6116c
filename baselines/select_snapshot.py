"""Choose a PPO/RLOO run's policy on VALIDATION prompts (never test) by the gold judge.

For the starting policy (iteration 0) and every snapshot in RUN/snapshots/iter_*, greedy outputs on
the first --limit validation prompts are scored with the env's reward (the proxy the run
optimised) and its judge (the gold judge); the KL to the start is the run's logged training KL at
that iteration. The snapshot with the highest gold mean wins; the table shows proxy and gold
against KL, so over-optimisation (proxy up, gold down) is visible.

    python baselines/select_snapshot.py --run runs/ppo_smollm2_dialogue --env rlhf_gym/Dialogue-v1 --out sel.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    from rlhf_gym.evaluation import run_bench, write_json_atomic

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--env", required=True)
    ap.add_argument("--start", default=None, help="the run's starting policy spec (default: from its config)")
    ap.add_argument("--limit", type=int, default=32)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    run = Path(args.run)
    config = json.loads((run / "ppo_config.json").read_text())
    start = args.start or config.get("policy") or "smollm2"
    kl_at = {m["iteration"]: m["kl"] for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}
    candidates = [(0, start, start if start == "smollm2" else f"ppo:{start}")]
    for snap in sorted((run / "snapshots").glob("iter_*")):
        candidates.append((int(snap.name.split("_")[1]), str(snap), f"ppo:{snap}"))
    rows = []
    for iteration, path, spec in candidates:
        res = run_bench(spec, [args.env], split="validation", limit=args.limit, batch_size=16, show_progress=False)
        m = res["envs"][args.env]["metrics"]
        rows.append({"iteration": iteration, "policy": path, "kl": kl_at.get(iteration, 0.0),
                     "proxy_mean": m["reward_mean"], "gold_mean": m["judge_mean"],
                     "median_words": m["length"]["median_words"],
                     "most_repeated_share": m["most_repeated_share"]["share"]})
        print(json.dumps(rows[-1]))
    if len(rows) < 2:
        raise SystemExit(f"{run} has no snapshots (train with --snapshot-every N)")
    # iteration 0 is the reference point, not a candidate: the question is which trained policy
    best = max(rows[1:], key=lambda r: r["gold_mean"])
    write_json_atomic(args.out, {"run": str(run), "env_id": args.env, "split": "validation", "n": args.limit,
                                 "criterion": "gold_mean (the env's judge) on validation", "rows": rows,
                                 "chosen": best["policy"], "chosen_iteration": best["iteration"],
                                 "start_gold_mean": rows[0]["gold_mean"]})
    print(f"chosen: iteration {best['iteration']} ({best['policy']})")


if __name__ == "__main__":
    main()
