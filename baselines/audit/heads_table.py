"""Print the "Measured" table of the shipped v0 heads (envs/REWARD_MODELS.md) with 95% Wilson
intervals, from committed files only:

- held-out accuracy: the head's own JSON beside it (``eval_accuracy`` over ``pairs.eval`` pairs,
  written by ``rlhf-gym train-rm``; the count is accuracy x pairs, an integer);
- informativeness (the own reference above another example's reference, fixed derangement):
  the ``other_reference`` subset of the v0 audits in baselines/audit/v0/ (``rlhf-gym eval-rm
  --env rlhf_gym/{Task}-v0 [--judge]``, whole test split).

    python baselines/audit/heads_table.py
"""

from __future__ import annotations

import json
from pathlib import Path

from rlhf_gym.metrics import wilson_interval
from rlhf_gym.rewards.embedding import ASSET_DIR

AUDITS = Path(__file__).parent / "v0"
TASKS = ("translation", "summarization", "dialogue")


def main() -> None:
    print("| task | role | head | fit/dev pairs | held-out pairs | held-out acc. [95% CI] "
          "| informativeness [95% CI] (n) | size |")
    print("|---|---|---|---|---|---|---|---|")
    for task in TASKS:
        for role in ("reward", "judge"):
            head = json.loads((ASSET_DIR / f"{task}-{role}.json").read_text(encoding="utf-8"))
            n = head["pairs"]["eval"]
            correct = head["eval_accuracy"] * n
            if abs(correct - round(correct)) > 1e-6:
                raise ValueError(f"{task}-{role}: eval_accuracy x pairs is not a count ({correct})")
            lo, hi = wilson_interval(round(correct), n)
            audit_path = AUDITS / f"{task}_{role}.json"
            informativeness = "not run"
            if audit_path.exists():
                block = json.loads(audit_path.read_text(encoding="utf-8"))["subsets"]["other_reference"]
                informativeness = (f"{block['accuracy']:.4f} [{block['ci_low']:.3f}, {block['ci_high']:.3f}] "
                                   f"({block['n']})")
            split = head["data"]["eval_split"]
            print(f"| {task} | {role} | {head['arch']} | {head['pairs']['fit']}/{head['pairs']['dev']} | {n} ({split}) "
                  f"| {head['eval_accuracy']:.4f} [{lo:.3f}, {hi:.3f}] | {informativeness} | {head['head_bytes']:,} B |")


if __name__ == "__main__":
    main()
