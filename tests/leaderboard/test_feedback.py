"""Human pairwise feedback: queue, the labelling page (form posts as a browser sends them),
export to preference JSONL, win rate with a Wilson interval and agreement."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi", reason="needs the server extra: pip install 'rlhf-gym[server]'")
from fastapi.testclient import TestClient  # noqa: E402

from rlhf_gym.cli import main  # noqa: E402
from rlhf_gym.leaderboard.app import COOKIE, create_app  # noqa: E402
from rlhf_gym.leaderboard.feedback import (  # noqa: E402
    cohen_kappa,
    feedback_stats,
    left_system,
    queue_pairs,
)
from rlhf_gym.leaderboard.service import Verifier  # noqa: E402

ENV = "rlhf_gym/Dialogue-v0"


def results_file(path, agent: str, responses: dict[str, str]):
    gens = [{"id": k, "prompt": f"User: question {k}?\nAssistant:", "prediction": v, "references": ["ref"]}
            for k, v in responses.items()]
    path.write_text(json.dumps({"schema_version": 1, "agent": {"name": agent, "spec": agent},
                                "envs": {ENV: {"env_id": ENV, "split": "test", "metrics": {}, "generations": gens}}}))
    return path


@pytest.fixture
def queued(tmp_path):
    a = results_file(tmp_path / "a.json", "ppo", {f"q{i}": f"PPO answer {i}" for i in range(6)} | {"same": "hi"})
    b = results_file(tmp_path / "b.json", "lead", {f"q{i}": f"lead answer {i}" for i in range(6)} | {"same": "hi",
                                                                                                   "only_b": "x"})
    db_path = tmp_path / "fb.db"
    assert main(["feedback", "queue", "--results", str(a), str(b), "--db", str(db_path)]) == 0
    # An unused verifier: the feedback pages never score anything.
    app = create_app(str(db_path), verifier=Verifier(scorer=lambda *a, **k: {}, env_ids=lambda: [], schema_version=1))
    return app, a, b, db_path


def test_queue_is_idempotent_and_skips_identical(queued, capsys):
    app, a, b, db_path = queued
    info = queue_pairs(app.state.db, a, b)
    assert info == {"system_a": "ppo", "system_b": "lead", "added": 0, "already_queued": 6,
                    "identical_skipped": 1, "unmatched": 1}
    with app.state.db.tx() as tx:
        assert tx.one("SELECT COUNT(*) AS n FROM feedback_pairs")["n"] == 6


def login(client: TestClient, token: str):
    r = client.post("/compare/login", data={"token": token}, follow_redirects=False)
    assert r.status_code == 303 and COOKIE in r.cookies


def test_labelling_flow_export_and_stats(queued, tmp_path, capsys):
    app, _, _, db_path = queued
    ann1, ann2 = app.state.db.add_user("ann1"), app.state.db.add_user("ann2")
    users = {u: app.state.db.user_for_token(t) for u, t in (("ann1", ann1), ("ann2", ann2))}
    with TestClient(app) as c:
        assert "Annotator token" in c.get("/compare").text
        assert c.post("/compare/login", data={"token": "nope"}).status_code == 401
        assert c.post("/compare/label", data={"pair_id": "1", "choice": "left"}).status_code == 401
        login(c, ann1)
        page = c.get("/compare").text
        assert "0 / 6 labelled" in page and "Response A" in page and "Response B" in page
        # ann1 prefers PPO everywhere except one tie; the choice is positional, so pick the
        # side where PPO's answer is shown.
        for _ in range(6):
            page = c.get("/compare").text
            pair_id = int(page.split('name="pair_id" value="')[1].split('"')[0])
            left = left_system(pair_id, users["ann1"]["id"])
            ppo_left = page.index("PPO answer") < page.index("lead answer")
            assert ppo_left == (left == "a")  # the page shows what the server's order says
            choice = "tie" if pair_id == 1 else ("left" if ppo_left else "right")
            r = c.post("/compare/label", data={"pair_id": str(pair_id), "choice": choice, "comment": "ok"},
                       follow_redirects=False)
            assert r.status_code == 303
        assert "Nothing left to label" in c.get("/compare").text and "6 / 6 labelled" in c.get("/compare").text
        # Re-labelling keeps the first label.
        r = c.post("/compare/label", data={"pair_id": "2", "choice": "right"})
        assert "first label was kept" in r.text
        assert c.post("/compare/label", data={"pair_id": "2", "choice": "maybe"}).status_code == 422

        c.cookies.clear()
        login(c, ann2)
        for pair_id in (1, 2, 3):  # ann2 labels three pairs: agrees on 2 and 3, "both bad" on 1
            left = left_system(pair_id, users["ann2"]["id"])
            choice = "both_bad" if pair_id == 1 else ("left" if left == "a" else "right")
            c.post("/compare/label", data={"pair_id": str(pair_id), "choice": choice})

    out = tmp_path / "prefs.jsonl"
    assert main(["feedback", "export", "--out", str(out), "--db", str(db_path)]) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 5 + 2  # ties and both-bad skipped
    assert all(set(x) == {"prompt", "chosen", "rejected", "env_id", "example_id", "annotator"} for x in lines)
    assert all(x["chosen"].startswith("PPO answer") and x["rejected"].startswith("lead answer") for x in lines)
    assert {x["annotator"] for x in lines} == {"ann1", "ann2"}
    # The core's preference reader (used by train-rm --prefs) accepts the export as is.
    from rlhf_gym.rewards.preferences import read_preference_file

    pairs = read_preference_file(out)
    assert len(pairs) == 7 and pairs[0]["chosen"].startswith("PPO answer")

    [s] = feedback_stats(app.state.db)
    # Per pair: pair 1 = mean(tie 0.5, both_bad 0.5) = 0.5; pairs 2-6 = 1 -> 5.5 / 6.
    assert s["win_rate_a"] == pytest.approx(5.5 / 6)
    assert s["ci_low"] <= s["win_rate_a"] <= s["ci_high"] and s["ci_low"] < 1.0
    assert s["n_double"] == 3 and s["raw_agreement"] == pytest.approx(2 / 3)
    assert s["env_id"] == ENV and s["annotators"] == ["ann1", "ann2"]
    assert main(["feedback", "stats", "--db", str(db_path)]) == 0
    assert f"{ENV} ppo vs lead: human win rate of A 91.7%" in capsys.readouterr().out

    # The same numbers over HTTP and on the leaderboard page.
    with TestClient(app) as c:
        [api] = c.get("/api/feedback/stats").json()["stats"]
        assert api == s  # JSON round-trips Python floats exactly
        html = c.get("/").text
    section = html.split('id="human-feedback"')[1]
    assert "Human pairwise feedback" in html and "<td>ppo</td><td>lead</td>" in section
    from rlhf_gym.leaderboard.render import rate_pct

    assert rate_pct(s["win_rate_a"], s["ci_low"], s["ci_high"]) in section and "91.7 [" in section
    assert "66.7" in section and f"{s['cohen_kappa']:.3f}" in section  # agreement % and kappa
    actions = [a["action"] for a in app.state.db.audit_rows()]
    assert actions.count("feedback.label") == 9 and "feedback.queue" in actions


def test_feedback_stats_split_by_env(tmp_path):
    """Two envs with the same system names give two rows, not one pooled win rate."""
    env2 = "rlhf_gym/Summarization-v0"
    files = {}
    for agent, word in (("ppo", "long"), ("lead", "short")):
        doc = {"schema_version": 1, "agent": {"name": agent}, "envs": {}}
        for env in (ENV, env2):
            doc["envs"][env] = {"env_id": env, "metrics": {}, "generations": [
                {"id": f"e{i}", "prompt": f"p{i}", "prediction": f"{word} {env} {i}"} for i in range(3)]}
        files[agent] = tmp_path / f"{agent}.json"
        files[agent].write_text(json.dumps(doc))
    from rlhf_gym.leaderboard.db import Database

    db = Database(tmp_path / "x.db")
    queue_pairs(db, files["ppo"], files["lead"])
    db.add_user("u")
    user = {"id": 1, "name": "u"}
    with db.tx() as tx:
        pairs = tx.all("SELECT id, env_id FROM feedback_pairs ORDER BY id")
    from rlhf_gym.leaderboard.feedback import add_label

    for p in pairs:  # A (ppo) wins every Dialogue pair, loses every Summarization pair
        want = "a" if p["env_id"] == ENV else "b"
        choice = "left" if left_system(p["id"], user["id"]) == want else "right"
        assert add_label(db, p["id"], user, choice)
    stats = {s["env_id"]: s for s in feedback_stats(db)}
    assert stats[ENV]["win_rate_a"] == 1.0 and stats[env2]["win_rate_a"] == 0.0
    # Rates of 1 and 0 keep a non-degenerate interval: Wilson's, as for every proportion.
    from rlhf_gym.metrics import wilson_interval

    assert (stats[ENV]["ci_low"], stats[ENV]["ci_high"]) == pytest.approx(wilson_interval(3, 3))
    assert stats[ENV]["ci_low"] < 0.6 and stats[env2]["ci_low"] == 0.0 and stats[env2]["ci_high"] > 0.4
    assert stats[ENV]["n_labels"] == 3 and stats[ENV]["raw_agreement"] is None


def test_kappa_known_values():
    assert cohen_kappa([("a", "a"), ("b", "b")]) == 1.0
    # po = 0.5, pe = 0.5 -> kappa 0
    assert cohen_kappa([("a", "a"), ("a", "b"), ("b", "a"), ("b", "b")]) == pytest.approx(0.0)
    assert cohen_kappa([]) is None


def test_queue_reads_prompts_from_the_env_when_results_have_none(tmp_path, tiny_env, capsys):
    """`bench` results written without prompts (or trimmed by hand): the pairs get the env's own
    prompts; an id the split does not have is an error naming it, and nothing is queued."""
    def write(path, agent, answers):
        gens = [{"id": k, "prediction": v} for k, v in answers.items()]  # no "prompt" keys
        path.write_text(json.dumps({"schema_version": 1, "agent": {"name": agent},
                                    "envs": {tiny_env: {"env_id": tiny_env, "split": "test", "metrics": {},
                                                        "generations": gens}}}))
        return path

    a = write(tmp_path / "a.json", "sys-a", {"t0": "alpha", "t3": "gamma"})
    b = write(tmp_path / "b.json", "sys-b", {"t0": "beta", "t3": "delta"})
    db_path = tmp_path / "noprompt.db"
    assert main(["feedback", "queue", "--results", str(a), str(b), "--db", str(db_path)]) == 0
    assert "2 pairs queued" in capsys.readouterr().out
    db = create_app(str(db_path), workers=0,
                    verifier=Verifier(scorer=lambda *a, **k: {}, env_ids=lambda: [], schema_version=1)).state.db
    with db.tx() as tx:
        prompts = {r["example_id"]: r["prompt"] for r in tx.all("SELECT example_id, prompt FROM feedback_pairs")}
    assert prompts == {"t0": "Translate into English: 初めに神は天と地とを創造された。",  # conftest.TINY
                       "t3": "Translate into English: 神はその光を昼と名づけ、"}

    c = write(tmp_path / "c.json", "sys-c", {"t0": "x", "nope": "y"})
    d = write(tmp_path / "d.json", "sys-d", {"t0": "z", "nope": "w"})
    assert main(["feedback", "queue", "--results", str(c), str(d), "--db", str(db_path)]) == 2
    assert "example 'nope' has no prompt in the results and is not in the test split" in capsys.readouterr().err
    with db.tx() as tx:
        assert tx.one("SELECT COUNT(*) AS n FROM feedback_pairs")["n"] == 2
