"""Run the rlhf-gym CLI in a fresh process with JSONL tasks registered first, the way the
leaderboard tests register their tiny tasks (chrF reward, ROUGE-L judge)::

    python tests/leaderboard/run_with_tasks.py TASKS.json leaderboard serve --db lb.db ...

TASKS.json is a list of {"name", "path", "kind"}.
"""

import json
import sys

from rlhf_gym.rewards.base import MetricReward
from rlhf_gym.tasks import register_jsonl_task

for task in json.loads(open(sys.argv[1], encoding="utf-8").read()):
    register_jsonl_task(task["name"], task["path"], kind=task["kind"], reward=lambda: MetricReward("chrf"),
                        judge=lambda: MetricReward("rougeL"))

from rlhf_gym.cli import main  # noqa: E402

sys.exit(main(sys.argv[2:]))
