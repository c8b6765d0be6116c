"""The scoring queue: claims, leases and fencing on a real database, kill -9 of a real server
process, failures and requeues, the per-example score cache, and a small concurrent burst of
full-suite submissions on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="needs the server extra: pip install 'rlhf-gym[server]'")
httpx = pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from rlhf_gym.cli import main  # noqa: E402
from rlhf_gym.leaderboard import jobs  # noqa: E402
from rlhf_gym.leaderboard.app import create_app  # noqa: E402
from rlhf_gym.leaderboard.db import Database, DbScoreCache  # noqa: E402
from rlhf_gym.leaderboard.process import free_port  # noqa: E402
from rlhf_gym.leaderboard.service import Leaderboard  # noqa: E402
from rlhf_gym.leaderboard.validate import content_hash  # noqa: E402

HERE = Path(__file__).resolve().parent


def count(db, sql: str, params=()) -> int:
    with db.tx() as tx:
        return int(tx.one(sql, params)["n"])


def rows_of(db, sid: str) -> int:
    return count(db, "SELECT COUNT(*) AS n FROM submissions WHERE id = ?", (sid,))


def audit_count(db, action: str, sid: str) -> int:
    return count(db, "SELECT COUNT(*) AS n FROM audit_log WHERE action = ? AND object = ?", (action, sid))


@pytest.fixture
def board(db_url, verifier) -> Leaderboard:
    return Leaderboard(Database(db_url), verifier)


def test_a_dead_workers_lease_expires_and_another_worker_finishes_the_job(board, make_submission):
    sid = board.accept(make_submission(name="orphan"), user="ann").id
    # What a worker killed mid-scoring leaves behind: a claimed job with a lease nobody renews.
    dead = jobs.claim(board.db, "dead-worker", lease_s=0.5)
    assert dead is not None and dead.submission_id == sid and dead.attempts == 1
    worker = jobs.ScoringWorker(board, lease_s=5)
    assert worker.run_once() is False  # still leased
    assert board.status(sid).status == "pending"
    time.sleep(0.6)
    assert worker.run_once() is True
    out = board.status(sid)
    assert out.status == "verified" and out.verified is True
    assert rows_of(board.db, sid) == 1 and audit_count(board.db, "submission.claim", sid) == 2
    with board.db.tx() as tx:
        job = jobs.get(tx, sid)
    assert job["status"] == "done" and job["attempts"] == 2 and job["lease_owner"] is None


def test_a_worker_that_lost_its_lease_writes_nothing(board, make_submission):
    sid = board.accept(make_submission(name="contested"), user="ann").id
    slow = jobs.claim(board.db, "slow-worker", lease_s=0.3)
    time.sleep(0.4)  # the slow worker stalls past its lease ...
    fast = jobs.claim(board.db, "fast-worker", lease_s=30)
    assert fast is not None and fast.attempts == 2
    assert board.run_job(fast).status == "verified"
    with pytest.raises(jobs.LeaseLost):  # ... and its late result is refused, not stored twice
        board.run_job(slow)
    assert rows_of(board.db, sid) == 1 and audit_count(board.db, "submission.create", sid) == 1
    assert jobs.renew(board.db, slow, 30) is False


def test_a_job_that_keeps_killing_its_worker_is_abandoned_then_requeued_by_resubmission(board, make_submission):
    doc = make_submission(name="poison")
    sid = board.accept(doc, user="ann").id
    for i in range(jobs.MAX_ATTEMPTS):
        assert jobs.claim(board.db, f"dead-{i}", lease_s=0.01).attempts == i + 1
        time.sleep(0.02)
    assert jobs.claim(board.db, "next", lease_s=30) is None  # marked failed instead of a 4th attempt
    out = board.status(sid)
    assert out.status == "failed" and out.error["kind"] == "abandoned" and "3 attempts" in out.error["message"]
    again = board.accept(doc, user="ann")
    assert again.requeued and again.status == "pending" and not again.created
    assert jobs.ScoringWorker(board).run_until_idle() == 1
    assert board.status(sid).status == "verified" and rows_of(board.db, sid) == 1


def test_identical_generations_are_never_rescored(tmp_path, evaluation):
    from rlhf_gym.leaderboard.service import Verifier
    from rlhf_gym.leaderboard.validate import build_submission
    from rlhf_gym.rewards.base import MetricReward
    from rlhf_gym.tasks import register_jsonl_task

    class Counting(MetricReward):
        """chrF / ROUGE-L that count the texts they are asked to score."""

        def __init__(self, metric):
            super().__init__(metric)
            self.texts = 0

        def __call__(self, prompts, responses, references=None):
            self.texts += len(responses)
            return super().__call__(prompts, responses, references)

    rows = [(f"c{i}", f"Say something about {i}.", f"Number {i} is fine.") for i in range(5)]
    path = tmp_path / "counted.jsonl"
    path.write_text("".join(json.dumps({"id": i, "prompt": p, "references": [r], "split": "test"}) + "\n"
                            for i, p, r in rows))
    reward, judge = Counting("chrf"), Counting("rougeL")
    task = register_jsonl_task("LbCounted", path, kind="summarization", reward=lambda: reward, judge=lambda: judge)
    preds = {i: f"About {i}: it is a number." for i, _, _ in rows}

    def doc(name, predictions):
        block = evaluation.score_predictions(task.env_id, [{"id": k, "prediction": v} for k, v in predictions.items()])
        return build_submission({"schema_version": evaluation.RESULTS_SCHEMA_VERSION, "agent": {"name": name},
                                 "envs": {task.env_id: block}}, name=name)

    docs = [doc("first", preds), doc("same generations, other name", preds),
            doc("one generation changed", {**preds, "c0": "Zero is a number too."}), doc("after restart", preds)]
    db = Database(tmp_path / "cache.db")
    board = Leaderboard(db, Verifier())
    reward.texts = judge.texts = 0
    board.submit(docs[0], user=None)
    # 5 responses scored by the reward; 5 responses + 5 references + 5 outputs of the scorer's lead
    # baseline (rlhf_gym.winrate) by the judge.
    assert (reward.texts, judge.texts, len(DbScoreCache(db))) == (5, 15, 20)
    assert board.submit(docs[1], user=None).status == "verified"
    assert (reward.texts, judge.texts, len(DbScoreCache(db))) == (5, 15, 20)  # nothing rescored
    assert board.submit(docs[2], user=None).status == "verified"
    assert (reward.texts, judge.texts, len(DbScoreCache(db))) == (6, 16, 22)  # only the changed one
    # The cache survives a restart: new objects on the same database file rescore nothing.
    assert Leaderboard(Database(tmp_path / "cache.db"), Verifier()).submit(docs[3], user=None).status == "verified"
    assert (reward.texts, judge.texts) == (6, 16)


def test_server_side_failure_is_reported_and_an_identical_resubmission_requeues(tmp_path, evaluation, wait_status):
    from rlhf_gym.leaderboard.service import Verifier
    from rlhf_gym.leaderboard.validate import build_submission
    from rlhf_gym.rewards.base import MetricReward
    from rlhf_gym.tasks import register_jsonl_task

    config = tmp_path / "reward.json"  # the reward's configuration file, missing at first

    def reward_from_config():
        return MetricReward(json.loads(config.read_text())["metric"])

    rows = [(f"u{i}", f"Tell me about {i}.", f"{i} is a number.") for i in range(3)]
    data = tmp_path / "unavailable.jsonl"
    data.write_text("".join(json.dumps({"id": i, "prompt": p, "references": [r], "split": "test"}) + "\n"
                            for i, p, r in rows))
    register_jsonl_task("LbUnavailable", data, kind="summarization", reward=lambda: MetricReward("chrf"),
                        judge=lambda: MetricReward("rougeL"))
    preds = [{"id": i, "prediction": f"{i} is a fine number."} for i, _, _ in rows]
    block = evaluation.score_predictions("rlhf_gym/LbUnavailable-v0", preds)
    doc = build_submission({"schema_version": evaluation.RESULTS_SCHEMA_VERSION, "agent": {"name": "x"},
                            "envs": {block["env_id"]: block}}, name="x")
    # The server's copy of the task reads its reward from the (missing) configuration file.
    task = register_jsonl_task("LbUnavailable", data, kind="summarization", reward=reward_from_config,
                               judge=lambda: MetricReward("rougeL"))
    app = create_app(str(tmp_path / "lb.db"), verifier=Verifier(), poll_s=0.1)
    token = app.state.db.add_user("fay")
    with TestClient(app) as c:
        c.headers["Authorization"] = f"Bearer {token}"
        sid = c.post("/api/submissions", json=doc).json()["id"]
        failed = wait_status(c.get, sid)
        assert failed["status"] == "failed" and failed["verified"] is None
        assert failed["error"]["kind"] == "unavailable" and "reward.json" in failed["error"]["message"]
        assert "scoring failed (unavailable)" in c.get(f"/submissions/{sid}").text
        assert c.get("/api/leaderboard").json()["queue"]["failed"] == 1
        config.write_text(json.dumps({"metric": "chrf"}))  # the operator fixes the server
        again = c.post("/api/submissions", json=doc)
        assert again.status_code == 202 and again.json()["requeued"] is True
        assert wait_status(c.get, sid)["status"] == "verified"
    assert task.env_id == block["env_id"]


def test_pending_jobs_survive_kill_9_of_the_server(tmp_path, tiny_suite, make_suite_submission, verifier,
                                                  live_server, wait_status):
    """A real server process accepts three submissions (no scoring worker in it, so they stay
    pending) and is killed with SIGKILL; a restarted server on the same database scores them."""
    db_path = tmp_path / "restart.db"
    token = Database(db_path).add_user("gil")
    docs = [make_suite_submission(f"restart {i}", variant=i) for i in range(3)]
    port = free_port()
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, str(HERE / "run_with_tasks.py"), tiny_suite["tasks_json"], "leaderboard", "serve",
         "--db", str(db_path), "--port", str(port), "--workers", "0"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(url + "/api/leaderboard", timeout=2)
                break
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()
                time.sleep(0.2)
        answers = [httpx.post(url + "/api/submissions", json=d, headers={"Authorization": f"Bearer {token}"},
                              timeout=60) for d in docs]
        assert [a.status_code for a in answers] == [202, 202, 202]
        assert [a.json()["status"] for a in answers] == ["pending"] * 3
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
        log.close()
    assert server.returncode == -signal.SIGKILL
    db = Database(db_path)
    assert count(db, "SELECT COUNT(*) AS n FROM scoring_jobs WHERE status = 'pending'") == 3
    assert count(db, "SELECT COUNT(*) AS n FROM submissions") == 0
    app = create_app(str(db_path), verifier=verifier, poll_s=0.1)  # the restart, with a scoring worker
    with live_server(app) as srv:
        for d in docs:
            assert wait_status(lambda p: httpx.get(srv.url + p), content_hash(d))["status"] == "verified"
    assert count(db, "SELECT COUNT(*) AS n FROM submissions") == 3
    assert count(db, "SELECT COUNT(DISTINCT id) AS n FROM submissions") == 3
    assert count(db, "SELECT COUNT(*) AS n FROM submission_envs") == 9


def test_worker_command_scores_the_queue_of_a_server_without_workers(tmp_path, make_submission, verifier, capsys):
    db_path = tmp_path / "split.db"
    app = create_app(str(db_path), verifier=verifier, workers=0)
    token = app.state.db.add_user("hal")
    with TestClient(app) as c:
        r = c.post("/api/submissions", json=make_submission(name="queued"),
                   headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 202
        time.sleep(0.3)
        assert c.get(r.json()["status_url"]).json()["status"] == "pending"  # nobody scores here
    assert main(["leaderboard", "worker", "--db", str(db_path), "--once"]) == 0
    assert "scored 1 queued submissions" in capsys.readouterr().out
    assert Leaderboard(Database(db_path), verifier).status(r.json()["id"]).status == "verified"


def test_concurrent_burst_of_full_suite_submissions(db_url, verifier, tiny_suite, make_suite_submission,
                                                   live_server, wait_idle):
    """The fast variant of benchmarks/leaderboard_burst.py: distinct submissions covering all
    three task kinds, posted at once (with duplicates and one tampered), all accepted, each
    scored and stored exactly once, the tampered one flagged."""
    docs = [make_suite_submission(f"burst {i}", variant=i) for i in range(6)]
    tampered = make_suite_submission("burst tampered", variant=99)
    env = tiny_suite["envs"]["summarization"]
    tampered["results"]["envs"][env]["metrics"]["rougeL"] += 3.0
    posts = docs + [tampered] + docs[:3]
    app = create_app(db_url, verifier=verifier, rate_limit="0", poll_s=0.1)
    token = app.state.db.add_user("ivy")
    with live_server(app) as srv, httpx.Client(base_url=srv.url, timeout=60,
                                               headers={"Authorization": f"Bearer {token}"}) as client:
        with ThreadPoolExecutor(max_workers=len(posts)) as pool:
            answers = list(pool.map(lambda d: client.post("/api/submissions", json=d), posts))
        assert sorted(a.status_code for a in answers) == [200] * 3 + [202] * 7
        assert all(a.json()["status"] in ("pending", "verified") for a in answers)
        board = wait_idle(client.get)
        by_id = {o["id"]: o for o in board["overall"]}
        assert set(by_id) == {content_hash(d) for d in docs + [tampered]}
        assert all(by_id[content_hash(d)]["verified"] for d in docs)
        assert by_id[content_hash(tampered)]["verified"] is False
        status = client.get(f"/api/submissions/{content_hash(tampered)}?generations=false").json()
        assert status["status"] == "mismatch"
        assert status["envs"][env]["comparison"]["rougeL"]["status"] == "mismatch"
        assert all(len(o["envs"]) == 3 for o in board["overall"])
    db = app.state.db
    assert count(db, "SELECT COUNT(*) AS n FROM submissions") == 7
    assert count(db, "SELECT COUNT(*) AS n FROM submission_envs") == 21
    assert count(db, "SELECT COUNT(*) AS n FROM audit_log WHERE action = 'submission.create'") == 7
    assert count(db, "SELECT COUNT(*) AS n FROM scoring_jobs WHERE status = 'done'") == 7
