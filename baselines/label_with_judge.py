"""A synthetic-gold annotator for the feedback loop: labels every pair the /compare page serves.

It logs in on the real labelling app (same routes, storage and checks as a human annotator),
reads each pair the page shows, and chooses by the env's gold judge (MPNet similarity to the
human reference, minus its degeneracy penalty): the synthetic-gold protocol of Gao et al.
(2022), standing in for a person so the loop can run end to end without one. The reference is
looked up from the pair's example in the task data; the page itself never shows it.

    python baselines/label_with_judge.py --db runs/loop_smollm2/feedback.db --split validation
"""

from __future__ import annotations

import argparse
import html
import re


def parse_pair(page: str) -> dict | None:
    if 'id="done"' in page:
        return None

    def section(pattern: str) -> str:
        return html.unescape(re.search(pattern, page, re.S).group(1))

    return {"id": int(re.search(r'name="pair_id" value="(\d+)"', page).group(1)),
            "prompt": section(r'<section class="prompt">.*?<pre class="text">(.*?)</pre>'),
            "left": section(r'id="resp-a"><h2>Response A</h2><pre class="text">(.*?)</pre>'),
            "right": section(r'id="resp-b"><h2>Response B</h2><pre class="text">(.*?)</pre>')}


def main() -> None:
    from fastapi.testclient import TestClient

    from rlhf_gym.leaderboard.app import create_app
    from rlhf_gym.leaderboard.db import Database
    from rlhf_gym.tasks import get_task

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", required=True)
    ap.add_argument("--split", default="test", help="split the queued results came from (to find references)")
    ap.add_argument("--annotator", default="gold-judge")
    ap.add_argument("--margin", type=float, default=0.0, help="gold-score gap under which the label is a tie")
    args = ap.parse_args()

    db = Database(args.db)
    try:
        token = db.add_user(args.annotator)
    except ValueError as err:  # an earlier run created this annotator: its token was shown once only
        raise SystemExit(f"{err}: pass another --annotator name (the pairs it already labelled stay labelled)")
    counts = {"left": 0, "right": 0, "tie": 0}
    with TestClient(create_app(args.db)) as client:
        r = client.post("/compare/login", data={"token": token}, follow_redirects=False)
        if r.status_code != 303:  # a good token is answered with a redirect to /compare
            raise SystemExit(f"login on /compare refused: HTTP {r.status_code} {r.text[:200]}")
        judges, refs = {}, {}
        while (pair := parse_pair(client.get("/compare").text)) is not None:
            with db.tx() as tx:
                row = tx.one("SELECT env_id, example_id FROM feedback_pairs WHERE id = ?", (pair["id"],))
            env_id = row["env_id"]
            if env_id not in judges:
                task = get_task(env_id)
                judges[env_id] = task.judge_model()
                refs[env_id] = {ex.id: ex for ex in task.examples(args.split)}
            ex = refs[env_id][row["example_id"]]
            scores = judges[env_id]([ex.prompt] * 2, [pair["left"], pair["right"]], [ex.references] * 2)
            gap = float(scores[0]) - float(scores[1])
            choice = "tie" if abs(gap) <= args.margin else ("left" if gap > 0 else "right")
            counts[choice] += 1
            r = client.post("/compare/label", data={"pair_id": str(pair["id"]), "choice": choice},
                            follow_redirects=False)
            if r.status_code != 303:
                raise SystemExit(f"label for pair {pair['id']} rejected: HTTP {r.status_code} {r.text[:200]}")
    print(f"{args.annotator}: labelled {sum(counts.values())} pairs ({counts})")


if __name__ == "__main__":
    main()
